//! Retention against real stores: a prune on the filesystem store and on Azurite deletes exactly what the policy
//! lets go (manifests first), stale incomplete attempts, and nothing else; `prune --dry-run` deletes nothing.

mod azure_support;
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::cli;
use mongo_backup_agent::backup::{self, BackupId, Manifest, OplogInfo};
use mongo_backup_agent::compress::Compression;
use mongo_backup_agent::config::RetentionConfig;
use mongo_backup_agent::retention;
use mongo_backup_agent::store::{self, FilesystemStore, ObjectMeta, ObjectStore};

const PREFIX: &str = "t";

/// Keeps the newest, the 3 newest hours and the 2 newest days; incomplete attempts go after an hour.
fn policy() -> RetentionConfig {
    RetentionConfig {
        keep_last: 1,
        keep_hourly: 3,
        keep_daily: 2,
        keep_weekly: 0,
        keep_monthly: 0,
        keep_within: None,
        incomplete_grace: Duration::from_secs(3600),
        prune_after_backup: true,
    }
}

fn id_at(time: DateTime<Utc>, suffix: &str) -> BackupId {
    BackupId::parse(&format!("{}-{suffix}", time.format("%Y%m%dT%H%M%SZ"))).unwrap()
}

fn manifest(id: &BackupId, archive_bytes: u64) -> Manifest {
    Manifest {
        manifest_version: backup::MANIFEST_VERSION,
        id: id.clone(),
        status: "complete".into(),
        started_at: id.time(),
        finished_at: id.time() + chrono::Duration::seconds(30),
        agent_version: "test".into(),
        host: "test".into(),
        server_version: "4.4.29".into(),
        replica_set: None,
        oplog: OplogInfo { included: false, start: None, start_inclusive: false, end: None, note: Some("test".into()) },
        compression: Compression::Zstd,
        archive: Compression::Zstd.archive_name().into(),
        archive_bytes,
        uncompressed_bytes: archive_bytes,
        archive_sha256: String::new(),
        encryption: None,
        namespaces: Vec::new(),
        dropped_during_backup: Vec::new(),
    }
}

/// Stores an archive for `id` and, when given, a manifest text.
async fn put(store: &dyn ObjectStore, id: &BackupId, manifest: Option<String>) {
    let archive = vec![7u8; 1000];
    let key = backup::archive_key(PREFIX, id, Compression::Zstd);
    store.put_stream(&key, Box::pin(std::io::Cursor::new(archive)), &ObjectMeta::new()).await.unwrap();
    if let Some(text) = manifest {
        store.put_if_absent(&backup::manifest_key(PREFIX, id), text.into_bytes().into()).await.unwrap();
    }
}

/// What a scenario stored, and what must be left after pruning with [`policy`].
struct Scenario {
    /// Complete backups the policy keeps.
    kept: Vec<BackupId>,
    /// Complete backups the policy lets go.
    forgotten: Vec<BackupId>,
    /// An archive without a manifest, past the grace period at prune time.
    stale: BackupId,
    /// An archive without a manifest, within the grace period: may still be uploading.
    young: BackupId,
    /// A directory whose manifest does not parse: left alone, whatever its age.
    unreadable: BackupId,
}

impl Scenario {
    /// Every key that must remain after the prune.
    fn remaining_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for id in self.kept.iter().chain([&self.unreadable]) {
            keys.insert(backup::manifest_key(PREFIX, id));
            keys.insert(backup::archive_key(PREFIX, id, Compression::Zstd));
        }
        keys.insert(backup::archive_key(PREFIX, &self.young, Compression::Zstd));
        keys
    }
}

/// 30 hourly backups from 2026-01-10 20:00 to 2026-01-12 01:00, plus the three odd directories. `young_at` is the
/// id time of the young incomplete attempt (its objects are written now either way).
async fn populate(store: &dyn ObjectStore, young_at: DateTime<Utc>) -> Scenario {
    let start: DateTime<Utc> = "2026-01-10T20:00:00Z".parse().unwrap();
    let ids: Vec<BackupId> = (0..30).map(|h| id_at(start + chrono::Duration::hours(h), "a1b2c3")).collect();
    for id in &ids {
        put(store, id, Some(manifest(id, 1000).to_json())).await;
    }
    // Newest (01-12 01:00): last, hourly, daily; 01-12 00:00: hourly; 01-11 23:00: hourly and daily (day 01-11).
    let kept: Vec<BackupId> = ids[27..].to_vec();
    let forgotten = ids[..27].to_vec();
    let stale = id_at("2026-01-05T00:00:00Z".parse().unwrap(), "dead00");
    put(store, &stale, None).await;
    let young = id_at(young_at, "f00d00");
    put(store, &young, None).await;
    let unreadable = id_at("2025-06-01T00:00:00Z".parse().unwrap(), "0ddba1");
    put(store, &unreadable, Some("{\"manifest_version\": 99}".into())).await;
    Scenario { kept, forgotten, stale, young, unreadable }
}

async fn keys(store: &dyn ObjectStore) -> BTreeSet<String> {
    store.list(&format!("{PREFIX}/")).await.unwrap().into_iter().map(|o| o.key).collect()
}

/// Plans, checks the plan, prunes, and checks exactly what remains. `now` is when the prune judges ages.
async fn prune_and_check(store: &dyn ObjectStore, scenario: &Scenario, now: DateTime<Utc>) {
    let before = keys(store).await;
    assert_eq!(before.len(), 30 * 2 + 1 + 1 + 2);
    let plan = retention::plan(store, PREFIX, &policy(), now, None).await.unwrap();
    assert_eq!(keys(store).await, before, "planning deletes nothing");
    let forgotten: Vec<&BackupId> = plan.forget.iter().map(|d| &d.id).collect();
    assert_eq!(forgotten, scenario.forgotten.iter().collect::<Vec<_>>());
    assert_eq!(plan.incomplete.iter().map(|d| &d.id).collect::<Vec<_>>(), [&scenario.stale]);
    let left: Vec<&BackupId> = plan.left_alone.iter().map(|l| &l.id).collect();
    assert_eq!(left, [&scenario.unreadable, &scenario.young]);
    let listed = backup::list_backups(store, PREFIX).await.unwrap();
    let classes: Vec<String> =
        scenario.kept.iter().map(|id| plan.class_of(listed.iter().find(|e| &e.id == id).unwrap())).collect();
    assert_eq!(classes, ["hourly,daily", "hourly", "last,hourly,daily"]);
    assert!(plan.forget.iter().all(|d| d.keys[0].ends_with("/manifest.json") && d.keys.len() == 2));

    let report = retention::execute(store, plan).await.unwrap();
    assert_eq!(report.deleted_objects, 27 * 2 + 1);
    assert_eq!(report.freed_bytes, 27 * (1000 + manifest(&scenario.kept[0], 1000).to_json().len() as u64) + 1000);
    assert_eq!(keys(store).await, scenario.remaining_keys());
    let listed = backup::list_backups(store, PREFIX).await.unwrap();
    let newest = listed.iter().rev().find_map(|e| e.manifest.as_ref()).unwrap();
    assert_eq!(&newest.id, scenario.kept.last().unwrap(), "the newest backup survives");

    // A second prune finds nothing more to do.
    let again = retention::prune(store, PREFIX, &policy(), now, None).await.unwrap();
    assert_eq!(again.deleted_objects, 0);
}

#[tokio::test]
async fn prune_on_the_filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilesystemStore::new(dir.path());
    // Judged one hour ahead: the stale attempt (written now) is past the 1 h grace; the young one started 10
    // minutes before that moment.
    let now = Utc::now() + chrono::Duration::minutes(61);
    let scenario = populate(&store, now - chrono::Duration::minutes(10)).await;
    prune_and_check(&store, &scenario, now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_azurite() {
    let endpoint = azure_support::shared_endpoint();
    let container = azure_support::unique_container("retention");
    azure_support::create_container(&endpoint, &container).await;
    let (config, _secret) = azure_support::shared_key_config(&endpoint, &container);
    let store = store::open(&config).unwrap();
    let now = Utc::now() + chrono::Duration::minutes(61);
    let scenario = populate(store.as_ref(), now - chrono::Duration::minutes(10)).await;
    prune_and_check(store.as_ref(), &scenario, now).await;
}

/// Sets a file's modification time, as an attempt abandoned `ago` would have.
fn age_file(path: &std::path::Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - ago).unwrap();
}

/// A filesystem store in `dir/store` and a config for the CLI keeping the last backup, `hourly` hours and `daily`
/// days, with a one-hour grace for incomplete attempts.
fn cli_setup(dir: &std::path::Path, hourly: u32, daily: u32) -> (std::path::PathBuf, String, FilesystemStore) {
    let store_dir = dir.join("store");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\nprefix = \"{PREFIX}\"\n[retention]\nkeep_last = 1\nkeep_hourly = {hourly}\n\
             keep_daily = {daily}\nkeep_weekly = 0\nkeep_monthly = 0\nincomplete_grace = \"1h\"\n",
            store_dir.display().to_string()
        ),
    )
    .unwrap();
    let store = FilesystemStore::new(&store_dir);
    (store_dir, config.display().to_string(), store)
}

#[test]
fn prune_cli_dry_run_then_prune_and_list_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, config, store) = cli_setup(dir.path(), 3, 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scenario = runtime.block_on(populate(&store, Utc::now() - chrono::Duration::minutes(5)));
    let stale_archive = backup::archive_key(PREFIX, &scenario.stale, Compression::Zstd);
    age_file(&store_dir.join(&stale_archive), Duration::from_secs(3 * 3600));
    let before = runtime.block_on(keys(&store));

    let (code, out, err) = cli(&["--config", &config, "prune", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("dry run: nothing was deleted"), "{err}");
    assert_eq!(runtime.block_on(keys(&store)), before, "--dry-run deleted something");
    assert!(out.contains(&format!("keep    {}  (last,hourly,daily)", scenario.kept[2])), "{out}");
    assert!(out.contains(&format!("delete  {}", scenario.forgotten[0])), "{out}");
    assert!(out.contains(&format!("delete  {}  1000 B (incomplete attempt past the grace period)", scenario.stale)));
    assert!(out.contains(&format!("leave   {}  (no manifest", scenario.young)), "{out}");
    assert!(out.contains("summary: 3 kept, 27 deleted, 1 incomplete deleted, 2 left alone"), "{out}");

    let (code, out, err) = cli(&["--config", &config, "list", "--json", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let class = |id: &BackupId| {
        rows.iter().find(|r| r["id"] == id.as_str()).map(|r| r["retention"].as_str().unwrap().to_string())
    };
    assert_eq!(class(&scenario.kept[2]).as_deref(), Some("last,hourly,daily"));
    assert_eq!(class(&scenario.forgotten[3]).as_deref(), Some("prune"));
    assert_eq!(class(&scenario.stale).as_deref(), Some("prune"));
    assert_eq!(class(&scenario.young).as_deref(), Some("incomplete"));

    let (code, out, err) = cli(&["--config", &config, "prune", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["report"]["deleted_objects"], 27 * 2 + 1);
    assert_eq!(runtime.block_on(keys(&store)), scenario.remaining_keys());
}

/// Backups made with wrong clocks, one that failed verification, and a partial file left by a crash, against the
/// filesystem store and the CLI: retention orders by manifest times, the prune after a backup keeps that backup,
/// retention neither counts nor keeps the untrusted one, `list` flags ids from the future, and stale partial files
/// go.
#[test]
fn clocks_untrusted_backups_and_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, config, store) = cli_setup(dir.path(), 0, 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let now = Utc::now();
    let hours = chrono::Duration::hours;
    // Made by a clock a year fast, id and manifest alike: it outranks everything by time.
    let fast = id_at(now + hours(24 * 365), "fa5700");
    // Id from a fast clock, but its manifest records the real start, three hours ago.
    let skewed = id_at(now + hours(24 * 365 * 2), "5ce3ed");
    let mut skewed_manifest = manifest(&skewed, 1000);
    skewed_manifest.started_at = now - hours(3);
    skewed_manifest.finished_at = now - hours(3);
    // Good, two hours ago; and the newest, which failed the verification after it.
    let good = id_at(now - hours(2), "900d00");
    let bad = id_at(now - hours(1), "bad000");
    // The backup whose prune this is.
    let current = id_at(now, "c0ffee");
    runtime.block_on(async {
        put(&store, &fast, Some(manifest(&fast, 1000).to_json())).await;
        put(&store, &skewed, Some(skewed_manifest.to_json())).await;
        for id in [&good, &bad, &current] {
            put(&store, id, Some(manifest(id, 1000).to_json())).await;
        }
        backup::mark_untrusted(&store, PREFIX, &bad, &["t.c: crc mismatch".to_string()]).await.unwrap();
    });
    // A write a crash interrupted, abandoned three hours ago, and one still being written.
    let good_dir = store_dir.join(PREFIX).join(good.as_str());
    let stale_partial = good_dir.join(".archive.zst.partial-00000000deadbeef");
    std::fs::write(&stale_partial, vec![1u8; 500]).unwrap();
    age_file(&stale_partial, Duration::from_secs(3 * 3600));
    let fresh_partial = good_dir.join(".archive.zst.partial-00000000cafe0000");
    std::fs::write(&fresh_partial, b"in flight").unwrap();

    // Ordered by manifest times: the skewed id sorts by its real start, not its 2028 id.
    let listed = runtime.block_on(backup::list_backups(&store, PREFIX)).unwrap();
    let order: Vec<&BackupId> = listed.iter().map(|e| &e.id).collect();
    assert_eq!(order, [&skewed, &good, &bad, &current, &fast]);
    // The marker makes the backup untrusted (`latest` skipping it is tested with the daemon, tests/daemon.rs).
    let bad_entry = listed.iter().find(|e| e.id == bad).unwrap();
    assert!(bad_entry.trusted().is_none() && bad_entry.untrusted.as_deref().unwrap().contains("crc mismatch"));

    // The prune after `current`: keep_last = 1 keeps the fast-clock backup; `current` survives its own prune.
    let plan = runtime.block_on(retention::plan(&store, PREFIX, &policy_last_one(), now, Some(&current))).unwrap();
    let kept: Vec<String> =
        plan.decisions.iter().filter(|d| d.keep()).map(|d| format!("{}: {}", d.id, d.class())).collect();
    assert_eq!(kept, [format!("{current}: current"), format!("{fast}: last")]);
    assert_eq!(plan.forget.iter().map(|d| &d.id).collect::<Vec<_>>(), [&skewed, &good]);
    // Untrusted, but younger than the grace: left for a look, not counted, not kept by a rule.
    assert!(plan.untrusted.is_empty());
    assert!(plan.left_alone.iter().any(|l| l.id == bad && l.reason.contains("not trusted")), "{plan}");
    let partials: Vec<&str> = plan.partials.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(partials, [format!("{PREFIX}/{good}/.archive.zst.partial-00000000deadbeef")]);

    // `list` flags the ids from the future and the untrusted backup.
    let (code, out, err) = cli(&["--config", &config, "list", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let row = |id: &BackupId| rows.iter().find(|r| r["id"] == id.as_str()).unwrap().clone();
    assert_eq!(row(&fast)["future_id"], true);
    assert_eq!(row(&skewed)["future_id"], true);
    assert_eq!(row(&good)["future_id"], false);
    assert_eq!(row(&bad)["retention"], "untrusted");
    assert!(row(&bad)["status"].as_str().unwrap().starts_with("untrusted"), "{out}");
    let (_, table, _) = cli(&["--config", &config, "list"]);
    let fast_line = table.lines().find(|l| l.starts_with(fast.as_str())).unwrap();
    assert!(fast_line.contains("id in the future"), "{table}");

    // Executed: the stale partial file goes, the one in flight stays, `current` and the fast-clock backup stay.
    runtime.block_on(retention::execute(&store, plan)).unwrap();
    assert!(!stale_partial.exists() && fresh_partial.exists());
    let left: Vec<BackupId> =
        runtime.block_on(backup::list_backups(&store, PREFIX)).unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left, [bad.clone(), current.clone(), fast.clone()]);

    // Past the grace, the untrusted backup is deleted like a failed attempt.
    let later = now + hours(2);
    let plan = runtime.block_on(retention::plan(&store, PREFIX, &policy_last_one(), later, None)).unwrap();
    assert_eq!(plan.untrusted.iter().map(|d| &d.id).collect::<Vec<_>>(), [&bad]);
    assert!(plan.to_string().contains("(failed verification, past the grace period)"), "{plan}");
}

fn policy_last_one() -> RetentionConfig {
    RetentionConfig { keep_last: 1, keep_hourly: 0, keep_daily: 0, ..policy() }
}
