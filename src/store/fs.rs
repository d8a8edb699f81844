//! A directory as an object store: for local disks, mounted shares, tests and the demo.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    ByteStream, DigestingReader, Lease, ObjectInfo, ObjectMeta, ObjectStore, PutSummary, StoreError, validate_key,
};

/// Stores each object as a file under `root`. Writes go to a hidden temporary name, are fsynced, and are renamed
/// into place only on success, so a crash or a failed backup never leaves a file that looks complete.
pub struct FilesystemStore {
    root: PathBuf,
}

const PARTIAL_MARKER: &str = ".partial-";

impl FilesystemStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilesystemStore { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn io_error(&self, operation: &'static str, key: &str, source: std::io::Error) -> StoreError {
        if source.kind() == std::io::ErrorKind::NotFound && operation == "read" {
            return StoreError::NotFound { store: self.describe(), key: key.to_string() };
        }
        StoreError::Io { operation, store: self.describe(), key: key.to_string(), source }
    }

    /// Creates the parent directory and a temporary file beside `path`, removed again unless kept. Objects are
    /// mode 0600 whatever the umask: a backup holds the whole database, users and password hashes included.
    async fn temp_beside(&self, path: &Path, key: &str) -> Result<(TempFile, tokio::fs::File), StoreError> {
        let parent = path.parent().unwrap_or(&self.root);
        self.create_dirs(parent).await.map_err(|e| self.io_error("write", key, e))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let temp = TempFile(parent.join(format!(".{name}{PARTIAL_MARKER}{:016x}", rand::random::<u64>())));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp.0)
            .await
            .map_err(|e| self.io_error("write", key, e))?;
        Ok((temp, file))
    }

    /// Creates `dir` and its missing ancestors, and fsyncs each new directory's entry into its parent: without
    /// that, a power cut after the manifest's fsync could still lose the whole new backup directory.
    async fn create_dirs(&self, dir: &Path) -> std::io::Result<()> {
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
        tokio::fs::create_dir_all(dir).await?;
        for created in missing.iter().rev() {
            if let Some(parent) = created.parent() {
                sync_dir(parent).await?;
            }
        }
        Ok(())
    }

    /// Whether a file name is a temporary file of an unfinished write.
    fn is_partial(key: &str) -> bool {
        key.rsplit('/').next().is_some_and(|n| n.starts_with('.') && n.contains(PARTIAL_MARKER))
    }

    /// Every file under the root whose key starts with `prefix`, partial ones included.
    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut found = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("list", prefix, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| self.io_error("list", prefix, e))? {
                let meta = match entry.metadata().await {
                    Ok(meta) => meta,
                    // A temporary file renamed or removed by a write finishing meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io_error("list", prefix, e)),
                };
                let path = entry.path();
                if meta.is_dir() {
                    pending.push(path);
                    continue;
                }
                let Some(key) = path.strip_prefix(&self.root).ok().and_then(|p| p.to_str()) else { continue };
                if key.starts_with(prefix) {
                    let modified = meta.modified().map_err(|e| self.io_error("list", key, e))?;
                    found.push(ObjectInfo { key: key.to_string(), size: meta.len(), last_modified: modified.into() });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }
}

/// Deletes the temporary file when dropped: covers errors and cancelled futures alike.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[async_trait::async_trait]
impl ObjectStore for FilesystemStore {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    async fn put_stream(&self, key: &str, body: ByteStream, _meta: &ObjectMeta) -> Result<PutSummary, StoreError> {
        let path = self.path(key)?;
        let (temp, mut file) = self.temp_beside(&path, key).await?;
        let mut input = DigestingReader::new(body);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).await.map_err(|source| StoreError::Input { key: key.to_string(), source })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await.map_err(|e| self.io_error("write", key, e))?;
        }
        file.sync_all().await.map_err(|e| self.io_error("write", key, e))?;
        drop(file);
        tokio::fs::rename(&temp.0, &path).await.map_err(|e| self.io_error("write", key, e))?;
        std::mem::forget(temp);
        if let Some(parent) = path.parent() {
            sync_dir(parent).await.map_err(|e| self.io_error("write", key, e))?;
        }
        Ok(input.summary())
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, StoreError> {
        let file = tokio::fs::File::open(self.path(key)?).await.map_err(|e| self.io_error("read", key, e))?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, file)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut found = self.walk(prefix).await?;
        found.retain(|o| !Self::is_partial(&o.key));
        Ok(found)
    }

    async fn list_partial(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut found = self.walk(prefix).await?;
        found.retain(|o| Self::is_partial(&o.key));
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                // Remove the backup's directory once it is empty; failure just means it is not empty yet.
                if let Some(parent) = path.parent().filter(|p| *p != self.root) {
                    let _ = tokio::fs::remove_dir(parent).await;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("delete", key, e)),
        }
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let (temp, mut file) = self.temp_beside(&path, key).await?;
        file.write_all(&data).await.map_err(|e| self.io_error("write", key, e))?;
        file.sync_all().await.map_err(|e| self.io_error("write", key, e))?;
        // A hard link fails if the target exists: an atomic create-if-absent with complete contents.
        match tokio::fs::hard_link(&temp.0, &path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists { store: self.describe(), key: key.to_string() });
            }
            Err(e) => return Err(self.io_error("write", key, e)),
        }
        drop(temp);
        if let Some(parent) = path.parent() {
            sync_dir(parent).await.map_err(|e| self.io_error("write", key, e))?;
        }
        Ok(())
    }

    async fn try_lease(&self, key: &str, _duration: std::time::Duration) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            self.create_dirs(parent).await.map_err(|e| self.io_error("lock", key, e))?;
        }
        let held = self.try_lock(key, path, true).await?;
        Ok(held.map(|file| Box::new(FileLease { file }) as Box<dyn Lease>))
    }

    async fn lease_held(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        if !path.exists() {
            return Ok(false);
        }
        // Taking the lock and dropping it at once is the only way to ask flock.
        Ok(self.try_lock(key, path, false).await?.is_none())
    }
}

impl FilesystemStore {
    /// Opens the lock file at `path` (creating it when `create`) and takes its flock if free: `None` when another
    /// holder has it, or when it does not exist and `create` is false.
    async fn try_lock(&self, key: &str, path: PathBuf, create: bool) -> Result<Option<std::fs::File>, StoreError> {
        let opened = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            let file =
                match std::fs::OpenOptions::new().create(create).truncate(false).write(true).mode(0o600).open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                    Err(e) => return Err(e),
                };
            match file.try_lock() {
                Ok(()) => Ok(Some(file)),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            }
        })
        .await
        .map_err(|e| self.io_error("lock", key, std::io::Error::other(e)))?;
        opened.map_err(|e| self.io_error("lock", key, e))
    }
}

/// An `flock` on a lock file: held until released or the process dies, so it needs no renewal.
struct FileLease {
    file: std::fs::File,
}

#[async_trait::async_trait]
impl Lease for FileLease {
    async fn renew(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(&self) -> Result<(), StoreError> {
        // Unlocking cannot fail in a way that matters: closing the file drops the lock too.
        let _ = self.file.unlock();
        Ok(())
    }
}
