//! The agent's configuration: one TOML file, every key defaulted, unknown keys refused, secrets never inline.
//!
//! Path: `--config`, else `$MONGO_BACKUP_AGENT_CONFIG`, else [`DEFAULT_PATH`]. The reference is
//! `packaging/config.example.toml`, which a test parses.

pub mod azure;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::archive::NamespaceFilter;
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
    #[error(
        "secret {name:?} not found: set {file_key} in the config, or ${env}, or the systemd credential {name} \
         (outside the service: {CREDENTIALS_FILES}/{name}, readable by root)"
    )]
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
    /// Which backups to keep.
    pub retention: RetentionConfig,
    /// The daemon's control socket.
    pub daemon: DaemonConfig,
    /// The daemon's own schedule (off by default: the hourly kick comes from AKS).
    pub schedule: ScheduleConfig,
    /// Integrity checks of stored backups.
    pub verify: VerifyConfig,
    /// Who hears about failed (and optionally successful) backups.
    pub notify: NotifyConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Continuous oplog archiving (point-in-time recovery between base backups).
    pub pitr: PitrConfig,
    /// Client-side encryption (off unless recipients are set).
    pub encryption: EncryptionConfig,
    /// Replica-set mode: an agent on every member, one runner elected through a lease (off by default).
    pub cluster: ClusterConfig,
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
    /// A collection's cursor that returns nothing for this long fails the backup, naming the collection: the
    /// driver has no socket timeout, and a hung server must not hang the agent for good.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
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
            stall_timeout: Duration::from_secs(600),
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

impl AzureAuth {
    /// The config spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AzureAuth::ManagedIdentity => "managed-identity",
            AzureAuth::WorkloadIdentity => "workload-identity",
            AzureAuth::ClientSecret => "client-secret",
            AzureAuth::Sas => "sas",
            AzureAuth::ConnectionString => "connection-string",
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        azure::url_prefix(self).unwrap_or_else(|| self.prefix.clone())
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

/// `[retention]`: grandfather-father-son, like `restic forget`. A backup is kept when any rule keeps it; the
/// newest complete backup is always kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Newest backups kept whatever their time.
    pub keep_last: u32,
    /// Newest backup of each of the last N hours that have one.
    pub keep_hourly: u32,
    /// Newest backup of each of the last N days that have one.
    pub keep_daily: u32,
    /// Newest backup of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// Newest backup of each of the last N months that have one.
    pub keep_monthly: u32,
    /// Every backup younger than this (relative to the newest backup), e.g. "2d"; unset keeps none by age.
    #[serde(with = "humantime_serde")]
    pub keep_within: Option<Duration>,
    /// An archive with no manifest (a failed or interrupted attempt) is deleted once it is older than this; the
    /// grace keeps a backup that is still uploading from being taken for debris.
    #[serde(with = "humantime_serde")]
    pub incomplete_grace: Duration,
    /// Apply the policy after every successful backup the daemon makes.
    pub prune_after_backup: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_last: 1,
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_within: None,
            incomplete_grace: Duration::from_secs(24 * 3600),
            prune_after_backup: true,
        }
    }
}

/// Default control socket; `RuntimeDirectory=mongo-backup-agent` in the unit creates its directory.
pub const DEFAULT_SOCKET: &str = "/run/mongo-backup-agent/control.sock";

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The control socket `run-now`, `status` and `trigger` talk to.
    pub socket: PathBuf,
    /// Group given the socket (mode 0660) so the SSH trigger user can use it; skipped when the group does not exist.
    pub socket_group: String,
    /// Finished runs remembered for `status` (in memory; the store holds the backups themselves).
    pub history: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig { socket: PathBuf::from(DEFAULT_SOCKET), socket_group: "mongo-backup-trigger".into(), history: 20 }
    }
}

/// `[schedule]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Five-field cron expression in UTC, e.g. "0 * * * *"; unset means the daemon only backs up when asked.
    pub cron: Option<String>,
}

/// `[verify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Verify every backup the daemon makes right after it is stored (re-reads the whole archive).
    pub after_backup: bool,
    /// `verify --deep`: server to restore into (scratch database, dropped afterwards); default `mongodb.uri`.
    pub scratch_uri: Option<String>,
    /// `verify --deep`: documents per collection compared field by field with the archive.
    pub sample_documents: u32,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig { after_backup: false, scratch_uri: None, sample_documents: 100 }
    }
}

/// `[notify]`. URLs carry tokens, so they are secrets too: `webhook-url`, `slack-webhook-url`, `smtp-password`; a
/// channel is on when its secret is found (its `*_file` key, the environment, or a systemd credential).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Notify when a backup fails.
    pub on_failure: bool,
    /// Notify when a backup succeeds as well.
    pub on_success: bool,
    /// Generic webhook: file holding the URL (secret `webhook-url`); receives a JSON body.
    pub webhook_url_file: Option<PathBuf>,
    /// Slack incoming webhook: file holding the URL (secret `slack-webhook-url`).
    pub slack_webhook_url_file: Option<PathBuf>,
    /// E-mail over SMTP.
    pub email: Option<EmailConfig>,
    /// Time one delivery may take; a notification never delays or fails a backup beyond this.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            on_failure: true,
            on_success: false,
            webhook_url_file: None,
            slack_webhook_url_file: None,
            email: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on localhost.
    None,
}

/// `[notify.email]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub server: String,
    /// SMTP port; default from `tls` (587, 465 or 25).
    pub port: Option<u16>,
    /// Transport security.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP user, when the server wants a login (password: secret `smtp-password`).
    pub username: Option<String>,
    /// File holding the SMTP password (secret `smtp-password`).
    pub password_file: Option<PathBuf>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics on this loopback address, e.g. "127.0.0.1:9216".
    pub listen: Option<SocketAddr>,
    /// Also write them to this node_exporter textfile-collector file after every run (replaced atomically).
    pub textfile: Option<PathBuf>,
}

/// `[pitr]`: continuous oplog archiving. With it on, `serve` stores the oplog in chunks after the newest base
/// backup, and the hourly kick seals the current chunk instead of dumping everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PitrConfig {
    /// Archive the oplog continuously.
    pub enabled: bool,
    /// A chunk is sealed (stored) at the latest this long after it started: the recovery point objective.
    #[serde(with = "humantime_serde")]
    pub chunk_span: Duration,
    /// A chunk is sealed early once its entries reach this many bytes (before compression): bounds memory.
    pub chunk_max_bytes: u64,
    /// How often the server is asked whether its majority-committed oplog moved.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for PitrConfig {
    fn default() -> Self {
        PitrConfig {
            enabled: false,
            chunk_span: Duration::from_secs(60),
            chunk_max_bytes: 16 << 20,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// `[cluster]`: one agent per replica-set member. For each backup and for oplog archiving the agents contend for a
/// lease on a lock object in the store; the best-ranked member normally wins (see [`crate::cluster`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Coordinate with the agents on the other members.
    pub enabled: bool,
    /// This agent's name among them (letters, digits, `.`, `_`, `-`); the host name when unset.
    pub member: Option<String>,
    /// Overrides the automatic rank (hidden 2.0, secondary 1.0, primary 0.5): higher wins.
    pub priority: Option<f64>,
    /// How long a lease lasts unless renewed (15s..=60s, Azure's bounds): the longest a dead runner holds up the
    /// others.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How often each agent publishes its heartbeat and looks for pending backup requests.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl ClusterConfig {
    /// Whether `c` may stand in a member name: it becomes part of a key in the store.
    pub fn member_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            member: None,
            priority: None,
            lease_duration: Duration::from_secs(15),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// `[encryption]`: the VM gets only `recipients` (public keys); `identity_file` belongs on a restore host. See
/// [`crate::crypt`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// age X25519 recipients (`age1…`); every new backup is encrypted to all of them. Empty: not encrypted.
    pub recipients: Vec<String>,
    /// age identity file (secret `age-identity`) for `restore`, `export`, `inspect` and `verify --deep`; never on
    /// the VM that backs up.
    pub identity_file: Option<PathBuf>,
}

impl EncryptionConfig {
    /// The parsed recipients (checked when the config loaded).
    pub fn recipients(&self) -> Result<crate::crypt::Recipients, crate::crypt::CryptError> {
        crate::crypt::Recipients::parse(&self.recipients)
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
        check(b.stall_timeout >= Duration::from_secs(1), "backup.stall_timeout must be at least 1s (e.g. \"10m\")")?;
        check(self.restore.parallel_inserts > 0, "restore.parallel_inserts must be positive")?;
        check(self.restore.batch_size > 0, "restore.batch_size must be positive")?;
        check(!self.mongodb.uri.is_empty(), "mongodb.uri must be set")?;
        NamespaceFilter::new(&b.include, &b.exclude)
            .map_err(|e| ConfigError::Invalid(format!("backup.include/exclude: {e}")))?;
        azure::validate(&self.storage).map_err(ConfigError::Invalid)?;
        if let Some(cron) = &self.schedule.cron {
            parse_cron(cron)?;
        }
        if let Some(listen) = self.metrics.listen {
            check(listen.ip().is_loopback(), "metrics.listen must be a loopback address (127.0.0.1 or ::1)")?;
        }
        if let Some(email) = &self.notify.email {
            check(!email.to.is_empty(), "notify.email.to must name at least one recipient")?;
            check(!email.from.is_empty(), "notify.email.from must be set")?;
        }
        check(self.daemon.history > 0, "daemon.history must be positive")?;
        let pitr = &self.pitr;
        check(pitr.chunk_span >= Duration::from_secs(1), "pitr.chunk_span must be at least 1s (e.g. \"60s\")")?;
        check(
            (1 << 16..=1 << 30).contains(&pitr.chunk_max_bytes),
            "pitr.chunk_max_bytes must be 65536..=1073741824 (default 16777216)",
        )?;
        check(
            pitr.poll_interval >= Duration::from_millis(50) && pitr.poll_interval <= pitr.chunk_span,
            "pitr.poll_interval must be at least 50ms and at most pitr.chunk_span",
        )?;
        check(
            !pitr.enabled || b.oplog == OplogMode::Auto,
            "pitr.enabled needs backup.oplog = \"auto\": a base backup without its oplog slice cannot start a chain",
        )?;
        self.encryption.recipients().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let cluster = &self.cluster;
        check(
            (Duration::from_secs(15)..=Duration::from_secs(60)).contains(&cluster.lease_duration),
            "cluster.lease_duration must be 15s..=60s (the bounds of an Azure blob lease)",
        )?;
        check(
            cluster.poll_interval >= Duration::from_millis(100) && cluster.poll_interval * 3 <= cluster.lease_duration,
            "cluster.poll_interval must be at least 100ms and at most a third of cluster.lease_duration",
        )?;
        check(
            cluster.member.as_deref().is_none_or(|m| !m.is_empty() && m.chars().all(ClusterConfig::member_char)),
            "cluster.member may hold only letters, digits, '.', '_' and '-'",
        )?;
        let uri = self.mongodb.uri.to_ascii_lowercase();
        check(
            !cluster.enabled || !uri.contains("replicaset=") || uri.contains("directconnection=true"),
            "cluster.enabled needs mongodb.uri to reach this member only: add directConnection=true (or drop \
             replicaSet=); otherwise every agent reads the primary and the ranking cannot pick a secondary",
        )?;
        check(
            cluster.priority.is_none_or(|p| p.is_finite() && p >= 0.0),
            "cluster.priority must be a number >= 0 (hidden 2.0, secondary 1.0, primary 0.5 by default)",
        )?;
        Ok(())
    }
}

/// Parses a five-field cron expression (minute hour day-of-month month day-of-week), as `[schedule] cron` takes.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, ConfigError> {
    croner::parser::CronParser::new().parse(expression).map_err(|e| {
        ConfigError::Invalid(format!("schedule.cron {expression:?}: {e} (five fields, e.g. \"0 * * * *\")"))
    })
}

/// Where the Ansible role (and the manual install) keep the secrets the unit hands over with `LoadCredential=`.
/// Operators' commands on the VM (`sudo mongo-backup-agent list`, `restore`, `verify`) run outside the service,
/// without `$CREDENTIALS_DIRECTORY`, and read the same files from here.
pub const CREDENTIALS_FILES: &str = "/etc/mongo-backup-agent/credentials";

/// Reads a secret from, in order: the file named by the config key, `MONGO_BACKUP_AGENT_<NAME>`, the systemd
/// credential `$CREDENTIALS_DIRECTORY/<name>`, or, outside systemd (no `$CREDENTIALS_DIRECTORY`), the credential's
/// source file in [`CREDENTIALS_FILES`]. Returns `None` when no source has it. Trailing newlines are removed.
pub fn read_secret(name: &str, file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    read_secret_from(name, file, Path::new(CREDENTIALS_FILES))
}

fn read_secret_from(name: &str, file: Option<&Path>, credential_files: &Path) -> Result<Option<String>, ConfigError> {
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
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map_or_else(|| credential_files.to_path_buf(), PathBuf::from);
    let path = dir.join(name);
    if path.exists() {
        // Unreadable (not root) is an error that names the file, not a "not found".
        return from_file(&path).map(Some);
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
        let text = include_str!("../../packaging/config.example.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.backup.compression, Compression::Zstd);
        assert_eq!(config.storage.prefix, "mongodb");
        assert_eq!(config.retention.keep_hourly, 24);
        assert_eq!(config.retention.incomplete_grace, Duration::from_secs(86_400));
        assert_eq!(config.backup.stall_timeout, Duration::from_secs(600));
        assert_eq!(config.daemon.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(config.notify.on_failure && !config.notify.on_success);
    }

    #[test]
    fn schedule_durations_and_metrics_are_checked() {
        let config = Config::parse("[schedule]\ncron = \"0 * * * *\"\n[retention]\nkeep_within = \"36h\"\n").unwrap();
        assert_eq!(config.retention.keep_within, Some(Duration::from_secs(36 * 3600)));
        let err = Config::parse("[schedule]\ncron = \"every hour\"\n").unwrap_err().to_string();
        assert!(err.contains("schedule.cron"), "{err}");
        let err = Config::parse("[retention]\nkeep_within = \"two days\"\n").unwrap_err().to_string();
        assert!(err.contains("keep_within"), "{err}");
        let err = Config::parse("[metrics]\nlisten = \"0.0.0.0:9216\"\n").unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn outside_systemd_secrets_come_from_the_credential_files() {
        // The tests never run with CREDENTIALS_DIRECTORY set (nothing in this crate sets it).
        assert!(std::env::var_os("CREDENTIALS_DIRECTORY").is_none());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("azure-sas"), "sv=1&sig=x\n").unwrap();
        let found = read_secret_from("azure-sas", None, dir.path()).unwrap();
        assert_eq!(found.as_deref(), Some("sv=1&sig=x"));
        assert_eq!(read_secret_from("smtp-password", None, dir.path()).unwrap(), None);
        let err = ConfigError::MissingSecret {
            name: "azure-sas".into(),
            file_key: "storage.sas_file".into(),
            env: "X".into(),
        };
        assert!(err.to_string().contains("/etc/mongo-backup-agent/credentials/azure-sas"), "{err}");
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

    #[test]
    fn cluster_settings_are_checked() {
        let config = Config::parse("[cluster]\nenabled = true\nmember = \"mongo-2.zone_b\"\npriority = 2.5\n").unwrap();
        assert_eq!(config.cluster.lease_duration, Duration::from_secs(15));
        assert_eq!(config.cluster.poll_interval, Duration::from_secs(2));
        assert_eq!(config.cluster.priority, Some(2.5));
        for (bad, named) in [
            ("lease_duration = \"10s\"", "cluster.lease_duration"),
            ("lease_duration = \"90s\"", "cluster.lease_duration"),
            ("poll_interval = \"6s\"", "cluster.poll_interval"),
            ("member = \"a/b\"", "cluster.member"),
            ("member = \"\"", "cluster.member"),
            ("priority = -1.0", "cluster.priority"),
            ("leader = true", "leader"),
        ] {
            let err = Config::parse(&format!("[cluster]\n{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
        let own_member = "[mongodb]\nuri = \"mongodb://127.0.0.1:27017/?replicaSet=rs0\"\n[cluster]\nenabled = true\n";
        let err = Config::parse(own_member).unwrap_err().to_string();
        assert!(err.contains("directConnection=true"), "{err}");
        Config::parse(&own_member.replace("rs0", "rs0&directConnection=true")).unwrap();
    }
}
