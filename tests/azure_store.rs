//! What only the Azure store does, against the shared Azurite: blob metadata, service-checked block MD5s, the
//! `url` form of the config, and clear, immediate failures for a wrong key, an expired SAS, a SAS without write
//! permission and a missing container (no retry storm). Block growth is in `azure_large.rs`.

mod azure_support;

use std::time::{Duration, Instant};

use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlockBlobClientStageBlockOptions, BlockListType,
};
use azure_support::{
    DEV_ACCOUNT, Generated, account_sas, admin_container, connection_string, create_container, sas_config, secret_file,
    sha256_hex, shared_endpoint, shared_key_config, unique_container,
};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::store::{self, ObjectMeta, StoreError};

#[tokio::test]
async fn archive_blobs_carry_sha256_size_and_the_callers_metadata() {
    let endpoint = shared_endpoint();
    let container = unique_container("meta");
    create_container(&endpoint, &container).await;
    let (mut config, _secret) = shared_key_config(&endpoint, &container);
    config.block_size_kib = 256;
    let store = store::open(&config).unwrap();
    let data = Generated::collect(3 << 20, 11);
    let meta: ObjectMeta = [
        ("backup-id".to_string(), "2026-01-02T03-04-05Z".to_string()),
        ("agent_version".to_string(), "0.1.0".to_string()),
    ]
    .into();
    let summary =
        store.put_stream("mongodb/x/archive.zst", Box::pin(std::io::Cursor::new(data.clone())), &meta).await.unwrap();
    let blob = admin_container(&endpoint, &container).blob_client("mongodb/x/archive.zst");
    let props = blob.get_properties(None).await.unwrap();
    let metadata = props.metadata().unwrap();
    assert_eq!(metadata["sha256"], sha256_hex(&data));
    assert_eq!(metadata["sha256"], summary.sha256);
    assert_eq!(metadata["size"], (3u64 << 20).to_string());
    assert_eq!(metadata["backup_id"], "2026-01-02T03-04-05Z");
    assert_eq!(metadata["agent_version"], "0.1.0");
    let blocks = blob.block_blob_client().get_block_list(BlockListType::Committed, None).await.unwrap();
    let blocks = blocks.into_model().unwrap().committed_blocks.unwrap_or_default();
    assert_eq!(blocks.len(), 12, "3 MiB in 256 KiB blocks");
}

#[tokio::test]
async fn the_service_checks_each_blocks_md5() {
    // Our blocks carry a transactional Content-MD5; this shows the service (here Azurite) really checks it, so a
    // block corrupted on the way is refused rather than committed.
    let endpoint = shared_endpoint();
    let container = unique_container("md5");
    create_container(&endpoint, &container).await;
    let blob = admin_container(&endpoint, &container).blob_client("x").block_blob_client();
    let options =
        BlockBlobClientStageBlockOptions { transactional_content_md5: Some(vec![0; 16]), ..Default::default() };
    let err =
        blob.stage_block(b"block-0", 5, bytes::Bytes::from_static(b"hello").into(), Some(options)).await.unwrap_err();
    // Azure answers Md5Mismatch; Azurite says "Provided contentMD5 doesn't match".
    let text = err.to_string();
    assert!(text.contains("Md5Mismatch") || text.contains("contentMD5 doesn't match"), "{text}");
}

#[tokio::test]
async fn the_url_form_selects_account_container_and_prefix() {
    let endpoint = shared_endpoint();
    let container = unique_container("url");
    create_container(&endpoint, &container).await;
    let (_dir, secret) = secret_file(&connection_string(&endpoint));
    let toml = format!(
        "[storage]\nurl = \"{endpoint}/{container}/mongodb/vm1\"\nauth = \"connection-string\"\n\
         connection_string_file = \"{}\"\n",
        secret.display()
    );
    let config = Config::parse(&toml).unwrap();
    assert_eq!(config.storage.key_prefix(), "mongodb/vm1");
    let store = store::open(&config.storage).unwrap();
    assert_eq!(store.describe(), format!("azure container {DEV_ACCOUNT}/{container}"));
    let key = store::join_key(&config.storage.key_prefix(), "b1/archive");
    store.put_stream(&key, Box::pin(std::io::Cursor::new(b"x".to_vec())), &ObjectMeta::new()).await.unwrap();
    assert_eq!(store.list("mongodb/vm1/").await.unwrap()[0].key, "mongodb/vm1/b1/archive");
}

/// Runs `op`, expecting a refusal that comes back well inside the retry budget.
async fn refused_fast<T: std::fmt::Debug>(op: impl std::future::Future<Output = Result<T, StoreError>>) -> String {
    let started = Instant::now();
    let err = op.await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}: retried a permanent error", started.elapsed());
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    err.to_string()
}

#[tokio::test]
async fn a_wrong_account_key_is_refused_at_once_with_what_to_check() {
    let endpoint = shared_endpoint();
    let container = unique_container("wrongkey");
    create_container(&endpoint, &container).await;
    let wrong = connection_string(&endpoint).replace("Eby8", "Xby8");
    let (_dir, secret) = secret_file(&wrong);
    let (mut config, _keep) = shared_key_config(&endpoint, &container);
    config.connection_string_file = Some(secret);
    config.retry_max_secs = 60;
    let store = store::open(&config).unwrap();
    let msg =
        refused_fast(store.put_stream("k", Box::pin(std::io::Cursor::new(vec![1; 10])), &ObjectMeta::new())).await;
    for needle in ["403", DEV_ACCOUNT, &container, "AccountKey", "clock"] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert!(!msg.contains("Xby8"), "the key leaked into: {msg}");
    refused_fast(store.list("")).await;
}

#[tokio::test]
async fn an_expired_sas_is_refused_at_once_with_what_to_check() {
    let endpoint = shared_endpoint();
    let container = unique_container("expired");
    create_container(&endpoint, &container).await;
    let sas = account_sas("racwdl", chrono::Utc::now() - chrono::Duration::hours(1));
    let (mut config, _keep) = sas_config(&endpoint, &container, &sas);
    config.retry_max_secs = 60;
    let store = store::open(&config).unwrap();
    let msg = refused_fast(store.get_bytes("any")).await;
    for needle in ["403", "expired", "storage.sas_file", &container] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    let sig = sas.split("sig=").nth(1).unwrap();
    assert!(!msg.contains(sig), "the signature leaked into: {msg}");
}

#[tokio::test]
async fn a_sas_without_write_permission_fails_writes_only() {
    // The SAS counterpart of an identity lacking its role: reading works, writing is refused with the permissions
    // it needs named.
    let endpoint = shared_endpoint();
    let container = unique_container("readonly");
    create_container(&endpoint, &container).await;
    let sas = account_sas("rl", chrono::Utc::now() + chrono::Duration::hours(1));
    let (config, _keep) = sas_config(&endpoint, &container, &sas);
    let store = store::open(&config).unwrap();
    assert!(store.list("").await.unwrap().is_empty());
    let msg = refused_fast(store.put_if_absent("m/manifest.json", bytes::Bytes::from_static(b"{}"))).await;
    assert!(msg.contains("403") && msg.contains("sp=racwdl"), "{msg}");
}

#[tokio::test]
async fn a_missing_container_is_named() {
    let endpoint = shared_endpoint();
    let (config, _keep) = shared_key_config(&endpoint, "no-such-container");
    let store = store::open(&config).unwrap();
    let msg = refused_fast(store.list("")).await;
    assert!(msg.contains("container no-such-container does not exist") && msg.contains(DEV_ACCOUNT), "{msg}");
    let msg = refused_fast(store.put_stream("k", Box::pin(std::io::Cursor::new(vec![1])), &ObjectMeta::new())).await;
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn secrets_missing_from_every_source_are_named_at_open() {
    let mut config =
        azure_support::base_config(&shared_endpoint(), "cont1", mongo_backup_agent::config::AzureAuth::Sas);
    config.sas_file = Some("/nonexistent/sas".into());
    let err = store::open(&config).err().unwrap().to_string();
    assert!(err.contains("azure-sas") && err.contains("/nonexistent/sas"), "{err}");
}
