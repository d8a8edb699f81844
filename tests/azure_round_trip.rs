//! The whole pipeline through Azure Blob: MongoDB → backup → Azurite (small blocks, so the archive spans many) →
//! restore into another database, compared byte for byte; the archive blob carries the manifest's sha256.

mod azure_support;
mod common;

use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
use azure_support::{admin_container, create_container, shared_endpoint, shared_key_config, unique_container};
use bson::{Document, doc};
use common::{client, raw_docs, restore_options, unique};
use mongo_backup_agent::backup::{self, BackupId, Progress};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::restore;
use mongo_backup_agent::store::{self, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_azurite_and_restore_round_trips_byte_for_byte() {
    let db = unique("azure");
    let client = client().await;
    let docs = client.database(&db).collection::<Document>("docs");
    docs.insert_many((0..20_000).map(|i| {
        doc! {"_id": i, "name": format!("item {i}"), "tags": ["a", "b"], "n": i as f64 / 3.0, "pad": "x".repeat(100)}
    }))
    .await
    .unwrap();
    docs.create_index(mongodb::IndexModel::builder().keys(doc! {"name": 1}).build()).await.unwrap();
    client.database(&db).collection::<Document>("small").insert_one(doc! {"_id": "only", "x": 1}).await.unwrap();

    let endpoint = shared_endpoint();
    let container = unique_container("roundtrip");
    create_container(&endpoint, &container).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[format!("{db}.*")], "compression = \"none\"");
    let (storage, _secret) = shared_key_config(&endpoint, &container);
    config.storage = mongo_backup_agent::config::StorageConfig {
        prefix: "t".into(),
        block_size_kib: 64,
        download_chunk_kib: 100,
        ..storage
    };
    let store = store::open(&config.storage).unwrap();
    let filter = NamespaceFilter::new(&config.backup.include, &config.backup.exclude).unwrap();
    let manifest =
        backup::run(&config, BackupId::new(chrono::Utc::now()), &filter, store.as_ref(), &Progress::default())
            .await
            .unwrap();

    let archive = backup::archive_key("t", &manifest.id, manifest.compression);
    let keys: Vec<String> = store.list("t/").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys.len(), 2, "archive and manifest: {keys:?}");
    assert!(keys.contains(&archive), "{keys:?}");
    let props = admin_container(&endpoint, &container).blob_client(&archive).get_properties(None).await.unwrap();
    let metadata = props.metadata().unwrap();
    assert_eq!(metadata["sha256"], manifest.archive_sha256);
    assert_eq!(metadata["backup_id"], manifest.id.to_string());
    assert!(manifest.archive_bytes > 3 * 64 * 1024, "the archive spans several blocks");

    // The manifest is written with If-None-Match: *; a second one for the same id is refused and nothing changes.
    let manifest_key = backup::manifest_key("t", &manifest.id);
    let before = store.get_bytes(&manifest_key).await.unwrap();
    let again = store.put_if_absent(&manifest_key, bytes::Bytes::from_static(b"{}")).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists { .. })), "{again:?}");
    assert_eq!(store.get_bytes(&manifest_key).await.unwrap(), before);

    let target = format!("{db}_r");
    let renames = [(format!("{db}.$c$"), format!("{target}.$c$"))];
    let options = restore_options(&[], &[(&renames[0].0, &renames[0].1)], false);
    let report = restore::restore(store.get_stream(&archive).await.unwrap(), &client, &options).await.unwrap();
    assert_eq!(report.documents(), 20_001);
    for coll in ["docs", "small"] {
        assert_eq!(raw_docs(&client, &target, coll).await, raw_docs(&client, &db, coll).await, "{coll} differs");
    }
    let restored_indexes = common::indexes(&client, &target, "docs").await;
    assert_eq!(restored_indexes, common::indexes(&client, &db, "docs").await);
    store.delete(&archive).await.unwrap();
}
