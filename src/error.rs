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
    /// Encrypting or decrypting failed: no, or the wrong, identity (exit 2), or bytes that fail authentication.
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    /// A MongoDB operation failed; `action` says which (and on what). Shown as one line ([`crate::mongo::describe`]),
    /// not as the driver's topology description.
    #[error("{action}: {}", crate::mongo::describe(.source))]
    Mongo {
        /// What we were doing, e.g. "reading shop.orders".
        action: String,
        /// Driver error.
        #[source]
        source: mongodb::error::Error,
    },
    /// MongoDB could not be reached at all (or refused the credentials). One line, with no password in it:
    /// `cannot reach MongoDB at 127.0.0.1:42001 (connection refused): is mongod running …?`
    #[error("cannot reach MongoDB at {hosts} ({reason}): {hint}")]
    Unreachable {
        /// The servers, from the URI's host list (never its credentials).
        hosts: String,
        /// The cause in a few words ([`crate::mongo::describe`]), secrets masked.
        reason: String,
        /// What to check.
        hint: &'static str,
    },
    /// MongoDB stopped answering: a cursor made no progress for `backup.stall_timeout`, or a command took longer
    /// than the operation timeout. `what` names the collection or command.
    #[error(
        "{what}: no answer from MongoDB for {}; is the server overloaded or the network down? (limit for reads: \
         backup.stall_timeout)",
        humantime::format_duration(*after)
    )]
    Stalled {
        /// What was waiting ("reading shop.orders", "running hello").
        what: String,
        /// How long it waited.
        after: std::time::Duration,
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
            Error::Crypt(e) if e.is_usage() => EXIT_USAGE,
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
