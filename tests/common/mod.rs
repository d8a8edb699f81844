//! Shared helpers for tests against the real server (`MBA_TEST_MONGODB_URI`, set by tests/harness/with-services.sh).
#![allow(dead_code)]

pub mod daemon;
pub mod http_receiver;
pub mod prometheus;

use std::path::Path;

use bson::{Document, RawDocumentBuf, doc};
use futures::TryStreamExt;
use mongo_backup_agent::backup::{self, BackupId, Manifest, Progress};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::restore::{Rename, RestoreOptions};
use mongo_backup_agent::store::FilesystemStore;
use mongodb::Client;

/// The server under test; tests are never skipped, so a missing variable is a loud failure.
pub fn uri() -> String {
    std::env::var("MBA_TEST_MONGODB_URI")
        .expect("MBA_TEST_MONGODB_URI is not set: run the tests with `make test` (tests/harness/with-services.sh)")
}

/// A database name unique to this test run, so tests can share one server in parallel.
pub fn unique(name: &str) -> String {
    format!("t_{name}_{:06x}", rand::random::<u32>() & 0xff_ffff)
}

pub async fn client() -> Client {
    Client::with_uri_str(uri()).await.unwrap()
}

/// A config backing up `include` from the test server into `dir`.
pub fn config(dir: &Path, include: &[String], extra: &str) -> Config {
    Config::parse(&config_text(dir, include, extra)).unwrap()
}

/// Config text storing under `store_dir` with prefix `t`; `extra` lines go into `[backup]`.
fn config_text(store_dir: &Path, include: &[String], extra: &str) -> String {
    format!(
        "[mongodb]\nuri = {:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[backup]\ninclude = {:?}\n{extra}",
        uri(),
        store_dir.display().to_string(),
        include
    )
}

pub async fn run_backup(config: &Config) -> Manifest {
    let store = FilesystemStore::new(&config.storage.path);
    let filter = NamespaceFilter::new(&config.backup.include, &config.backup.exclude).unwrap();
    backup::run(config, BackupId::new(chrono::Utc::now()), &filter, &store, &Progress::default()).await.unwrap()
}

/// Restore options for tests: `include` (all when empty), `--nsFrom/--nsTo` pairs, `--drop`; oplog replayed, users
/// and roles left alone.
pub fn restore_options(include: &[String], renames: &[(&str, &str)], drop: bool) -> RestoreOptions {
    RestoreOptions {
        filter: NamespaceFilter::new(include, &[]).unwrap(),
        renames: renames.iter().map(|(f, t)| Rename::new(f, t).unwrap()).collect(),
        drop,
        dry_run: false,
        replay_oplog: true,
        oplog_skip_unknown: false,
        users_and_roles: false,
        parallel: 4,
        batch_size: 1000,
    }
}

/// Every document of a collection as raw bytes, sorted by `_id` so source and restore compare exactly.
pub async fn raw_docs(client: &Client, db: &str, coll: &str) -> Vec<Vec<u8>> {
    client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.into_bytes())
        .collect()
}

pub async fn indexes(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    let mut specs: Vec<Document> = client
        .database(db)
        .collection::<Document>(coll)
        .list_indexes()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|m| bson::to_document(&m).unwrap())
        .collect();
    specs.sort_by_key(|d| d.get_str("name").unwrap_or_default().to_string());
    specs
}

pub async fn collection_options(client: &Client, db: &str, coll: &str) -> Document {
    let specs: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! {"listCollections": 1, "filter": {"name": coll}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    specs[0].get_document("options").cloned().unwrap_or_default()
}

/// Runs the binary with `args`; returns exit code, stdout, stderr.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mongo-backup-agent")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `config` text to a file in `dir` and returns its path.
pub fn config_file(dir: &Path, include: &[String]) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, config_text(&dir.join("store"), include, "")).unwrap();
    path.display().to_string()
}

/// Starts a server of our own (so it can be killed) on a free port; returns the child and its URI.
pub fn own_server(dir: &std::path::Path) -> (std::process::Child, String) {
    own_server_with(dir, &[])
}

/// [`own_server`] with extra SecantusDB flags (e.g. a small oplog).
pub fn own_server_with(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    own_server_on(dir, port, extra)
}

/// A server of our own that requires authentication, with user `backup` (role root) whose password is
/// `password`. Returns the child and a URI with the user but no password.
pub async fn own_auth_server(dir: &std::path::Path, password: &str) -> (std::process::Child, String) {
    let (mut child, uri) = own_server(dir);
    let client = Client::with_uri_str(&uri).await.unwrap();
    let create = doc! {"createUser": "backup", "pwd": password, "roles": [{"role": "root", "db": "admin"}]};
    client.database("admin").run_command(create).await.unwrap();
    client.shutdown().await;
    // SIGTERM, not SIGKILL: the server checkpoints the new user on a clean shutdown.
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    let port: u16 = uri.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    let (child, uri) = own_server_on(dir, port, &["--auth"]);
    (child, uri.replacen("mongodb://", "mongodb://backup@", 1) + "&authSource=admin")
}

fn own_server_on(dir: &std::path::Path, port: u16, extra: &[&str]) -> (std::process::Child, String) {
    let bin = std::env::var("MBA_SECANTUSD").expect("MBA_SECANTUSD is set by tests/harness/with-services.sh");
    let child = std::process::Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"])
        .arg(dir)
        .args(["--cache-size", "256M"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child, format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=2000"))
}

/// A stock MongoDB Database Tools 100.18.0 binary (`mongodump`, `mongorestore`, `bsondump`), checksum-verified by
/// tests/harness/install-mongo-tools.sh; tests are never skipped, so a missing variable is a loud failure.
pub fn mongo_tool(name: &str) -> std::path::PathBuf {
    let dir = std::env::var("MBA_MONGO_TOOLS_DIR").expect(
        "MBA_MONGO_TOOLS_DIR is not set: run the tests with `make test` (tests/harness/with-services.sh installs the \
         stock mongo-tools)",
    );
    let path = Path::new(&dir).join(name);
    assert!(path.is_file(), "{} is missing: see tests/harness/install-mongo-tools.sh", path.display());
    path
}
