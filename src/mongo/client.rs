//! Connecting to the local MongoDB with the password kept out of the URI and out of argv.

use std::time::Duration;

use bson::{Document, doc};
use mongodb::Client;
use mongodb::options::ClientOptions;

use super::uri::SafeUri;
use crate::config::{MongoConfig, read_secret};
use crate::error::{Error, Result};

/// What the backup needs to know about the server before it starts.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `buildInfo.version`.
    pub version: String,
    /// Replica set name when the server is a replica-set member (then an oplog exists).
    pub replica_set: Option<String>,
    /// The server's clock (`hello.localTime`): a backup id far ahead of it is refused.
    pub local_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Connects and checks the server answers. The password, when the URI names a user, comes from the secret
/// `mongodb-password` (file, environment or systemd credential).
pub async fn connect(config: &MongoConfig) -> Result<Client> {
    let uri = SafeUri::new(&config.uri);
    let unreachable = |source: mongodb::error::Error| {
        log::debug!("connecting to {uri}: {}", uri.scrub(&source.to_string()));
        let hint = if super::uri::is_authentication(&source) {
            "check the user in [mongodb] uri and the mongodb-password secret"
        } else {
            "is mongod running and the URI in [mongodb] right?"
        };
        Error::Unreachable { hosts: uri.hosts().to_string(), reason: uri.scrub(&super::describe(&source)), hint }
    };
    let mut options = ClientOptions::parse(&config.uri).await.map_err(unreachable)?;
    if let Some(credential) = options.credential.as_mut()
        && credential.password.is_none()
        && credential.username.is_some()
    {
        credential.password = read_secret("mongodb-password", config.password_file.as_deref())?;
    }
    options.app_name = Some(format!("mongo-backup-agent/{}", env!("CARGO_PKG_VERSION")));
    options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
    options.connect_timeout.get_or_insert(Duration::from_secs(5));
    // The driver has no socket timeout: connecting and selecting a server are bounded here, each command by
    // [`OPERATION_TIMEOUT`] and each cursor by `backup.stall_timeout` (see `next_batch`).
    let client = Client::with_options(options).map_err(unreachable)?;
    let admin = client.database("admin");
    match tokio::time::timeout(OPERATION_TIMEOUT, admin.run_command(doc! {"ping": 1})).await {
        Ok(answer) => answer.map_err(unreachable)?,
        Err(_) => {
            return Err(Error::Unreachable {
                hosts: uri.hosts().to_string(),
                reason: format!("no answer to ping within {}s", OPERATION_TIMEOUT.as_secs()),
                hint: "is mongod running and the URI in [mongodb] right?",
            });
        }
    };
    Ok(client)
}

/// How long one command (ping, buildInfo, hello, listCollections, usersInfo) may take: they answer at once on a
/// healthy server, so waiting longer only hides a hung one.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one command-sized operation, failing with `action` in the message when it takes longer than
/// [`OPERATION_TIMEOUT`].
pub async fn bounded<T>(
    action: &str,
    operation: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => result.map_err(Error::mongo(action)),
        Err(_) => Err(Error::Stalled { what: action.to_string(), after: OPERATION_TIMEOUT }),
    }
}

/// The server's code for a namespace that does not exist.
pub const NAMESPACE_NOT_FOUND: i32 = 26;
/// The server's code for "the target of a create or rename exists".
pub const NAMESPACE_EXISTS: i32 = 48;

/// The server's error code in a driver error (command or write error), if the server answered with one.
pub fn server_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m.write_errors.as_ref()?.first().map(|w| w.code),
        _ => None,
    }
}

/// Shuts the driver down before the caller's runtime ends. Dropping a client leaves session cleanup running in
/// background tasks; when the runtime stops under them the driver panics (`connection_requester.rs`), which a
/// one-shot command printed after a successful backup. Bounded, since shutdown waits for any cursor still alive.
pub async fn close(client: Client) {
    if tokio::time::timeout(Duration::from_secs(10), client.shutdown()).await.is_err() {
        log::debug!("MongoDB driver shutdown took over 10 s; leaving it to the process exit");
    }
}

/// Reads the server version and replica-set membership.
pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let admin = client.database("admin");
    let build: Document = bounded("running buildInfo", admin.run_command(doc! {"buildInfo": 1})).await?;
    let hello: Document = bounded("running hello", admin.run_command(doc! {"hello": 1})).await?;
    Ok(ServerInfo {
        version: build.get_str("version").unwrap_or("unknown").to_string(),
        replica_set: hello.get_str("setName").ok().map(str::to_string),
        local_time: hello
            .get_datetime("localTime")
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis())),
    })
}
