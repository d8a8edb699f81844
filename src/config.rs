//! The agent's configuration: one TOML file, every key defaulted, unknown keys refused, secrets never inline.
//!
//! Path: `--config`, else `$MONGO_BACKUP_AGENT_CONFIG`, else [`DEFAULT_PATH`]. The reference is
//! `packaging/config.example.toml`, which a test parses.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::compress::{Compression, CompressionSettings};

/// Where the package installs the configuration.
pub const DEFAULT_PATH: &str = "/etc/mongo-backup-agent/config.toml";

/// Environment variable overriding the configuration path.
pub const PATH_ENV: &str = "MONGO_BACKUP_AGENT_CONFIG";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source} (pass --config FILE or set {PATH_ENV})")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a wrong type.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The path read.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// A secret could not be found in any of its sources.
    #[error("secret {name:?} not found: set {file_key} in the config, or ${env}, or the systemd credential {name}")]
    MissingSecret {
        /// Secret name (also the systemd credential name).
        name: String,
        /// Config key naming a file.
        file_key: String,
        /// Environment variable.
        env: String,
    },
    /// A secret file exists but cannot be read.
    #[error("cannot read secret {name:?} from {path}: {source}")]
    SecretFile {
        /// Secret name.
        name: String,
        /// File tried.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach MongoDB.
    pub mongodb: MongoConfig,
    /// What to back up and how to encode it.
    pub backup: BackupConfig,
    /// Where backups go.
    pub storage: StorageConfig,
    /// Restore tuning.
    pub restore: RestoreConfig,
}

/// `[mongodb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConfig {
    /// Connection string, without a password.
    pub uri: String,
    /// File holding the password (secret `mongodb-password`).
    pub password_file: Option<PathBuf>,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig { uri: "mongodb://127.0.0.1:27017/".into(), password_file: None }
    }
}

/// `oplog` key: whether to capture the oplog for point-in-time consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OplogMode {
    /// Capture it when the server is a replica-set member.
    #[default]
    Auto,
    /// Never capture it.
    Off,
}

/// `[backup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Archive compression.
    pub compression: Compression,
    /// zstd level.
    pub zstd_level: i32,
    /// gzip level.
    pub gzip_level: u32,
    /// zstd worker threads, 0 = one per core.
    pub compression_threads: u32,
    /// Collections read concurrently; also the archive's `concurrent_collections`.
    pub parallel_collections: usize,
    /// Documents per cursor batch.
    pub batch_size: u32,
    /// Namespace globs to include (empty = all).
    pub include: Vec<String>,
    /// Namespace globs to exclude.
    pub exclude: Vec<String>,
    /// Oplog capture.
    pub oplog: OplogMode,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            compression: Compression::Zstd,
            zstd_level: 3,
            gzip_level: 6,
            compression_threads: 0,
            parallel_collections: 4,
            batch_size: 10_000,
            include: Vec::new(),
            exclude: Vec::new(),
            oplog: OplogMode::Auto,
        }
    }
}

impl BackupConfig {
    /// The encoder settings these keys describe.
    pub fn compression_settings(&self) -> CompressionSettings {
        CompressionSettings {
            compression: self.compression,
            zstd_level: self.zstd_level,
            gzip_level: self.gzip_level,
            threads: self.compression_threads,
        }
    }
}

/// `kind` of `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory.
    #[default]
    Filesystem,
    /// Azure Blob Storage.
    Azure,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Which backend.
    pub kind: StorageKind,
    /// Key prefix: backups live under `<prefix>/<backup-id>/`.
    pub prefix: String,
    /// Filesystem backend: root directory.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            prefix: "mongodb".into(),
            path: PathBuf::from("/var/lib/mongo-backup-agent/backups"),
        }
    }
}

/// `[restore]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreConfig {
    /// Insert batches in flight at once.
    pub parallel_inserts: usize,
    /// Documents per insert batch (also capped at 16 MiB per batch).
    pub batch_size: usize,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig { parallel_inserts: 4, batch_size: 1000 }
    }
}

impl Config {
    /// Resolves the path from the flag, the environment, or the default.
    pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| std::env::var_os(PATH_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.backup;
        let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(ConfigError::Invalid(msg.to_string())) };
        check((1..=22).contains(&b.zstd_level), "backup.zstd_level must be 1..=22")?;
        check((1..=9).contains(&b.gzip_level), "backup.gzip_level must be 1..=9")?;
        check((1..=64).contains(&b.parallel_collections), "backup.parallel_collections must be 1..=64")?;
        check(b.batch_size > 0, "backup.batch_size must be positive")?;
        check(self.restore.parallel_inserts > 0, "restore.parallel_inserts must be positive")?;
        check(self.restore.batch_size > 0, "restore.batch_size must be positive")?;
        check(!self.mongodb.uri.is_empty(), "mongodb.uri must be set")?;
        crate::mongo::NamespaceFilter::new(&b.include, &b.exclude)
            .map_err(|e| ConfigError::Invalid(format!("backup.include/exclude: {e}")))?;
        Ok(())
    }
}

/// Reads a secret from, in order: the file named by the config key, `MONGO_BACKUP_AGENT_<NAME>`, or the systemd
/// credential `$CREDENTIALS_DIRECTORY/<name>`. Returns `None` when no source has it. Trailing newlines are removed.
pub fn read_secret(name: &str, file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    let from_file = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|source| ConfigError::SecretFile { name: name.to_string(), path: path.to_path_buf(), source })
    };
    if let Some(path) = file {
        return from_file(path).map(Some);
    }
    if let Ok(value) = std::env::var(secret_env(name)) {
        return Ok(Some(value));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(name);
        if path.exists() {
            return from_file(&path).map(Some);
        }
    }
    Ok(None)
}

/// The environment variable that can carry secret `name`.
pub fn secret_env(name: &str) -> String {
    format!("MONGO_BACKUP_AGENT_{}", name.to_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_config_parses() {
        let text = include_str!("../packaging/config.example.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.backup.compression, Compression::Zstd);
        assert_eq!(config.storage.prefix, "mongodb");
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.backup.parallel_collections, 4);
        assert_eq!(config.storage.kind, StorageKind::Filesystem);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        let err = Config::parse("[backup]\ncompresion = \"zstd\"\n").unwrap_err().to_string();
        assert!(err.contains("compresion"), "{err}");
        let err = Config::parse("[backup]\nzstd_level = 40\n").unwrap_err().to_string();
        assert!(err.contains("zstd_level"), "{err}");
        let err = Config::parse("[backup]\ncompression = \"lz4\"\n").unwrap_err().to_string();
        assert!(err.contains("lz4"), "{err}");
        let err = Config::parse("[backup]\ninclude = [\"nodot\"]\n").unwrap_err().to_string();
        assert!(err.contains("nodot"), "{err}");
    }

    #[test]
    fn secrets_come_from_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_secret("test-secret-a", Some(&file)).unwrap().as_deref(), Some("s3cret"));
        assert!(read_secret("test-secret-b", Some(&dir.path().join("missing"))).is_err());
        assert_eq!(read_secret("test-secret-never-set", None).unwrap(), None);
        assert_eq!(secret_env("mongodb-password"), "MONGO_BACKUP_AGENT_MONGODB_PASSWORD");
    }
}
