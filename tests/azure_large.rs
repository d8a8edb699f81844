//! Large streams. A generated archive of 1 GiB (or `MBA_TEST_LARGE_GIB`) streamed to Azurite and back, in a child
//! process so that its peak RSS (VmHWM from /proc, reset between phases) measures only the store: the upload and
//! the download must each stay under 256 MiB. The same child times a bare `stage_block` loop and a bare SDK
//! download of the same size against the same Azurite, so the store's throughput can be read next to what the SDK
//! alone achieves. And block growth: a stream of more than 50,000 first-size blocks commits. The two run side by
//! side (different Azurite instances), which keeps the suite's wall time down.

mod azure_support;
mod child;

use std::sync::Arc;
use std::time::Instant;

use azure_storage_blob::models::BlockListType;
use azure_support::{
    Azurite, Generated, admin_container, create_container, peak_rss_kib, sha256_hex, shared_endpoint,
    shared_key_config, unique_container,
};
use bytes::Bytes;
use futures::StreamExt;
use mongo_backup_agent::store::{self, ObjectMeta, ObjectStore};
use tokio::io::AsyncReadExt;

const CHILD_ENV: &str = "MBA_LARGE_CHILD";
const LIMIT_KIB: u64 = 256 * 1024;

fn gib() -> u64 {
    std::env::var("MBA_TEST_LARGE_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Resets VmHWM to the current RSS, so the next reading is the peak of the next phase only.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

#[test]
fn a_large_archive_round_trips_with_peak_rss_under_256_mib() {
    let output = child::run_ignored("large_round_trip_child", CHILD_ENV, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    let value = |name: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT {name}=")))
            .unwrap_or_else(|| panic!("no {name} in child output:\n{stdout}"))
            .trim()
            .parse()
            .unwrap()
    };
    for line in stdout.lines().filter(|l| l.starts_with("RESULT") || l.starts_with("SUMMARY")) {
        println!("{line}");
    }
    let upload_peak = value("upload_peak_rss_kib") as u64;
    let download_peak = value("download_peak_rss_kib") as u64;
    assert!(upload_peak < LIMIT_KIB, "upload peak RSS {} MiB", upload_peak / 1024);
    assert!(download_peak < LIMIT_KIB, "download peak RSS {} MiB", download_peak / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_large_archive_round_trips_with_peak_rss_under_256_mib in a child process"]
async fn large_round_trip_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let len = gib() << 30;
    let endpoint = shared_endpoint();
    let container = unique_container("large");
    create_container(&endpoint, &container).await;
    let (config, _secret) = shared_key_config(&endpoint, &container);
    let store = store::open(&config).unwrap();
    println!("\nRESULT bytes={len}");
    println!("RESULT baseline_rss_kib={}", peak_rss_kib());

    // The store: generated input -> put_stream (default 8 MiB blocks, 4 in flight, MD5 per block, sha256).
    reset_peak_rss();
    let started = Instant::now();
    let summary =
        store.put_stream("large/archive", Box::pin(Generated::new(len, 3)), &ObjectMeta::new()).await.unwrap();
    let upload_secs = started.elapsed().as_secs_f64();
    assert_eq!(summary.bytes, len);
    let upload_peak = peak_rss_kib();
    println!("RESULT upload_peak_rss_kib={upload_peak}");
    println!("RESULT upload_mib_s={:.1}", mib_per_s(len, upload_secs));

    // The store: get_stream (8 MiB ranges, 4 in flight), hashed as a restore would.
    reset_peak_rss();
    let started = Instant::now();
    let mut stream = store.get_stream("large/archive").await.unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        sha2::Digest::update(&mut hasher, &buf[..n]);
    }
    let download_secs = started.elapsed().as_secs_f64();
    assert_eq!(total, len);
    assert_eq!(hex::encode(sha2::Digest::finalize(hasher)), summary.sha256);
    let download_peak = peak_rss_kib();
    println!("RESULT download_peak_rss_kib={download_peak}");
    println!("RESULT download_mib_s={:.1}", mib_per_s(len, download_secs));

    // Baseline: the SDK alone, same block size and concurrency, one pre-made block sent over and over (no input,
    // no hashing), then the SDK's own managed download.
    let blob = Arc::new(admin_container(&endpoint, &container).blob_client("bare/archive").block_blob_client());
    let block = Bytes::from(Generated::collect(8 << 20, 4));
    let blocks = len / block.len() as u64;
    let started = Instant::now();
    let ids: Vec<Vec<u8>> = (0..blocks).map(|i| format!("{i:08}").into_bytes()).collect();
    futures::stream::iter(ids.clone())
        .map(|id| {
            let (blob, block) = (blob.clone(), block.clone());
            async move { blob.stage_block(&id, block.len() as u64, block.into(), None).await.unwrap() }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let list = azure_storage_blob::models::BlockLookupList { latest: Some(ids), ..Default::default() };
    blob.commit_block_list(list.try_into().unwrap(), None).await.unwrap();
    let bare_upload_secs = started.elapsed().as_secs_f64();
    println!("RESULT bare_stage_block_mib_s={:.1}", mib_per_s(len, bare_upload_secs));
    let started = Instant::now();
    let client = admin_container(&endpoint, &container).blob_client("bare/archive");
    let mut body = client.download(None).await.unwrap().body;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        total += chunk.unwrap().len() as u64;
    }
    assert_eq!(total, len);
    let bare_download_secs = started.elapsed().as_secs_f64();
    println!("RESULT bare_sdk_download_mib_s={:.1}", mib_per_s(len, bare_download_secs));
    println!(
        "SUMMARY {} GiB: store upload {:.0} MiB/s (bare stage_block loop {:.0}), store download {:.0} MiB/s (bare SDK \
         download {:.0}); peak RSS upload {} MiB, download {} MiB",
        gib(),
        mib_per_s(len, upload_secs),
        mib_per_s(len, bare_upload_secs),
        mib_per_s(len, download_secs),
        mib_per_s(len, bare_download_secs),
        upload_peak / 1024,
        download_peak / 1024
    );
    admin_container(&endpoint, &container).delete(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_grow_so_a_stream_of_more_than_50000_first_size_blocks_commits() {
    // Some 11,000 tiny requests: a fresh in-memory Azurite of our own answers them fastest (the shared one's
    // bookkeeping slows down as other tests fill it).
    let azurite = Azurite::start_in_memory();
    let endpoint = azurite.endpoint();
    let container = unique_container("growth");
    create_container(&endpoint, &container).await;
    let (mut config, _secret) = shared_key_config(&endpoint, &container);
    config.block_size_kib = 1; // 1 KiB first blocks
    config.upload_concurrency = 8;
    let store = store::open(&config).unwrap();
    let len: u64 = 52 << 20; // 53,248 first-size blocks' worth
    assert!(len / 1024 > 50_000);
    let started = Instant::now();
    let summary =
        store.put_stream("growth/archive", Box::pin(Generated::new(len, 5)), &ObjectMeta::new()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(summary.bytes, len);
    let blob = admin_container(&endpoint, &container).blob_client("growth/archive").block_blob_client();
    let list = blob.get_block_list(BlockListType::Committed, None).await.unwrap().into_model().unwrap();
    let sizes: Vec<i64> = list.committed_blocks.unwrap_or_default().iter().map(|b| b.size.unwrap_or(0)).collect();
    println!(
        "growth: {len} bytes from 1 KiB blocks committed as {} blocks (first {} B, last full {} B) in {:.1} s",
        sizes.len(),
        sizes[0],
        sizes[sizes.len() - 2],
        elapsed.as_secs_f64()
    );
    assert!(sizes.len() < 50_000, "{} blocks", sizes.len());
    assert_eq!(sizes[0], 1024);
    assert!(sizes.windows(2).take(sizes.len() - 2).all(|w| w[0] <= w[1]), "block sizes never shrink");
    assert_eq!(sizes.iter().sum::<i64>() as u64, len);
    assert_eq!(sha256_hex(&read_all(store.as_ref(), "growth/archive").await), summary.sha256);
}

async fn read_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store.get_stream(key).await.unwrap().read_to_end(&mut out).await.unwrap();
    out
}
