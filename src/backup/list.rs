//! Finding backups in a store: only a manifest makes a backup; an archive without one is an incomplete attempt.

use std::collections::BTreeMap;

use super::{BackupId, MANIFEST_NAME, Manifest};
use crate::compress::Compression;
use crate::crypt::{self, Identities};
use crate::error::{Error, Result};
use crate::store::{ByteStream, ObjectInfo, ObjectStore, join_key};

/// Key of a backup's archive object.
pub fn archive_key(prefix: &str, id: &BackupId, compression: Compression) -> String {
    join_key(prefix, &format!("{id}/{}", compression.archive_name()))
}

/// The stored archive of backup `manifest`, decrypted with `identities` when the manifest says it is encrypted
/// (still compressed). A missing or wrong identity fails here, before anything is read from the store.
pub async fn open_archive(
    store: &dyn ObjectStore,
    prefix: &str,
    manifest: &Manifest,
    identities: Option<&Identities>,
) -> Result<ByteStream> {
    let what = format!("backup {}", manifest.id);
    crypt::unlock(identities, &what, manifest.encryption.as_ref())?;
    let stored = store.get_stream(&archive_key(prefix, &manifest.id, manifest.compression)).await?;
    Ok(crypt::open(stored, identities, &what, manifest.encryption.as_ref()).await?.1)
}

/// Key of a backup's manifest.
pub fn manifest_key(prefix: &str, id: &BackupId) -> String {
    join_key(prefix, &format!("{id}/{MANIFEST_NAME}"))
}

/// Key of the marker that says a backup failed the verification after it (`verify.after_backup`).
pub fn untrusted_key(prefix: &str, id: &BackupId) -> String {
    join_key(prefix, &format!("{id}/{UNTRUSTED_NAME}"))
}

/// File name of the untrusted marker: written after the manifest (which is never rewritten), it takes the backup
/// out of `latest`, retention's count and the last-success metric.
pub const UNTRUSTED_NAME: &str = "verify-failed.json";

/// One backup directory found in the store.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    /// Its id.
    pub id: BackupId,
    /// The manifest, when the backup completed; `None` for an incomplete attempt.
    pub manifest: Option<Manifest>,
    /// Why the backup is not trusted: the problems the verification after it found (`verify-failed.json`).
    pub untrusted: Option<String>,
    /// Every object under the backup's directory (archive, manifest).
    pub objects: Vec<ObjectInfo>,
}

impl BackupEntry {
    /// A backup exists only when its manifest does.
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
    }

    /// The manifest of a complete backup that did not fail verification: what `latest`, retention and the
    /// last-success metric count.
    pub fn trusted(&self) -> Option<&Manifest> {
        self.manifest.as_ref().filter(|_| self.untrusted.is_none())
    }

    /// When the backup started: as its manifest records, else as its id says.
    pub fn time(&self) -> chrono::DateTime<chrono::Utc> {
        self.manifest.as_ref().map_or_else(|| self.id.time(), |m| m.started_at)
    }
}

/// What the untrusted marker holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UntrustedMarker {
    /// When the verification failed.
    verified_at: chrono::DateTime<chrono::Utc>,
    /// Each failed check, one line each.
    problems: Vec<String>,
}

/// Marks backup `id` untrusted after its verification found `problems`; from then on `latest`, `list`, retention
/// and the last-success metric treat it as failed. Written once, like the manifest.
pub async fn mark_untrusted(store: &dyn ObjectStore, prefix: &str, id: &BackupId, problems: &[String]) -> Result<()> {
    let marker = UntrustedMarker { verified_at: chrono::Utc::now(), problems: problems.to_vec() };
    let json = serde_json::to_vec_pretty(&marker).expect("marker serializes");
    store.put_if_absent(&untrusted_key(prefix, id), json.into()).await?;
    Ok(())
}

/// Every backup directory under `prefix`, complete or not, oldest first by the start time manifests record (ids
/// alone would let one made by a fast clock outrank newer backups). A manifest that cannot be parsed is reported as
/// a warning and the entry treated as incomplete (it will not be restored by `latest`).
pub async fn list_backups(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<BackupEntry>> {
    let root = join_key(prefix, "");
    let mut groups: BTreeMap<BackupId, Vec<ObjectInfo>> = BTreeMap::new();
    for object in store.list(&root).await? {
        let rest = object.key.strip_prefix(&root).unwrap_or(&object.key);
        let Some(id) = rest.split('/').next().and_then(BackupId::parse) else { continue };
        groups.entry(id).or_default().push(object);
    }
    let mut entries = Vec::with_capacity(groups.len());
    for (id, objects) in groups {
        let manifest = if objects.iter().any(|o| o.key.ends_with(&format!("/{MANIFEST_NAME}"))) {
            let bytes = store.get_bytes(&manifest_key(prefix, &id)).await?;
            match Manifest::parse(&bytes) {
                Ok(m) => Some(m),
                Err(e) => {
                    log::warn!("backup {id}: unreadable manifest, treating it as incomplete: {e}");
                    None
                }
            }
        } else {
            None
        };
        let untrusted = if objects.iter().any(|o| o.key.ends_with(&format!("/{UNTRUSTED_NAME}"))) {
            let bytes = store.get_bytes(&untrusted_key(prefix, &id)).await?;
            Some(match serde_json::from_slice::<UntrustedMarker>(&bytes) {
                Ok(marker) => format!("failed verification: {}", marker.problems.join("; ")),
                Err(_) => format!("failed verification ({UNTRUSTED_NAME} unreadable)"),
            })
        } else {
            None
        };
        entries.push(BackupEntry { id, manifest, untrusted, objects });
    }
    entries.sort_by(|a, b| (a.time(), &a.id).cmp(&(b.time(), &b.id)));
    Ok(entries)
}

/// Finds the manifest of backup `id`, or of the newest trusted complete backup for `latest`. A backup named by id is
/// returned even when it failed verification (the operator chose it), with a warning.
pub async fn resolve(store: &dyn ObjectStore, prefix: &str, id: &str) -> Result<Manifest> {
    let missing = || Error::NoSuchBackup { id: id.to_string(), store: store.describe() };
    if id == "latest" {
        let entries = list_backups(store, prefix).await?;
        return entries.iter().rev().find_map(BackupEntry::trusted).cloned().ok_or_else(missing);
    }
    let parsed = BackupId::parse(id).ok_or_else(missing)?;
    let bytes = match store.get_bytes(&manifest_key(prefix, &parsed)).await {
        Err(crate::store::StoreError::NotFound { .. }) => return Err(missing()),
        other => other?,
    };
    let manifest = Manifest::parse(&bytes).map_err(|e| Error::Refused(format!("backup {id}: {e}")))?;
    if store.get_bytes(&untrusted_key(prefix, &parsed)).await.is_ok() {
        log::warn!("backup {id} failed the verification after it ({UNTRUSTED_NAME}); using it because it was named");
    }
    Ok(manifest)
}
