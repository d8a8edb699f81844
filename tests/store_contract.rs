//! One contract for every object store (STYLE.md practice 4): the same tests run against the filesystem store and
//! against Azure Blob (Azurite), signed with an account key and with a SAS. A new backend proves itself by adding a
//! line to `backends!` below.

mod azure_support;

use std::sync::Arc;
use std::time::Duration;

use azure_support::{
    Generated, account_sas, create_container, sas_config, sha256_hex, shared_endpoint, shared_key_config,
    unique_container,
};
use bytes::Bytes;
use mongo_backup_agent::store::{self, FilesystemStore, ObjectMeta, ObjectStore, StoreError};
use tokio::io::AsyncReadExt;

/// A store under test plus whatever must live as long as it (temp dirs holding data or secrets).
struct Fixture {
    store: Arc<dyn ObjectStore>,
    _keep: Vec<tempfile::TempDir>,
}

/// Small blocks and chunks so that a few hundred KiB already spans many blocks and ranged reads.
fn small_parts(config: &mut mongo_backup_agent::config::StorageConfig) {
    config.block_size_kib = 64;
    config.upload_concurrency = 3;
    config.download_chunk_kib = 96;
    config.download_concurrency = 3;
}

async fn filesystem() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture { store: Arc::new(FilesystemStore::new(dir.path().join("root"))), _keep: vec![dir] }
}

async fn azure_shared_key() -> Fixture {
    let endpoint = shared_endpoint();
    let container = unique_container("contract-key");
    create_container(&endpoint, &container).await;
    let (mut config, secret) = shared_key_config(&endpoint, &container);
    small_parts(&mut config);
    Fixture { store: store::open(&config).unwrap(), _keep: vec![secret] }
}

async fn azure_sas() -> Fixture {
    let endpoint = shared_endpoint();
    let container = unique_container("contract-sas");
    create_container(&endpoint, &container).await;
    let sas = account_sas("racwdl", chrono::Utc::now() + chrono::Duration::hours(2));
    let (mut config, secret) = sas_config(&endpoint, &container, &sas);
    small_parts(&mut config);
    Fixture { store: store::open(&config).unwrap(), _keep: vec![secret] }
}

fn body(data: Vec<u8>) -> store::ByteStream {
    Box::pin(std::io::Cursor::new(data))
}

async fn read_all(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut stream = store.get_stream(key).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(out)
}

// --- the contract -------------------------------------------------------------------------------------------

async fn round_trips_small_empty_and_multi_part_objects(f: Fixture) {
    let s = f.store.as_ref();
    let meta = ObjectMeta::new();
    for (key, len) in [("rt/empty", 0u64), ("rt/small", 11), ("rt/multi-part", 1_000_003)] {
        let data = Generated::collect(len, 7);
        let summary = s.put_stream(key, body(data.clone()), &meta).await.unwrap();
        assert_eq!(summary.bytes, len, "{key}");
        assert_eq!(summary.sha256, sha256_hex(&data), "{key}");
        let back = read_all(s, key).await.unwrap();
        assert!(back == data, "{key}: read back {} bytes, wrote {}", back.len(), data.len());
    }
    assert_eq!(s.get_bytes("rt/small").await.unwrap(), Generated::collect(11, 7));
}

async fn keys_with_spaces_and_punctuation_round_trip(f: Fixture) {
    let s = f.store.as_ref();
    let key = "odd names/2024-01-01T00:00:00Z/a+b=c ü%20.archive";
    s.put_stream(key, body(b"odd".to_vec()), &ObjectMeta::new()).await.unwrap();
    assert_eq!(s.get_bytes(key).await.unwrap(), b"odd");
    let listed = s.list("odd names/").await.unwrap();
    assert_eq!(listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), [key]);
    s.delete(key).await.unwrap();
    assert!(s.list("odd names/").await.unwrap().is_empty());
}

async fn put_stream_overwrites(f: Fixture) {
    let s = f.store.as_ref();
    s.put_stream("ow/x", body(vec![1; 300_000]), &ObjectMeta::new()).await.unwrap();
    s.put_stream("ow/x", body(vec![2; 10]), &ObjectMeta::new()).await.unwrap();
    assert_eq!(s.get_bytes("ow/x").await.unwrap(), vec![2; 10]);
}

async fn a_failing_body_commits_nothing(f: Fixture) {
    let s = f.store.as_ref();
    // Fails after several blocks have been staged.
    let failing = Generated::new(2_000_000, 3).failing_after(700_000);
    let err = s.put_stream("fail/archive", Box::pin(failing), &ObjectMeta::new()).await.unwrap_err();
    assert!(matches!(err, StoreError::Input { .. }), "{err}");
    assert!(err.to_string().contains("generated input failure"), "{err}");
    assert!(matches!(s.get_stream("fail/archive").await.err(), Some(StoreError::NotFound { .. })));
    assert!(s.list("fail/").await.unwrap().is_empty());
    // An earlier complete object under the key survives a failed overwrite.
    s.put_stream("fail/archive", body(b"good".to_vec()), &ObjectMeta::new()).await.unwrap();
    let failing = Generated::new(2_000_000, 3).failing_after(500_000);
    assert!(s.put_stream("fail/archive", Box::pin(failing), &ObjectMeta::new()).await.is_err());
    assert_eq!(s.get_bytes("fail/archive").await.unwrap(), b"good");
}

/// Yields `head` then never ends: the upload can only stop by being dropped.
struct Stalls(Option<Vec<u8>>);

impl tokio::io::AsyncRead for Stalls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.take() {
            Some(head) => {
                buf.put_slice(&head[..head.len().min(buf.remaining())]);
                std::task::Poll::Ready(Ok(()))
            }
            None => std::task::Poll::Pending,
        }
    }
}

async fn a_dropped_upload_commits_nothing(f: Fixture) {
    let s = f.store.as_ref();
    let meta = ObjectMeta::new();
    let upload = s.put_stream("drop/archive", Box::pin(Stalls(Some(vec![5; 200_000]))), &meta);
    assert!(tokio::time::timeout(Duration::from_millis(500), upload).await.is_err(), "upload cannot finish");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.list("drop/").await.unwrap().is_empty());
    assert!(matches!(s.get_stream("drop/archive").await.err(), Some(StoreError::NotFound { .. })));
}

async fn list_is_by_prefix_sorted_and_sized(f: Fixture) {
    let s = f.store.as_ref();
    let before = chrono::Utc::now() - chrono::Duration::seconds(120);
    for (key, len) in [("ls/b/2", 2usize), ("ls/a/1", 1), ("ls/a/10", 10), ("lsx/other", 3), ("ls/b/1", 200_000)] {
        s.put_stream(key, body(vec![0; len]), &ObjectMeta::new()).await.unwrap();
    }
    let all = s.list("ls/").await.unwrap();
    let keys: Vec<_> = all.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, [("ls/a/1", 1), ("ls/a/10", 10), ("ls/b/1", 200_000), ("ls/b/2", 2)]);
    assert!(
        all.iter()
            .all(|o| o.last_modified > before && o.last_modified < chrono::Utc::now() + chrono::Duration::seconds(120))
    );
    assert_eq!(s.list("ls/a/").await.unwrap().len(), 2);
    assert_eq!(s.list("ls").await.unwrap().len(), 5);
    assert!(s.list("none/").await.unwrap().is_empty());
}

async fn delete_removes_and_tolerates_missing(f: Fixture) {
    let s = f.store.as_ref();
    s.put_stream("del/x", body(vec![1]), &ObjectMeta::new()).await.unwrap();
    s.delete("del/x").await.unwrap();
    assert!(matches!(s.get_stream("del/x").await.err(), Some(StoreError::NotFound { .. })));
    s.delete("del/x").await.unwrap();
    s.delete("never/was").await.unwrap();
}

async fn put_if_absent_never_overwrites(f: Fixture) {
    let s = f.store.as_ref();
    s.put_if_absent("m/manifest.json", Bytes::from_static(b"{\"first\":true}")).await.unwrap();
    let err = s.put_if_absent("m/manifest.json", Bytes::from_static(b"{\"second\":true}")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    let err = s.put_if_absent("m/manifest.json", Bytes::from_static(b"{\"first\":true}")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "same bytes are refused too: {err}");
    assert_eq!(s.get_bytes("m/manifest.json").await.unwrap(), b"{\"first\":true}");
    // Racing creators: exactly one wins.
    let racers = (0..6u8).map(|i| s.put_if_absent("m/race.json", Bytes::from(vec![i; 100])));
    let results = futures::future::join_all(racers).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::AlreadyExists { .. }))));
}

async fn missing_objects_are_not_found(f: Fixture) {
    let s = f.store.as_ref();
    assert!(matches!(s.get_stream("no/such").await.err(), Some(StoreError::NotFound { .. })));
    assert!(matches!(s.get_bytes("no/such").await.err(), Some(StoreError::NotFound { .. })));
    assert!(!s.describe().is_empty());
}

async fn keys_that_escape_are_refused(f: Fixture) {
    let s = f.store.as_ref();
    for key in ["../x", "/abs", "a//b", "a/./b", ""] {
        let put = s.put_stream(key, body(vec![1]), &ObjectMeta::new()).await;
        assert!(matches!(put, Err(StoreError::InvalidKey(_))), "{key:?}");
        assert!(matches!(s.get_stream(key).await.err(), Some(StoreError::InvalidKey(_))), "{key:?}");
        assert!(matches!(s.delete(key).await, Err(StoreError::InvalidKey(_))), "{key:?}");
        assert!(matches!(s.put_if_absent(key, Bytes::new()).await, Err(StoreError::InvalidKey(_))), "{key:?}");
    }
}

async fn a_reader_may_stop_early(f: Fixture) {
    let s = f.store.as_ref();
    s.put_stream("early/x", body(Generated::collect(900_000, 1)), &ObjectMeta::new()).await.unwrap();
    let mut stream = s.get_stream("early/x").await.unwrap();
    let mut head = vec![0u8; 1000];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head, Generated::collect(1000, 1));
    drop(stream);
    // The store is still usable afterwards.
    assert_eq!(read_all(s, "early/x").await.unwrap().len(), 900_000);
}

async fn put_bytes_replaces_a_small_object_whole(f: Fixture) {
    let s = f.store.as_ref();
    s.put_bytes(".locks/members/m1.json", b"{\"first\":true}".to_vec()).await.unwrap();
    s.put_bytes(".locks/members/m1.json", b"{}".to_vec()).await.unwrap();
    assert_eq!(s.get_bytes(".locks/members/m1.json").await.unwrap(), b"{}");
    let listed = s.list(".locks/members/").await.unwrap();
    assert_eq!(listed.iter().map(|o| (o.key.as_str(), o.size)).collect::<Vec<_>>(), [(".locks/members/m1.json", 2)]);
}

async fn a_lease_is_exclusive_until_released(f: Fixture) {
    let s = f.store.as_ref();
    let lease = Duration::from_secs(15);
    assert!(!s.lease_held(".locks/backup").await.unwrap(), "a lock never taken is free");
    let first = s.try_lease(".locks/backup", lease).await.unwrap().expect("a free lock is taken");
    assert!(s.lease_held(".locks/backup").await.unwrap());
    assert!(s.try_lease(".locks/backup", lease).await.unwrap().is_none(), "a held lock is refused");
    first.renew().await.unwrap();
    // Racing contenders for another lock: exactly one wins.
    let racers = (0..5).map(|_| s.try_lease(".locks/pitr", lease));
    let won: Vec<_> = futures::future::join_all(racers).await.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(won.len(), 1);
    first.release().await.unwrap();
    drop(first);
    assert!(!s.lease_held(".locks/backup").await.unwrap(), "a released lock is free");
    let second = s.try_lease(".locks/backup", lease).await.unwrap().expect("a released lock is free");
    assert!(s.try_lease(".locks/backup", lease).await.unwrap().is_none());
    second.release().await.unwrap();
}

/// One module per backend, one test per contract item.
macro_rules! contract {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! backends {
    ($($backend:ident),*) => {
        $(
            contract!($backend:
                round_trips_small_empty_and_multi_part_objects,
                keys_with_spaces_and_punctuation_round_trip,
                put_stream_overwrites,
                a_failing_body_commits_nothing,
                a_dropped_upload_commits_nothing,
                list_is_by_prefix_sorted_and_sized,
                delete_removes_and_tolerates_missing,
                put_if_absent_never_overwrites,
                missing_objects_are_not_found,
                keys_that_escape_are_refused,
                a_reader_may_stop_early,
                put_bytes_replaces_a_small_object_whole,
                a_lease_is_exclusive_until_released,
            );
        )*
    };
}

backends!(filesystem, azure_shared_key, azure_sas);
