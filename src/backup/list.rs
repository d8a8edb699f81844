//! Finding backups in a store: only a manifest makes a backup; an archive without one is an incomplete attempt.

use std::collections::BTreeMap;

use super::{BackupId, MANIFEST_NAME, Manifest};
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, ObjectStore, join_key};

/// Key of a backup's archive object.
pub fn archive_key(prefix: &str, id: &BackupId, compression: Compression) -> String {
    join_key(prefix, &format!("{id}/{}", compression.archive_name()))
}

/// Key of a backup's manifest.
pub fn manifest_key(prefix: &str, id: &BackupId) -> String {
    join_key(prefix, &format!("{id}/{MANIFEST_NAME}"))
}

/// One backup directory found in the store.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    /// Its id.
    pub id: BackupId,
    /// The manifest, when the backup completed; `None` for an incomplete attempt.
    pub manifest: Option<Manifest>,
    /// Every object under the backup's directory (archive, manifest).
    pub objects: Vec<ObjectInfo>,
}

impl BackupEntry {
    /// A backup exists only when its manifest does.
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
    }
}

/// Every backup directory under `prefix`, oldest first, complete or not. A manifest that cannot be parsed is
/// reported as a warning and the entry treated as incomplete (it will not be restored by `latest`).
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
        entries.push(BackupEntry { id, manifest, objects });
    }
    Ok(entries)
}

/// Finds the manifest of backup `id`, or of the newest complete backup for `latest`.
pub async fn resolve(store: &dyn ObjectStore, prefix: &str, id: &str) -> Result<Manifest> {
    let missing = || Error::NoSuchBackup { id: id.to_string(), store: store.describe() };
    if id == "latest" {
        let entries = list_backups(store, prefix).await?;
        return entries.into_iter().rev().find_map(|e| e.manifest).ok_or_else(missing);
    }
    let parsed = BackupId::parse(id).ok_or_else(missing)?;
    let bytes = match store.get_bytes(&manifest_key(prefix, &parsed)).await {
        Err(crate::store::StoreError::NotFound { .. }) => return Err(missing()),
        other => other?,
    };
    Manifest::parse(&bytes).map_err(|e| Error::Refused(format!("backup {id}: {e}")))
}
