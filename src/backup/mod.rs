//! A backup: MongoDB → archive → compression → store, then the manifest that makes it exist.

mod list;
mod pipe;
mod produce;
mod progress;
mod report;

use std::collections::BTreeMap;

use chrono::Utc;

pub use list::{
    BackupEntry, UNTRUSTED_NAME, archive_key, list_backups, manifest_key, mark_untrusted, open_archive, resolve,
    untrusted_key,
};
pub use progress::{CollectionProgress, Progress};
pub use report::{Outcome, RunReport};
// What a backup writes last, and the id it is filed under.
pub use crate::manifest::{
    BackupId, MANIFEST_NAME, MANIFEST_VERSION, Manifest, NamespaceRecord, OplogInfo, OplogTimestamp,
};

use crate::archive::{ArchiveHeader, CollectionKind, CollectionMetadata, Namespace, PreludeEntry};
use crate::config::{Config, OplogMode};
use crate::error::{Error, Result};
use crate::mongo::{self, NamespaceFilter};
use crate::oplog;
use crate::store::ObjectStore;

/// Bytes buffered between the archive producer and the store.
const PIPE_CAPACITY: usize = 1 << 20;

/// Runs backup `id` with `config`, selecting namespaces with `filter`. On success the manifest is stored and
/// returned; on any failure (or if the future is dropped) no manifest exists, so no backup exists. The caller picks
/// the id (`BackupId::new`) so that it can tell others which backup is running before it ends.
pub async fn run(
    config: &Config,
    id: BackupId,
    filter: &NamespaceFilter,
    store: &dyn ObjectStore,
    progress: &Progress,
) -> Result<Manifest> {
    run_fenced(config, id, filter, store, progress, None).await
}

/// [`run`] for the runner of a replica set: the manifest is written only if `fence` (the lease on the backup
/// lock) is still held right before, so an agent that lost the lease to another never records a backup.
pub async fn run_fenced(
    config: &Config,
    id: BackupId,
    filter: &NamespaceFilter,
    store: &dyn ObjectStore,
    progress: &Progress,
    fence: Option<&crate::cluster::Holder>,
) -> Result<Manifest> {
    progress.set_phase("connecting");
    mongo::set_stall_timeout(config.backup.stall_timeout);
    let client = mongo::connect(&config.mongodb).await?;
    // A handle (the client is shared inside), so this function still holds the client to shut it down.
    let result = dump(config, id, filter, store, progress, client.clone(), fence).await;
    mongo::close(client).await;
    result
}

/// The backup proper, on a connected client that [`run`] shuts down afterwards whatever the outcome.
async fn dump(
    config: &Config,
    id: BackupId,
    filter: &NamespaceFilter,
    store: &dyn ObjectStore,
    progress: &Progress,
    client: mongodb::Client,
    fence: Option<&crate::cluster::Holder>,
) -> Result<Manifest> {
    let started_at = Utc::now();
    let server = mongo::server_info(&client).await?;
    id.check_clock(server.local_time.unwrap_or_else(Utc::now)).map_err(Error::Refused)?;
    // The window opens before the collections are listed: a collection created after this point is either listed
    // or created by the slice.
    let (oplog_start, note) = match (config.backup.oplog, &server.replica_set) {
        (OplogMode::Off, _) => (None, Some("disabled by backup.oplog = \"off\"".to_string())),
        (OplogMode::Auto, None) => (None, Some("standalone server: no oplog".to_string())),
        (OplogMode::Auto, Some(_)) => (Some(oplog::window::open(&client).await?), None),
    };
    progress.set_phase("listing collections");
    let collections = mongo::list_collections(&client, filter, config.backup.parallel_collections).await?;
    let auth = auth_namespaces(&client, filter).await?;

    let mut prelude: Vec<PreludeEntry> = collections
        .iter()
        .map(|c| PreludeEntry {
            namespace: c.namespace.clone(),
            metadata: c.metadata.to_extended_json(),
            kind: c.metadata.kind.as_str().to_string(),
        })
        .collect();
    prelude.extend(auth.iter().map(|(ns, _)| PreludeEntry {
        namespace: ns.clone(),
        metadata: plain_metadata(ns).to_extended_json(),
        kind: CollectionKind::Collection.as_str().to_string(),
    }));
    if oplog_start.is_some() {
        prelude.push(PreludeEntry { namespace: Namespace::oplog(), metadata: String::new(), kind: String::new() });
    }
    let parallel = config.backup.parallel_collections;
    let header = ArchiveHeader::new(parallel as i32, &server.version);
    let compression = config.backup.compression;
    let archive_key = archive_key(&config.storage.prefix, &id, compression);
    let meta = BTreeMap::from([
        ("backup_id".to_string(), id.to_string()),
        ("agent_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    // Public keys only: the VM can write the archive but not read it back.
    let recipients = Some(config.encryption.recipients()?).filter(|r| !r.is_empty());
    let encryption = recipients.as_ref().map(crate::crypt::Encryption::for_recipients);
    let sealed = encryption.as_ref().map(|e| format!(", encrypted for keys {}", e.recipients.join(", ")));
    log::info!(
        "backup {id}: {} collections to {} ({compression}{})",
        collections.len(),
        store.describe(),
        sealed.unwrap_or_default()
    );

    let (writer, reader, completion) = pipe::pipe(PIPE_CAPACITY);
    let job = produce::Job {
        client: &client,
        collections: &collections,
        auth,
        oplog_start,
        filter,
        started: std::time::Instant::now(),
        header,
        prelude,
        compression: config.backup.compression_settings(),
        recipients,
        parallel,
        batch_size: config.backup.batch_size,
        progress,
    };
    progress.set_phase("dumping");
    let (produced, stored) =
        tokio::join!(job.run(writer, completion), store.put_stream(&archive_key, Box::pin(reader), &meta));
    let produced = produced?;
    let stored = stored?;

    progress.set_phase("writing manifest");
    let kinds: BTreeMap<String, &str> =
        collections.iter().map(|c| (c.namespace.to_string(), c.metadata.kind.as_str())).collect();
    let dropped_during_backup = produced.dropped.iter().map(ToString::to_string).collect();
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        id: id.clone(),
        status: "complete".into(),
        started_at,
        finished_at: Utc::now(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        server_version: server.version,
        replica_set: server.replica_set,
        oplog: OplogInfo {
            included: oplog_start.is_some(),
            start: oplog_start.map(|s| s.ts.into()),
            start_inclusive: oplog_start.is_some_and(|s| s.inclusive),
            end: produced.oplog_end.map(Into::into),
            note,
        },
        compression,
        archive: compression.archive_name().into(),
        archive_bytes: stored.bytes,
        uncompressed_bytes: produced.uncompressed_bytes,
        archive_sha256: stored.sha256,
        encryption,
        namespaces: produced
            .stats
            .into_iter()
            .map(|s| {
                let name = s.namespace.to_string();
                let kind = match name.as_str() {
                    "oplog" => "oplog",
                    "admin.system.users" => "users",
                    "admin.system.roles" => "roles",
                    other => kinds.get(other).copied().unwrap_or("collection"),
                };
                NamespaceRecord {
                    namespace: name,
                    kind: kind.into(),
                    documents: s.documents,
                    bytes: s.bytes,
                    crc: format!("{:016x}", s.crc),
                }
            })
            .collect(),
        dropped_during_backup,
    };
    if let Some(holder) = fence {
        holder.admit().await?;
    }
    store.put_if_absent(&manifest_key(&config.storage.prefix, &id), manifest.to_json().into_bytes().into()).await?;
    progress.set_phase("done");
    Ok(manifest)
}

fn plain_metadata(ns: &Namespace) -> CollectionMetadata {
    CollectionMetadata {
        options: bson::Document::new(),
        indexes: Vec::new(),
        uuid: None,
        collection_name: ns.collection.clone(),
        kind: CollectionKind::Collection,
    }
}

/// Users and roles, as `admin.system.users` / `admin.system.roles`, when the filter selects them and any exist.
async fn auth_namespaces(
    client: &mongodb::Client,
    filter: &NamespaceFilter,
) -> Result<Vec<(Namespace, Vec<bson::Document>)>> {
    let mut out = Vec::new();
    let users_ns = Namespace::new("admin", "system.users");
    if filter.matches(&users_ns) {
        let users = mongo::users::users(client).await?;
        if !users.is_empty() {
            out.push((users_ns, users));
        }
    }
    let roles_ns = Namespace::new("admin", "system.roles");
    if filter.matches(&roles_ns) {
        let databases = client.list_database_names().await.map_err(Error::mongo("listing databases"))?;
        let roles = mongo::users::roles(client, &databases).await?;
        if !roles.is_empty() {
            out.push((roles_ns, roles));
        }
    }
    Ok(out)
}
