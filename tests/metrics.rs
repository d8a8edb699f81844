//! Metrics for real: fed with the report of a real backup (and a failed one), scraped over a loopback socket and
//! read back from the node_exporter textfile, each parsed as Prometheus text and checked value by value.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::prometheus::{Scrape, parse};
use mongo_backup_agent::backup::{BackupId, Manifest, Outcome, Progress, RunReport};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::metrics::{self, CONTENT_TYPE, Metrics, MetricsError};
use mongo_backup_agent::store::{FilesystemStore, ObjectStore};

const P: &str = "mongo_backup_agent_";

/// A real backup of a small collection into `dir`, and its report as the daemon would make it.
async fn real_backup(dir: &std::path::Path) -> (Manifest, RunReport) {
    let db = common::unique("metrics");
    let client = common::client().await;
    let docs: Vec<bson::Document> = (0..250).map(|i| bson::doc! {"_id": i, "payload": "x".repeat(100)}).collect();
    client.database(&db).collection("items").insert_many(docs).await.unwrap();
    let config = common::config(dir, &[format!("{db}.*")], "");
    let started = Utc::now();
    let manifest = common::run_backup(&config).await;
    client.database(&db).drop().await.unwrap();
    let store = FilesystemStore::new(&config.storage.path);
    let report = RunReport::new(
        manifest.id.clone(),
        "run-now",
        store.describe(),
        started,
        &Ok(manifest.clone()),
        &Progress::default(),
    );
    (manifest, report)
}

fn failed_report(after: &RunReport) -> RunReport {
    let started = after.finished_at + chrono::Duration::seconds(60);
    let mut report = RunReport::new(
        BackupId::new(started),
        "ssh",
        after.store.clone(),
        started,
        &Err((Outcome::Failed, "cannot reach MongoDB at mongodb://127.0.0.1:1/".to_string())),
        &Progress::default(),
    );
    report.finished_at = started + chrono::Duration::milliseconds(2500);
    report
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn assert_last_run(scrape: &Scrape, report: &RunReport) {
    assert_eq!(scrape.get(&format!("{P}last_run_timestamp_seconds")), unix(report.finished_at));
    assert_eq!(scrape.get(&format!("{P}last_run_duration_seconds")), report.duration_secs());
    assert_eq!(scrape.get(&format!("{P}last_run_archive_bytes")), report.bytes_in as f64);
    assert_eq!(scrape.get(&format!("{P}last_run_stored_bytes")), report.bytes_out as f64);
    assert_eq!(scrape.get(&format!("{P}last_run_documents")), report.documents as f64);
    let success = if report.outcome == Outcome::Success { 1.0 } else { 0.0 };
    assert_eq!(scrape.get(&format!("{P}last_run_success")), success);
}

fn total(scrape: &Scrape, outcome: &str) -> f64 {
    scrape.get(&format!("{P}backups_total{{outcome=\"{outcome}\"}}"))
}

async fn scrape(client: &reqwest::Client, base: &str) -> Scrape {
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
    parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn endpoint_reports_a_real_backup_then_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let listener = metrics::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(metrics::serve(listener, Arc::clone(&metrics), async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    let before = scrape(&client, &base).await;
    assert_eq!(before.types[&format!("{P}backups_total")], "counter");
    assert_eq!(before.types[&format!("{P}last_success_timestamp_seconds")], "gauge");
    for outcome in ["success", "failed", "cancelled"] {
        assert_eq!(total(&before, outcome), 0.0, "every outcome's series exists from the start");
    }
    assert_eq!(before.get(&format!("{P}last_success_timestamp_seconds")), 0.0);
    assert_eq!(before.get(&format!("{P}backup_in_progress")), 0.0);
    let version = format!("{P}info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(before.get(&version), 1.0);

    metrics.started();
    assert_eq!(scrape(&client, &base).await.get(&format!("{P}backup_in_progress")), 1.0);
    let (manifest, success) = real_backup(dir.path()).await;
    assert_eq!(success.outcome, Outcome::Success);
    assert!(manifest.documents() >= 250 && success.bytes_out > 0, "the backup stored something");
    metrics.finished(&success);
    let after = scrape(&client, &base).await;
    assert_eq!(after.get(&format!("{P}backup_in_progress")), 0.0);
    assert_eq!(total(&after, "success"), 1.0);
    assert_eq!(total(&after, "failed"), 0.0);
    assert_eq!(after.get(&format!("{P}last_success_timestamp_seconds")), unix(success.finished_at));
    assert_eq!(after.get(&format!("{P}last_run_archive_bytes")), manifest.uncompressed_bytes as f64);
    assert_eq!(after.get(&format!("{P}last_run_stored_bytes")), manifest.archive_bytes as f64);
    assert_eq!(after.get(&format!("{P}last_run_documents")), manifest.documents() as f64);
    assert_last_run(&after, &success);

    let failed = failed_report(&success);
    metrics.started();
    metrics.finished(&failed);
    let after_failure = scrape(&client, &base).await;
    assert_eq!(total(&after_failure, "success"), 1.0);
    assert_eq!(total(&after_failure, "failed"), 1.0);
    assert_eq!(
        after_failure.get(&format!("{P}last_success_timestamp_seconds")),
        unix(success.finished_at),
        "a failure does not move the last success"
    );
    assert_eq!(after_failure.get(&format!("{P}last_run_duration_seconds")), 2.5);
    assert_last_run(&after_failure, &failed);

    let other = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    let post = client.post(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns at shutdown").unwrap();
    assert!(client.get(format!("{base}/metrics")).send().await.is_err(), "nothing listens after shutdown");
}

#[test]
fn textfile_is_replaced_whole_and_readable_by_node_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mongo_backup_agent.prom");
    let metrics = Metrics::new();
    metrics::write_textfile(&metrics, &path).unwrap();
    assert_eq!(total(&parse(&std::fs::read_to_string(&path).unwrap()), "success"), 0.0);

    let started = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let report = RunReport {
        outcome: Outcome::Cancelled,
        finished_at: started + chrono::Duration::seconds(90),
        ..synthetic_report(started)
    };
    metrics.finished(&report);
    metrics::write_textfile(&metrics, &path).unwrap();
    let scrape = parse(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(total(&scrape, "cancelled"), 1.0);
    assert_last_run(&scrape, &report);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["mongo_backup_agent.prom"], "no temporary file is left behind");
}

/// A report with every field set, for the tests that need no backup.
fn synthetic_report(at: DateTime<Utc>) -> RunReport {
    RunReport {
        id: BackupId::new(at),
        trigger: "schedule".into(),
        host: "db-vm-1".into(),
        store: "directory /backups".into(),
        started_at: at,
        finished_at: at,
        outcome: Outcome::Failed,
        error: Some("cancelled before completion; no backup was recorded".into()),
        bytes_in: 10,
        bytes_out: 0,
        documents: 1,
    }
}

#[test]
fn textfile_in_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("agent.prom");
    let err = metrics::write_textfile(&Metrics::new(), &path).unwrap_err();
    assert!(matches!(err, MetricsError::Textfile { .. }));
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn last_success_from_the_store_is_kept_and_never_moves_back() {
    let metrics = Metrics::new();
    let newest = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    metrics.set_last_success(newest);
    metrics.set_last_success(newest - chrono::Duration::hours(1));
    let scrape = parse(&metrics.render());
    assert_eq!(scrape.get(&format!("{P}last_success_timestamp_seconds")), unix(newest));
    assert_eq!(scrape.get(&format!("{P}last_run_timestamp_seconds")), 0.0, "no run in this process yet");
}

#[tokio::test]
async fn non_loopback_addresses_are_refused() {
    let err = Config::parse("[metrics]\nlisten = \"0.0.0.0:9216\"\n").unwrap_err().to_string();
    assert!(err.contains("metrics.listen must be a loopback address"), "{err}");
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let err = metrics::bind(addr.parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, MetricsError::NotLoopback(_)), "{addr}: {err}");
    }
    let taken = metrics::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let err = metrics::bind(taken.local_addr().unwrap()).await.unwrap_err();
    assert!(matches!(err, MetricsError::Bind { .. }), "{err}");
}
