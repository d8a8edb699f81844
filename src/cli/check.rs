//! `check`: the config parses, MongoDB answers, and the store accepts a write, a read and a delete.

use mongo_backup_agent::config::Config;
use mongo_backup_agent::error::{EXIT_OK, Error, Result};
use mongo_backup_agent::{mongo, store};

pub async fn run(config: &Config) -> Result<i32> {
    println!("config: ok");
    let client = mongo::connect(&config.mongodb).await?;
    let info = mongo::server_info(&client).await?;
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
    Ok(EXIT_OK)
}
