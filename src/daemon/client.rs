//! The client side of the control socket, used by `run-now`, `status` and the SSH `trigger`.

use std::path::{Path, PathBuf};

use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::protocol::{self, Envelope, Event, PROTOCOL_VERSION, ProtocolError, Request};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "the mongo-backup-agent daemon is not running (nothing listens on {0}): start it with \
         `systemctl start mongo-backup-agent`, or back up without it: `mongo-backup-agent run-now --standalone`"
    )]
    NotRunning(PathBuf),
    /// The socket exists but this user may not use it.
    #[error("permission denied on {0}: run as root or as a member of the group mongo-backup-trigger")]
    PermissionDenied(PathBuf),
    /// Connecting failed otherwise.
    #[error("cannot connect to the daemon at {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The conversation broke.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The daemon closed the connection before answering in full.
    #[error(
        "the daemon closed the connection before {0} (it was stopped or crashed): see `journalctl -u mongo-backup-agent`"
    )]
    Closed(String),
    /// The daemon refused the request.
    #[error("the daemon refused: {0}")]
    Refused(String),
}

/// A connection to the daemon carrying one request.
#[derive(Debug)]
pub struct DaemonClient {
    reader: BufReader<OwnedReadHalf>,
    _writer: OwnedWriteHalf,
}

impl DaemonClient {
    /// Connects to `socket` and sends `request`.
    pub async fn send(socket: &Path, request: Request) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket).await.map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(socket.to_path_buf())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket.to_path_buf()),
            _ => ClientError::Connect { path: socket.to_path_buf(), source },
        })?;
        let (read, mut writer) = stream.into_split();
        protocol::write_line(&mut writer, &Envelope { version: PROTOCOL_VERSION, request })
            .await
            .map_err(ProtocolError::from)?;
        Ok(DaemonClient { reader: BufReader::new(read), _writer: writer })
    }

    /// The next event; an [`Event::Error`] becomes [`ClientError::Refused`], the end of the stream
    /// [`ClientError::Closed`] naming `waiting_for`.
    pub async fn next(&mut self, waiting_for: &str) -> Result<Event, ClientError> {
        match protocol::read_line::<Event, _>(&mut self.reader).await? {
            Some(Event::Error { message }) => Err(ClientError::Refused(message)),
            Some(event) => Ok(event),
            None => Err(ClientError::Closed(waiting_for.to_string())),
        }
    }
}
