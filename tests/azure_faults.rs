//! Azurite failing under a running upload, on instances of the tests' own: killed mid-upload the upload fails
//! clearly within its retry budget and commits nothing, and a later upload works; restarted while retries are
//! pending, the same upload completes intact.

mod azure_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use azure_support::{Azurite, Generated, admin_container, shared_key_config, unique_container};
use mongo_backup_agent::store::{self, ObjectMeta, StoreError};
use tokio::io::AsyncReadExt;

/// Creates the container unless it is there (a killed Azurite may or may not have saved it).
async fn ensure_container(endpoint: &str, container: &str) {
    if let Err(e) = admin_container(endpoint, container).create(None).await {
        assert!(e.to_string().contains("ContainerAlreadyExists"), "{e}");
    }
}

async fn wait_for(counter: &std::sync::atomic::AtomicU64, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::Relaxed) < bytes {
        assert!(Instant::now() < deadline, "upload did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sha256_of(store: &dyn store::ObjectStore, key: &str) -> String {
    let mut stream = store.get_stream(key).await.unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut hasher, &buf[..n]);
    }
    hex::encode(sha2::Digest::finalize(hasher))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_killed_mid_upload_fails_clearly_commits_nothing_and_a_later_upload_works() {
    let mut azurite = Azurite::start();
    let endpoint = azurite.endpoint();
    let container = unique_container("killed");
    ensure_container(&endpoint, &container).await;
    let (mut config, _secret) = shared_key_config(&endpoint, &container);
    config.block_size_kib = 1024;
    config.retry_max_secs = 3;
    let store = store::open(&config).unwrap();

    let input = Generated::new(400 << 20, 1);
    let read = input.read.clone();
    let uploader = store.clone();
    let upload =
        tokio::spawn(async move { uploader.put_stream("b1/archive", Box::pin(input), &ObjectMeta::new()).await });
    wait_for(&read, 24 << 20).await;
    azurite.kill();
    let killed_at = Instant::now();
    let err = upload.await.unwrap().unwrap_err();
    let took = killed_at.elapsed();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(msg.contains("cannot reach") && msg.contains(&endpoint) && msg.contains("retry budget of 3 s"), "{msg}");
    assert!(took < Duration::from_secs(15), "failing took {took:?}");
    println!(
        "killed mid-upload after {} MiB: failed in {:.1} s: {msg}",
        read.load(Ordering::Relaxed) >> 20,
        took.as_secs_f64()
    );

    azurite.restart();
    ensure_container(&endpoint, &container).await;
    assert!(matches!(store.get_stream("b1/archive").await.err(), Some(StoreError::NotFound { .. })));
    assert!(store.list("b1/").await.unwrap().is_empty(), "no archive was committed");

    let data = Generated::collect(5 << 20, 2);
    store.put_stream("b2/archive", Box::pin(std::io::Cursor::new(data.clone())), &ObjectMeta::new()).await.unwrap();
    assert_eq!(store.get_bytes("b2/archive").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_restarted_while_retries_are_pending_the_upload_completes() {
    let mut azurite = Azurite::start();
    let endpoint = azurite.endpoint();
    let container = unique_container("restarted");
    ensure_container(&endpoint, &container).await;
    // Give Azurite time to save the container before it is stopped.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (mut config, _secret) = shared_key_config(&endpoint, &container);
    config.block_size_kib = 1024;
    config.retry_max_secs = 60;
    let store = store::open(&config).unwrap();

    let len = 96u64 << 20;
    let input = Generated::new(len, 9);
    let read = input.read.clone();
    let uploader = store.clone();
    let upload =
        tokio::spawn(async move { uploader.put_stream("b1/archive", Box::pin(input), &ObjectMeta::new()).await });
    wait_for(&read, 16 << 20).await;
    azurite.stop();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!upload.is_finished(), "the upload is waiting on retries while Azurite is down");
    azurite.restart();
    println!("Azurite was down for {:.1} s", stopped_at.elapsed().as_secs_f64());
    let summary = upload.await.unwrap().unwrap();
    assert_eq!(summary.bytes, len);
    let expected = {
        let mut g = Generated::new(len, 9);
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
        }
        hex::encode(sha2::Digest::finalize(hasher))
    };
    assert_eq!(summary.sha256, expected);
    assert_eq!(sha256_of(store.as_ref(), "b1/archive").await, expected);
}
