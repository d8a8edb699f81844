//! `check`: the config parses and keeps its secrets to itself, MongoDB answers, and the store accepts a write, a
//! read and a delete. A finding (a config file others can read while it holds a password) exits 1 after the other
//! checks ran.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use mongo_backup_agent::config::Config;
use mongo_backup_agent::error::{EXIT_FAILED, EXIT_OK, Error, Result};
use mongo_backup_agent::{mongo, store};

pub async fn run(config_path: &Path, config: &Config) -> Result<i32> {
    let finding = exposed_secret(config_path, config);
    match &finding {
        None => println!("config: ok"),
        Some(problem) => println!("config: WARNING: {problem}"),
    }
    let client = mongo::connect(&config.mongodb).await?;
    let info = mongo::server_info(&client).await;
    mongo::close(client).await;
    let info = info?;
    let rs = info.replica_set.map_or("standalone (no point-in-time oplog)".to_string(), |r| format!("replica set {r}"));
    println!("mongodb: ok, server {} , {rs}", info.version);
    let store = store::open(&config.storage)?;
    let key = store::join_key(&config.storage.prefix, &format!(".probe-{:08x}", rand::random::<u32>()));
    let payload = bytes::Bytes::from_static(b"mongo-backup-agent probe");
    store.put_if_absent(&key, payload.clone()).await?;
    let read = store.get_bytes(&key).await;
    store.delete(&key).await?;
    if read? != payload {
        return Err(Error::Refused(format!("{}: probe object read back differently", store.describe())));
    }
    println!("store: ok, {} accepts write, read and delete", store.describe());
    if let Some(problem) = finding {
        eprintln!("mongo-backup-agent: check found a problem: {problem}");
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

/// Says so when the config file holds a secret inline and its mode lets group or others read it.
fn exposed_secret(path: &Path, config: &Config) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    let uri_password = |uri: &str| !mongo::SafeUri::new(uri).scrub(uri).eq(uri);
    let holds = [
        (uri_password(&config.mongodb.uri), "a password in [mongodb] uri"),
        (config.verify.scratch_uri.as_deref().is_some_and(uri_password), "a password in [verify] scratch_uri"),
        (config.storage.url.as_deref().is_some_and(|u| u.contains("sig=")), "a SAS signature in [storage] url"),
    ];
    let (_, what) = holds.iter().find(|(held, _)| *held)?;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds {what} and is readable by {} (mode {mode:04o}): run `chmod 600 {0}`, or move the secret out of \
             the file (the mongodb-password secret; see the README, Secrets)",
            path.display(),
            if mode & 0o007 != 0 { "everyone" } else { "its group" },
        )
    })
}
