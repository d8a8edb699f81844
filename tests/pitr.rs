//! Continuous oplog archiving and `restore --time`, end to end: the daemon as a real process archiving a real
//! server's oplog while writers run, restores to recorded marks compared with the data the server held at each, a
//! `kill -9` of the daemon in the middle, and a forced gap.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Document, Timestamp, doc};
use common::daemon::Daemon;
use common::http_receiver::{Answer, Receiver};
use common::*;
use mongodb::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::RwLock;

/// Collections the writers use.
const COLLECTIONS: [&str; 3] = ["c0", "c1", "c2"];

/// A config archiving `db.*` of `uri` into `dir/store` with short chunks, so a test sees many of them.
fn pitr_config(dir: &std::path::Path, uri: &str, db: &str, extra: &str) -> String {
    format!(
        "[mongodb]\nuri = {uri:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[daemon]\nsocket = {:?}\n\
         [backup]\ninclude = [\"{db}.*\"]\n[pitr]\nenabled = true\nchunk_span = \"2s\"\npoll_interval = \"200ms\"\n\
         {extra}",
        dir.join("store").display().to_string(),
        dir.join("control.sock").display().to_string(),
    )
}

/// What the server held at a mark: per collection, documents (raw, by `_id`), index specs and options.
type Snapshot = BTreeMap<String, (Vec<Vec<u8>>, Vec<Document>, Document)>;

async fn snapshot(client: &Client, db: &str) -> Snapshot {
    let mut out = Snapshot::new();
    for coll in client.database(db).list_collection_names().await.unwrap() {
        let specs = indexes(client, db, &coll).await.into_iter().map(|mut d| {
            d.remove("ns");
            d.remove("v");
            d
        });
        let entry = (raw_docs(client, db, &coll).await, specs.collect(), collection_options(client, db, &coll).await);
        out.insert(coll, entry);
    }
    out
}

async fn last_write(client: &Client) -> Timestamp {
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await.unwrap();
    hello.get_document("lastWrite").unwrap().get_document("opTime").unwrap().get_timestamp("ts").unwrap()
}

/// Random writes to `db` until `stop`, each under a read lock so a mark can pause them all.
async fn write_randomly(client: Client, db: String, seed: u64, pause: Arc<RwLock<()>>, stop: Arc<RwLock<bool>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_id = 0i64;
    while !*stop.read().await {
        let _writing = pause.read().await;
        let coll = client.database(&db).collection::<Document>(COLLECTIONS[rng.random_range(0..3)]);
        let id = rng.random_range(0..next_id.max(1));
        let n = rng.random_range(0..10);
        let _ = match rng.random_range(0..100) {
            0..=34 => {
                next_id += 1;
                coll.insert_one(doc! {"_id": next_id, "n": n, "arr": [n], "sub": {"a": n}}).await.map(drop)
            }
            35..=49 => coll.update_one(doc! {"_id": id}, doc! {"$set": {"sub.a": n, "z": n}}).await.map(drop),
            50..=59 => coll.update_one(doc! {"_id": id}, doc! {"$inc": {"n": n}}).await.map(drop),
            60..=69 => coll.update_one(doc! {"_id": id}, doc! {"$push": {"arr": n}}).await.map(drop),
            70..=74 => coll.update_one(doc! {"_id": id}, doc! {"$unset": {"z": ""}}).await.map(drop),
            75..=82 => coll.delete_one(doc! {"_id": id}).await.map(drop),
            83..=89 => coll.replace_one(doc! {"_id": id}, doc! {"r": n}).await.map(drop),
            90..=95 => transaction(&client, &db, id, n, rng.random_bool(0.3)).await,
            96..=97 => coll.create_index(mongodb::IndexModel::builder().keys(doc! {"n": 1}).build()).await.map(drop),
            _ => coll.drop_index("n_1").await.map(drop),
        };
        drop(_writing);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
    }
}

/// A two-collection transaction, committed or aborted.
async fn transaction(client: &Client, db: &str, id: i64, n: i32, abort: bool) -> mongodb::error::Result<()> {
    let mut session = client.start_session().await?;
    session.start_transaction().await?;
    let (a, b) = (client.database(db).collection::<Document>("c0"), client.database(db).collection::<Document>("c1"));
    a.update_one(doc! {"_id": id}, doc! {"$set": {"txn": n}}).session(&mut session).await?;
    b.insert_one(doc! {"_id": -1000 - i64::from(n) - 10 * id, "txn": n}).session(&mut session).await?;
    if abort { session.abort_transaction().await } else { session.commit_transaction().await }
}

/// The daemon's `status --json`.
fn status(daemon: &Daemon) -> serde_json::Value {
    let (code, out, err) = daemon.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Waits until the daemon archives (a base backup exists and the archiver runs).
fn wait_archiving(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(daemon)["pitr"]["archive"]["archiving"] != true {
        assert!(Instant::now() < deadline, "archiving did not start within 120 s; log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restoring_to_any_mark_gives_what_the_server_held_then_across_a_kill_9() {
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = client().await;
    let db = unique("pitr");
    for coll in COLLECTIONS {
        let docs = (0..50i64).map(|i| doc! {"_id": -i - 1, "n": 0, "arr": [], "sub": {"a": 0}});
        source.database(&db).collection(coll).insert_many(docs).await.unwrap();
    }
    let config = pitr_config(dir.path(), &uri(), &db, "");
    let mut daemon = Daemon::start_text(dir.path(), &config);
    wait_archiving(&daemon);

    let (pause, stop) = (Arc::new(RwLock::new(())), Arc::new(RwLock::new(false)));
    let writers: Vec<_> = (0..2)
        .map(|seed| tokio::spawn(write_randomly(source.clone(), db.clone(), seed, pause.clone(), stop.clone())))
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut marks = Vec::new();
    // `make soak` sets many marks: minutes of writes, each mark restored.
    let count: usize = std::env::var("MBA_PITR_MARKS").ok().and_then(|n| n.parse().ok()).unwrap_or(6);
    for mark in 0..count {
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..2500))).await;
        let paused = pause.write().await;
        marks.push((last_write(&source).await, snapshot(&source, &db).await));
        drop(paused);
        if mark % 20 == 2 {
            // kill -9 mid-chunk: the open chunk is lost, and the restart must archive it again from the oplog.
            daemon.child.kill().unwrap();
            daemon.child.wait().unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            daemon = Daemon::spawn(dir.path(), &daemon.config, &daemon.socket, &[]);
            daemon.wait_ready();
        }
    }
    *stop.write().await = true;
    for writer in writers {
        writer.await.unwrap();
    }
    marks.push((last_write(&source).await, snapshot(&source, &db).await));

    // The kick seals the open chunk: the newest write is restorable at once.
    let (code, out, err) = daemon.cli(&["run-now"]);
    assert_eq!(code, 0, "{err}\n{}", daemon.log());
    assert!(out.contains("restorable from") && out.contains("no gap"), "{out}");
    let (code, listed, err) = daemon.cli(&["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(listed.contains("PITR ") && listed.contains("no gaps") && !listed.contains("GAP"), "{listed}");
    let chunks = std::fs::read_dir(dir.path().join("store/t/oplog")).unwrap().count();
    assert!(chunks >= 4, "{chunks} chunks: {listed}");

    let (mut target_server, target_uri) = own_server(data.path());
    let target = Client::with_uri_str(&target_uri).await.unwrap();
    for (i, (ts, expected)) in marks.iter().enumerate() {
        let into = format!("mark{i}");
        let (from, to, time) = (format!("{db}.*"), format!("{into}.*"), format!("ts:{},{}", ts.time, ts.increment));
        let args = ["restore", "--time", &time, "--to", &target_uri, "--nsFrom", &from, "--nsTo", &to];
        let (code, _, err) = daemon.cli(&args);
        assert_eq!(code, 0, "mark {i} at {time}: {err}");
        assert!(!err.contains("not applied"), "mark {i}: {err}");
        let got = snapshot(&target, &into).await;
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "mark {i}: collections");
        for (coll, (docs, specs, options)) in expected {
            let (got_docs, got_specs, got_options) = &got[coll];
            let decode = |d: &Vec<u8>| Document::from_reader(&d[..]).unwrap();
            let first = got_docs.iter().zip(docs).find(|(a, b)| a != b).map(|(a, b)| (decode(a), decode(b)));
            assert!(
                got_docs == docs,
                "mark {i} {coll}: {} vs {} docs, first difference {first:?}",
                got_docs.len(),
                docs.len()
            );
            assert_eq!(got_specs, specs, "mark {i} {coll}: indexes");
            assert_eq!(got_options, options, "mark {i} {coll}: options");
        }
    }

    // A moment no window holds is refused, naming the windows, and writes nothing.
    let (code, _, err) = daemon.cli(&["restore", "--time", "2001-01-01T00:00:00Z", "--to", &target_uri]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no restorable window holds") && err.contains(" → "), "{err}");
    // --dry-run names the base and the chunks, and changes nothing.
    let (ts, _) = marks.last().unwrap();
    let time = format!("ts:{},{}", ts.time, ts.increment);
    let args = ["restore", "--time", &time, "--to", &target_uri, "--nsFrom", &format!("{db}.*"), "--nsTo", "dry.*"];
    let (code, _, err) = daemon.cli(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("base backup") && err.contains("oplog chunks"), "{err}");
    assert!(target.database("dry").list_collection_names().await.unwrap().is_empty());

    // The chain verifies; a flipped byte in a chunk is found by verify, and a --drop restore through that chunk
    // fails with every target as it was.
    let (code, _, err) = daemon.cli(&["verify", "--chain"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("oplog chain verified") && err.contains("no gap"), "{err}");
    let oplog_dir = dir.path().join("store/t/oplog");
    let mut chunk_files: Vec<_> = std::fs::read_dir(&oplog_dir).unwrap().map(|e| e.unwrap().path()).collect();
    chunk_files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let damaged = chunk_files.last().unwrap();
    let mut bytes = std::fs::read(damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(damaged, bytes).unwrap();
    let name = damaged.file_name().unwrap().to_str().unwrap();
    let (code, out, _) = daemon.cli(&["verify", "--chain"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(name), "{out}");
    let before = snapshot(&target, "mark0").await;
    let time = format!("ts:{},{}", ts.time, ts.increment);
    let args = ["restore", "--time", &time, "--to", &target_uri, "--nsFrom", &format!("{db}.*"), "--nsTo", "mark0.*"];
    let (code, _, err) = daemon.cli(&[&args[..], &["--drop"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(name), "{err}");
    assert!(snapshot(&target, "mark0").await == before, "a failed --drop restore changed its target");
    target_server.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_reported_notified_and_healed_by_a_new_base() {
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // An oplog of 300 entries: a stopped agent falls behind it quickly.
    let (mut server, server_uri) = own_server_with(data.path(), &["--oplog-max-entries", "300"]);
    let source = Client::with_uri_str(&server_uri).await.unwrap();
    let db = "gap";
    source.database(db).collection("c").insert_one(doc! {"_id": 0}).await.unwrap();
    let hook = Receiver::start(Answer::Status(200)).await;
    let hook_file = dir.path().join("hook");
    std::fs::write(&hook_file, hook.url("/hook")).unwrap();
    // Both bases kept (by default retention keeps one per hour): list shows the window before the gap too.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let notify = format!(
        "[notify]\nwebhook_url_file = {:?}\n[retention]\nkeep_last = 5\n[metrics]\nlisten = \"{metrics}\"\n\
         [schedule]\ncron = \"0 3 * * *\"\n",
        hook_file.display().to_string()
    );
    let config = pitr_config(dir.path(), &server_uri, db, &notify);
    let mut daemon = Daemon::start_text(dir.path(), &config);
    wait_archiving(&daemon);
    let coll = source.database(db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(daemon.cli(&["run-now"]).0, 0, "{}", daemon.log());
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();

    // While the agent is down, the oplog moves past where it stopped (the server prunes every few seconds).
    let stopped_at = last_write(&source).await;
    let oplog = source.database("local").collection::<Document>("oplog.rs");
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0i64.. {
        let oldest = oplog.find_one(doc! {}).await.unwrap().unwrap().get_timestamp("ts").unwrap();
        if oldest > stopped_at {
            break;
        }
        assert!(Instant::now() < deadline, "the server never pruned its oplog past {stopped_at}");
        coll.insert_many((0..100).map(|i| doc! {"_id": 10 + round * 100 + i})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut daemon = Daemon::spawn(dir.path(), &daemon.config, &daemon.socket, &[]);
    daemon.wait_ready();
    daemon.wait_log("the oplog rolled past the archiver");
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.seen().is_empty() {
        assert!(Instant::now() < deadline, "no notification of the gap; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = hook.seen()[0].body.to_string();
    assert!(alert.contains("point-in-time chain broken"), "{alert}");
    // The new base starts a new chain: the kick succeeds again, and list shows both windows and the gap.
    wait_archiving(&daemon);
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    let (code, out, err) = daemon.cli(&["run-now"]);
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.log());
    let (_, listed, _) = daemon.cli(&["list"]);
    assert!(listed.contains("GAP after") && listed.matches("PITR ").count() == 2, "{listed}");
    assert!(status(&daemon)["pitr"]["archive"]["gaps"].as_u64() >= Some(1));
    // The metrics count the gap, and export every series the shipped alert rules and dashboard use.
    let text = prometheus::fetch(&metrics).await;
    let scrape = prometheus::parse(&text);
    assert!(scrape.get("mongo_backup_agent_pitr_gaps_total") >= 1.0, "{text}");
    assert_eq!(scrape.get("mongo_backup_agent_pitr_archiving"), 1.0);
    assert_eq!(scrape.get("mongo_backup_agent_schedule_interval_seconds"), 86400.0);
    // The replica-set series exist only in replica-set mode; tests/cluster.rs checks those.
    prometheus::assert_exports_what_monitoring_uses(&scrape, &["mongo_backup_agent_cluster_"]);
    // Keeping only the new base, prune deletes the chunks before its window and no other: the window stays whole.
    let chunk_count = || std::fs::read_dir(dir.path().join("store/t/oplog")).unwrap().count();
    let before = chunk_count();
    let keep_one = config.replace("keep_last = 5", "keep_last = 1\nkeep_hourly = 0\nkeep_daily = 0");
    let prune_config = dir.path().join("prune.toml");
    std::fs::write(&prune_config, keep_one).unwrap();
    let (code, out, err) = cli(&["--config", prune_config.to_str().unwrap(), "prune"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("oplog chunks before the oldest kept base deleted"), "{out}");
    let (_, after_prune, _) = daemon.cli(&["list"]);
    assert!(chunk_count() < before && after_prune.matches("PITR ").count() == 1, "{after_prune}");
    assert!(after_prune.contains("no gaps") && !after_prune.contains("GAP"), "{after_prune}");
    let _ = daemon.child.kill();
    server.kill().unwrap();
}
