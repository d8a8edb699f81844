//! Point-in-time archiving into Azure Blob (Azurite): a base backup, the archiver storing chunks (encrypted to an
//! age recipient) while writes go on, and a restore to a moment between two chunks, read back from the container,
//! decrypted with the identity and compared document by document with what the server held at that moment.

mod azure_support;
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use azure_support::{create_container, shared_endpoint, shared_key_config, unique_container};
use bson::{Document, Timestamp, doc};
use common::{client, raw_docs, restore_options, unique};
use mongo_backup_agent::backup::{self, BackupId, Progress};
use mongo_backup_agent::crypt::{Identities, Recipients};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::oplog::archiver::{self, ArchiveSettings, Resume, Stop};
use mongo_backup_agent::oplog::chain::Chain;
use mongo_backup_agent::{restore, store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

async fn last_write(client: &mongodb::Client) -> Timestamp {
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await.unwrap();
    hello.get_document("lastWrite").unwrap().get_document("opTime").unwrap().get_timestamp("ts").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_azurite_restore_to_a_moment_between_them() {
    let db = unique("azpitr");
    let source = client().await;
    let coll = source.database(&db).collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "n": 0})).await.unwrap();

    let endpoint = shared_endpoint();
    let container = unique_container("pitr");
    create_container(&endpoint, &container).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[format!("{db}.*")], "");
    let (storage, _secret) = shared_key_config(&endpoint, &container);
    config.storage = mongo_backup_agent::config::StorageConfig { prefix: "t".into(), ..storage };
    let store = store::open(&config.storage).unwrap();
    let filter = NamespaceFilter::new(&config.backup.include, &[]).unwrap();
    let base = backup::run(&config, BackupId::new(chrono::Utc::now()), &filter, store.as_ref(), &Progress::default())
        .await
        .unwrap();

    let key = age::x25519::Identity::generate();
    let recipients = Recipients::parse(&[key.to_public().to_string()]).unwrap();
    let identities = Identities::parse(key.to_string().expose_secret(), "test key").unwrap();
    let settings = ArchiveSettings {
        prefix: "t".into(),
        compression: config.backup.compression_settings(),
        filter,
        span: Duration::from_secs(3600),
        max_bytes: 1 << 20,
        poll: Duration::from_millis(100),
        recipients: Some(recipients),
        fence: None,
    };
    let start = base.oplog.start.unwrap().into();
    let (seals, mut requests) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let archiving = {
        let (store, cancel, status) =
            (store::open(&config.storage).unwrap(), cancel.clone(), Arc::new(Mutex::default()));
        let client = source.clone();
        tokio::spawn(async move {
            let resume = Resume { from: start, inclusive: false };
            archiver::run(&client, store.as_ref(), &settings, resume, &status, &mut requests, &cancel).await
        })
    };
    let seal = || async {
        let (reply, answer) = oneshot::channel();
        seals.send(reply).await.unwrap();
        answer.await.unwrap().unwrap()
    };
    // Two rounds of writes, a chunk sealed after each: the moment between them is the target.
    coll.update_many(doc! {}, doc! {"$inc": {"n": 1}}).await.unwrap();
    coll.delete_one(doc! {"_id": 7}).await.unwrap();
    let middle = last_write(&source).await;
    let expected = raw_docs(&source, &db, "c").await;
    assert!(seal().await >= middle);
    coll.update_many(doc! {}, doc! {"$inc": {"n": 10}}).await.unwrap();
    coll.insert_one(doc! {"_id": 1000}).await.unwrap();
    seal().await;
    cancel.cancel();
    assert!(matches!(archiving.await.unwrap(), Stop::Cancelled));

    let chain = Chain::load(store.as_ref(), "t").await.unwrap();
    assert_eq!(chain.chunks.len(), 2, "{:?}", chain.chunks);
    assert!(chain.verify(store.as_ref(), Some(&identities)).await.is_empty());
    // Stored encrypted: age's header first, and unreadable without the identity.
    let stored = store.get_bytes(&chain.chunks[0].key).await.unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    let without_key = chain.verify(store.as_ref(), None).await;
    assert_eq!(without_key.len(), 2, "{without_key:?}");
    assert!(without_key[0].contains("identity"), "{without_key:?}");
    let path = chain.path_to(middle).unwrap();
    assert_eq!(path.base, base.id);
    let archive = store.get_stream(&backup::archive_key("t", &base.id, base.compression)).await.unwrap();
    let target = unique("azpitr_to");
    let options = restore_options(&[], &[(&format!("{db}.*"), &format!("{target}.*"))], false);
    let report =
        restore::restore_to_point(archive, &source, &options, Some(path.entries(store.as_ref(), Some(&identities))))
            .await
            .unwrap();
    assert!(report.replay.applied >= 101, "{:?}", report.replay);
    assert_eq!(raw_docs(&source, &target, "c").await, expected);
}
