//! Error policy, in one place.
//!
//! * The library returns typed errors ([`Error`] and the per-stage enums it wraps); `anyhow` appears only in
//!   `main.rs`.
//! * Every message names the thing that failed (namespace, object key, server, file) and, where there is one, the
//!   next step for the operator. The binary prints the whole chain once, on one line, prefixed `mongo-backup-agent:`.
//! * A stage that fails says which stage it was (reading MongoDB, writing the archive, compressing, uploading), so a
//!   failed backup can be told apart from a failed upload.
//! * Exit codes (documented in the README and tested): [`EXIT_OK`], [`EXIT_FAILED`], [`EXIT_USAGE`],
//!   [`EXIT_UNAVAILABLE`].

use crate::archive::ArchiveError;
use crate::config::ConfigError;
use crate::daemon::client::ClientError;
use crate::store::StoreError;

/// Success.
pub const EXIT_OK: i32 = 0;
/// The operation ran and failed: backup, restore, verify or prune did not complete.
pub const EXIT_FAILED: i32 = 1;
/// Bad command line, bad config, or a command the SSH trigger refuses.
pub const EXIT_USAGE: i32 = 2;
/// Something needed is not there: the daemon is not running, MongoDB or the store is unreachable.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// Any failure of the agent's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An archive could not be read or written.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A MongoDB operation failed; `action` says which (and on what).
    #[error("{action}: {source}")]
    Mongo {
        /// What we were doing, e.g. "reading shop.orders".
        action: String,
        /// Driver error.
        #[source]
        source: mongodb::error::Error,
    },
    /// MongoDB could not be reached at all.
    #[error("cannot reach MongoDB at {uri}: {source} (is mongod running and the URI in [mongodb] right?)")]
    Unreachable {
        /// The URI (without password).
        uri: String,
        /// Driver error.
        #[source]
        source: mongodb::error::Error,
    },
    /// The command line is wrong; the message says which flag.
    #[error("{0}")]
    Usage(String),
    /// Restore refused to proceed; the message says why and what to pass to override.
    #[error("{0}")]
    Refused(String),
    /// A restore failed; `outcome` says what it changed on the target and what it left as it was.
    #[error("{source}; {outcome}")]
    Restore {
        /// What was and was not changed, e.g. "every target is unchanged".
        outcome: String,
        /// Why the restore failed.
        #[source]
        source: Box<Error>,
    },
    /// Local I/O failed (reading an archive file, writing an export).
    #[error("{action}: {source}")]
    Io {
        /// What we were doing, with the path.
        action: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No backup matched the id given.
    #[error("no backup {id:?} in {store}; `mongo-backup-agent list` shows what exists")]
    NoSuchBackup {
        /// The id asked for.
        id: String,
        /// Store description.
        store: String,
    },
    /// The daemon could not be asked, or broke off.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::client::ClientError),
    /// The operation was cancelled (SIGTERM, service stop); nothing was committed.
    #[error("cancelled before completion; no backup was recorded")]
    Cancelled,
}

impl Error {
    /// Wraps a driver error with what we were doing.
    pub fn mongo(action: impl Into<String>) -> impl FnOnce(mongodb::error::Error) -> Error {
        let action = action.into();
        move |source| Error::Mongo { action, source }
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => EXIT_USAGE,
            Error::Unreachable { .. } | Error::Daemon(ClientError::NotRunning(_)) => EXIT_UNAVAILABLE,
            Error::Daemon(ClientError::PermissionDenied(_)) => EXIT_USAGE,
            Error::Restore { source, .. } => source.exit_code(),
            _ => EXIT_FAILED,
        }
    }
}

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line, joined with ": ", skipping repeats: what a log line or the binary prints,
/// since many errors (HTTP clients, TLS) put the useful part in a source rather than in their own message.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string().trim().replace('\n', " ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
