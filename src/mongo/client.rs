//! Connecting to the local MongoDB with the password kept out of the URI and out of argv.

use std::time::Duration;

use bson::{Document, doc};
use mongodb::Client;
use mongodb::options::ClientOptions;

use crate::config::{MongoConfig, read_secret};
use crate::error::{Error, Result};

/// What the backup needs to know about the server before it starts.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `buildInfo.version`.
    pub version: String,
    /// Replica set name when the server is a replica-set member (then an oplog exists).
    pub replica_set: Option<String>,
}

/// Connects and checks the server answers. The password, when the URI names a user, comes from the secret
/// `mongodb-password` (file, environment or systemd credential).
pub async fn connect(config: &MongoConfig) -> Result<Client> {
    let unreachable = |source| Error::Unreachable { uri: config.uri.clone(), source };
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
    let client = Client::with_options(options).map_err(unreachable)?;
    client.database("admin").run_command(doc! {"ping": 1}).await.map_err(unreachable)?;
    Ok(client)
}

/// Reads the server version and replica-set membership.
pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let admin = client.database("admin");
    let build: Document = admin.run_command(doc! {"buildInfo": 1}).await.map_err(Error::mongo("running buildInfo"))?;
    let hello: Document = admin.run_command(doc! {"hello": 1}).await.map_err(Error::mongo("running hello"))?;
    Ok(ServerInfo {
        version: build.get_str("version").unwrap_or("unknown").to_string(),
        replica_set: hello.get_str("setName").ok().map(str::to_string),
    })
}
