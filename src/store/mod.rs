//! Where backups live: a small object-store trait with one implementation per backend.
//!
//! The pipeline only ever sees [`ObjectStore`]; a backend proves itself by passing the shared contract tests in
//! `tests/store_contract.rs`.

pub mod azure;
mod digest;
mod fs;

use std::collections::BTreeMap;
use std::pin::Pin;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use azure::AzureStore;
pub use digest::DigestingReader;
pub use fs::FilesystemStore;

/// A byte stream handed to or returned by a store.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// What a finished upload produced; the manifest records both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSummary {
    /// Bytes stored.
    pub bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// One object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key, including the prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written; prune uses it for the grace period of orphaned archives.
    pub last_modified: DateTime<Utc>,
}

/// Small key/value pairs stored with an object where the backend supports it (Azure blob metadata).
pub type ObjectMeta = BTreeMap<String, String>;

/// Why a store operation failed; says which stage (reading the input vs. writing the store) broke.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{key} not found in {store}")]
    NotFound {
        /// Store description.
        store: String,
        /// Missing key.
        key: String,
    },
    /// A conditional create found the object already there; nothing was overwritten.
    #[error("{key} already exists in {store}; refusing to overwrite it")]
    AlreadyExists {
        /// Store description.
        store: String,
        /// Existing key.
        key: String,
    },
    /// The stream being uploaded failed (reading MongoDB or compressing), so nothing was committed.
    #[error("upload of {key} abandoned because its input failed: {source}")]
    Input {
        /// Key that was being written.
        key: String,
        /// The producer's error.
        source: std::io::Error,
    },
    /// The store itself failed.
    #[error("{operation} {key} in {store} failed: {source}")]
    Io {
        /// What was being done ("write", "read", "list", "delete").
        operation: &'static str,
        /// Store description.
        store: String,
        /// Key involved.
        key: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A remote backend refused or failed; the message says what to check.
    #[error("{0}")]
    Backend(String),
    /// A key that would escape the store (`..`, absolute path, empty component).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// A lease this agent held on a lock object is gone (it expired and another agent took it, or it was broken):
    /// whatever the holder was doing must stop before it writes anything more.
    #[error("lost the lease on {key} in {store}: another agent may hold it now")]
    LeaseLost {
        /// Store description.
        store: String,
        /// Lock object.
        key: String,
    },
}

/// An exclusive hold on a lock object, taken with [`ObjectStore::try_lease`]: how the agents of a replica set agree
/// on who backs up or archives (Azure: a blob lease, which expires unless renewed; filesystem: an `flock`, which
/// the kernel drops when the process dies).
#[async_trait::async_trait]
pub trait Lease: Send + Sync {
    /// Extends the lease by its duration from now; [`StoreError::LeaseLost`] when another agent took it meanwhile.
    async fn renew(&self) -> Result<(), StoreError>;

    /// Gives the lease up at once, so another agent need not wait for it to expire.
    async fn release(&self) -> Result<(), StoreError>;
}

/// An object store. Writes are atomic: an object is either fully there or not there at all.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Where this store points, for messages ("directory /backups", "azure account/container").
    fn describe(&self) -> String;

    /// Streams `body` into `key`. The object becomes visible only if the body ended cleanly; if the body
    /// yields an error or the future is dropped, nothing is left under `key`.
    async fn put_stream(&self, key: &str, body: ByteStream, meta: &ObjectMeta) -> Result<PutSummary, StoreError>;

    /// Opens `key` for streaming reads.
    async fn get_stream(&self, key: &str) -> Result<ByteStream, StoreError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Deletes `key`; deleting a missing key is not an error (prune may race a manual cleanup).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Creates a small object only if `key` does not exist yet: how manifests are written, so a backup can never
    /// be overwritten.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError>;

    /// Leftovers of writes a crash interrupted under `prefix`, which [`ObjectStore::list`] hides (the filesystem
    /// store's `.name.partial-*` files); prune deletes those older than `incomplete_grace` with
    /// [`ObjectStore::delete`]. Backends whose interrupted writes leave nothing visible (Azure discards uncommitted
    /// blocks itself) have none.
    async fn list_partial(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// Takes the lease on lock object `key` for `duration` (15–60 s on Azure) if no one holds it; `None` when
    /// another holder has it. The lock object is created empty when missing.
    async fn try_lease(&self, key: &str, duration: std::time::Duration) -> Result<Option<Box<dyn Lease>>, StoreError>;

    /// Whether someone holds the lease on lock object `key` now (a missing lock object is free). Lower-ranked agents
    /// ask this before contending, so that their delay counts from when the lock became free.
    async fn lease_held(&self, key: &str) -> Result<bool, StoreError>;

    /// Writes a small object whole, replacing what was there (heartbeats, results).
    async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.put_stream(key, Box::pin(std::io::Cursor::new(data)), &ObjectMeta::new()).await.map(drop)
    }

    /// Reads a small object whole (manifests).
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let mut stream = self.get_stream(key).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.map_err(|source| StoreError::Io {
            operation: "read",
            store: self.describe(),
            key: key.to_string(),
            source,
        })?;
        Ok(out)
    }
}

/// Joins a prefix and a relative key with exactly one `/`.
pub fn join_key(prefix: &str, rest: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() { rest.to_string() } else { format!("{prefix}/{rest}") }
}

/// Rejects keys that could escape a store's root.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad { Err(StoreError::InvalidKey(key.to_string())) } else { Ok(()) }
}

/// Opens the store `[storage]` describes.
pub fn open(config: &crate::config::StorageConfig) -> Result<std::sync::Arc<dyn ObjectStore>, StoreError> {
    use crate::config::StorageKind;
    match config.kind {
        // A `url` selects Azure even when `kind` was left at its default.
        StorageKind::Filesystem if !config.is_azure() => Ok(std::sync::Arc::new(FilesystemStore::new(&config.path))),
        StorageKind::Filesystem | StorageKind::Azure => Ok(std::sync::Arc::new(AzureStore::open(config)?)),
    }
}
