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

/// `auth` of `[storage]` for Azure: how the agent proves who it is. Chosen explicitly; there is no hidden chain
/// that silently falls back to another identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AzureAuth {
    /// The VM's managed identity (system-assigned, or user-assigned when `client_id` is set); no secret at all.
    #[default]
    ManagedIdentity,
    /// Entra workload identity: a federated token file (`federated_token_file` or `$AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// A service principal: `tenant_id`, `client_id` and the secret `azure-client-secret`.
    ClientSecret,
    /// A SAS token or SAS URL: the secret `azure-sas`.
    Sas,
    /// A storage connection string with the account key (secret `azure-connection-string`), signed with SharedKey.
    ConnectionString,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Which backend. Setting `url` selects Azure as well.
    pub kind: StorageKind,
    /// Key prefix: backups live under `<prefix>/<backup-id>/`.
    pub prefix: String,
    /// Filesystem backend: root directory.
    pub path: PathBuf,
    /// Azure: storage account name (else taken from `url`, `endpoint` or the connection string).
    pub account: Option<String>,
    /// Azure: blob container; the agent never creates it (infrastructure does), so it needs no account-wide rights.
    pub container: Option<String>,
    /// Azure: blob service endpoint, when not `https://<account>.blob.core.windows.net` (private endpoints,
    /// sovereign clouds, Azurite's `http://127.0.0.1:10000/devstoreaccount1`).
    pub endpoint: Option<String>,
    /// Azure: all of account, container and prefix in one `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`.
    pub url: Option<String>,
    /// Azure: how to authenticate.
    pub auth: AzureAuth,
    /// Azure: client id of a user-assigned managed identity, workload identity or service principal.
    pub client_id: Option<String>,
    /// Azure: Entra tenant of a service principal or workload identity.
    pub tenant_id: Option<String>,
    /// Azure, `auth = "connection-string"`: file holding the connection string (secret `azure-connection-string`).
    pub connection_string_file: Option<PathBuf>,
    /// Azure, `auth = "sas"`: file holding the SAS token or SAS URL (secret `azure-sas`).
    pub sas_file: Option<PathBuf>,
    /// Azure, `auth = "client-secret"`: file holding the client secret (secret `azure-client-secret`).
    pub client_secret_file: Option<PathBuf>,
    /// Azure, `auth = "workload-identity"`: the projected service-account token.
    pub federated_token_file: Option<PathBuf>,
    /// Azure: REST API version to send, when the SDK's default is newer than the service (Azure Stack, Azurite).
    pub api_version: Option<String>,
    /// Azure: first block size in KiB. Blocks grow as the archive grows so that a blob stays under Azure's
    /// 50,000-block limit (a 4 TiB archive fits); upload memory is about block size × (blocks in flight + 1).
    pub block_size_kib: u64,
    /// Azure: most blocks uploading at once.
    pub upload_concurrency: usize,
    /// Azure: memory for blocks in flight, in MiB; fewer blocks fly at once once blocks have grown past
    /// `upload_buffer_mib / upload_concurrency`, so memory stays bounded whatever the archive size.
    pub upload_buffer_mib: u64,
    /// Azure: size of one ranged read when downloading, in KiB.
    pub download_chunk_kib: u64,
    /// Azure: ranged reads in flight when downloading; download memory is about chunk × (this + 1).
    pub download_concurrency: usize,
    /// Azure: time one request may take before it is abandoned and retried, plus one second per MiB it carries.
    pub request_timeout_secs: u64,
    /// Azure: total time spent retrying one request on transient errors (5xx, 408, 429, connection loss)
    /// before the operation fails. Permanent errors (403, 404, TLS trust) are never retried.
    pub retry_max_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            prefix: "mongodb".into(),
            path: PathBuf::from("/var/lib/mongo-backup-agent/backups"),
            account: None,
            container: None,
            endpoint: None,
            url: None,
            auth: AzureAuth::ManagedIdentity,
            client_id: None,
            tenant_id: None,
            connection_string_file: None,
            sas_file: None,
            client_secret_file: None,
            federated_token_file: None,
            api_version: None,
            block_size_kib: 8 * 1024,
            upload_concurrency: 4,
            upload_buffer_mib: 64,
            download_chunk_kib: 8 * 1024,
            download_concurrency: 4,
            request_timeout_secs: 60,
            retry_max_secs: 120,
        }
    }
}

impl StorageConfig {
    /// Whether backups go to Azure Blob: `kind = "azure"`, or a `url` given.
    pub fn is_azure(&self) -> bool {
        self.kind == StorageKind::Azure || self.url.is_some()
    }

    /// The prefix backups live under: the PREFIX part of `url` when it has one, else `prefix`.
    pub fn key_prefix(&self) -> String {
        crate::store::azure::url_prefix(self).unwrap_or_else(|| self.prefix.clone())
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
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        // A `url` may carry the prefix; every caller reads `storage.prefix`, so resolve it once here.
        config.storage.prefix = config.storage.key_prefix();
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
        crate::store::azure::validate_config(&self.storage).map_err(ConfigError::Invalid)?;
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
