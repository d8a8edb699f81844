//! The control socket's protocol: one JSON request line from the client, then JSON event lines from the daemon.
//!
//! Line-delimited JSON keeps it debuggable with `socat` and parseable from any language. Every request carries
//! [`PROTOCOL_VERSION`]; a daemon refuses a version it does not speak with an [`Event::Error`] that says which to
//! upgrade, instead of misreading the request.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::backup::{BackupId, RunReport};

/// Version of this protocol; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side accepts, so a misbehaving peer cannot make the other buffer without bound.
pub const MAX_LINE: usize = 1 << 20;

/// What a client sends, as its first and only line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What it asks for.
    pub request: Request,
}

/// A request; each variant has a CLI verb and a handler of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Back up now (or attach to the backup already running) and stream its progress until it ends. With
    /// point-in-time archiving on, seal the open oplog chunk instead, unless `full` asks for a base backup.
    RunNow {
        /// Who asks: "run-now", "ssh"; recorded in the run's report.
        trigger: String,
        /// A full (base) backup even when point-in-time archiving makes the kick a seal.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        full: bool,
    },
    /// The daemon's state: the running backup, the last result and recent runs.
    Status,
}

/// What the daemon sends back, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A backup is running for this request: a new one, or one already running that the request joined.
    Started {
        /// Its id.
        id: BackupId,
        /// True when the backup was already running (started by `trigger`) and this request attached to it.
        attached: bool,
        /// Who started it.
        trigger: String,
    },
    /// In a replica set: the request was posted for the member that wins the backup lease; its result follows as
    /// [`Event::Finished`].
    Waiting {
        /// The request's id in the store.
        request: String,
        /// One human line: what is being waited for.
        summary: String,
    },
    /// Where the backup is now; sent about once a second.
    Progress {
        /// Current phase ("dumping", "writing manifest").
        phase: String,
        /// One human line: phase, busiest collection and percentage.
        summary: String,
        /// Documents read so far.
        documents: u64,
        /// Plain archive bytes produced so far.
        bytes: u64,
    },
    /// The backup ended; the last event of a `run_now`.
    Finished {
        /// How it ended.
        report: RunReport,
    },
    /// The open oplog chunk is sealed and the chain since the newest base has no gap; the last event of a
    /// `run_now` with point-in-time archiving.
    Sealed {
        /// Everything up to this point is archived: the newest moment a restore can reach now.
        archived_to: crate::manifest::OplogTimestamp,
        /// One human line: the restore window and its base.
        summary: String,
    },
    /// The answer to `status`.
    Status(Box<StatusReply>),
    /// The request could not be served; the message says why and what to do.
    Error {
        /// One line.
        message: String,
    },
}

/// The daemon's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Agent version of the daemon.
    pub agent_version: String,
    /// Daemon process id.
    pub pid: u32,
    /// Config file the daemon runs with.
    pub config: String,
    /// Where backups go.
    pub store: String,
    /// The backup running now, if any.
    pub running: Option<RunningInfo>,
    /// Finished runs, newest first, as many as `[daemon] history`.
    pub recent: Vec<RunReport>,
    /// Next scheduled backup (RFC 3339), when `[schedule] cron` is set.
    pub next_scheduled: Option<String>,
    /// Point-in-time archiving, when `[pitr]` is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<crate::daemon::pitr::PitrState>,
    /// Replica-set mode, when `[cluster]` is enabled: every member's heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::daemon::cluster::ClusterStatus>,
}

/// The backup in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningInfo {
    /// Its id.
    pub id: BackupId,
    /// Who started it.
    pub trigger: String,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Phase and busiest collection.
    pub summary: String,
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a line that is not the expected JSON.
    #[error("control socket: malformed message: {0}")]
    Malformed(String),
    /// The peer sent a line over [`MAX_LINE`].
    #[error("control socket: message longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Reads one JSON line; `Ok(None)` at end of stream.
pub async fn read_line<T, R>(reader: &mut R) -> Result<Option<T>, ProtocolError>
where
    T: serde::de::DeserializeOwned,
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    let read = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(ProtocolError::TooLong);
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Writes one JSON line and flushes it.
pub async fn write_line<T: Serialize, W: AsyncWrite + Unpin>(writer: &mut W, value: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let envelope = Envelope { version: 1, request: Request::RunNow { trigger: "ssh".into(), full: false } };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(text, r#"{"version":1,"request":{"type":"run_now","trigger":"ssh"}}"#);
        let status: Envelope = serde_json::from_str(r#"{"version":1,"request":{"type":"status"}}"#).unwrap();
        assert_eq!(status.request, Request::Status);
        // A kick that asks for a base backup says so; one that does not reads as before.
        let full = Envelope { version: 1, request: Request::RunNow { trigger: "ssh".into(), full: true } };
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(text, r#"{"version":1,"request":{"type":"run_now","trigger":"ssh","full":true}}"#);
    }

    #[tokio::test]
    async fn lines_round_trip_and_oversized_lines_are_refused() {
        let event = Event::Error { message: "no".into() };
        let mut buf = Vec::new();
        write_line(&mut buf, &event).await.unwrap();
        let mut reader = tokio::io::BufReader::new(&buf[..]);
        assert_eq!(read_line::<Event, _>(&mut reader).await.unwrap(), Some(event));
        assert!(read_line::<Event, _>(&mut reader).await.unwrap().is_none());

        let long = vec![b'x'; MAX_LINE + 10];
        let mut reader = tokio::io::BufReader::new(&long[..]);
        assert!(matches!(read_line::<Event, _>(&mut reader).await, Err(ProtocolError::TooLong)));
        let mut reader = tokio::io::BufReader::new(&b"{not json}\n"[..]);
        assert!(matches!(read_line::<Event, _>(&mut reader).await, Err(ProtocolError::Malformed(_))));
    }
}
