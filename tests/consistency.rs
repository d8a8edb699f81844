//! Point-in-time consistency under concurrent writes, and failed backups that must leave no backup behind.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bson::{Bson, Document, Timestamp, doc};
use common::*;
use mongo_backup_agent::backup::{self, BackupId, Progress};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::restore;
use mongo_backup_agent::store::{FilesystemStore, ObjectStore};

const SEEDED: i32 = 20_000;

/// One write of the concurrent writer, with the cluster time the server gave it.
enum Write {
    Insert(i32, i32),
    Set(i32, i32),
    Delete(i32),
}

#[tokio::test]
async fn concurrent_writes_restore_to_the_end_timestamp() {
    let client = client().await;
    let info = mongo_backup_agent::mongo::server_info(&client).await.unwrap();
    assert!(info.replica_set.is_some(), "this test needs a replica-set member (SecantusDB is one)");
    let db = unique("pitr");
    let live = client.database(&db).collection::<Document>("live");
    let seed: Vec<Document> = (0..SEEDED).map(|i| doc! {"_id": i, "v": 0, "pad": "x".repeat(200)}).collect();
    for chunk in seed.chunks(5000) {
        live.insert_many(chunk.to_vec()).await.unwrap();
    }
    let bulk = client.database(&db).collection::<Document>("bulk");
    for c in 0..10 {
        bulk.insert_many((0..10_000).map(|i| doc! {"_id": c * 10_000 + i, "pad": "y".repeat(300)})).await.unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, live, stop) = (client.clone(), live.clone(), stop.clone());
        tokio::spawn(async move {
            let mut session = client.start_session().await.unwrap();
            let mut log = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let write = match i % 3 {
                    0 => Write::Insert(1_000_000 + i, i),
                    1 => Write::Set(i % SEEDED, i),
                    _ => Write::Delete((i * 7) % SEEDED),
                };
                match &write {
                    Write::Insert(id, v) => {
                        live.insert_one(doc! {"_id": id, "v": v}).session(&mut session).await.map(drop)
                    }
                    Write::Set(id, v) => {
                        live.update_one(doc! {"_id": id}, doc! {"$set": {"v": v}}).session(&mut session).await.map(drop)
                    }
                    Write::Delete(id) => live.delete_one(doc! {"_id": id}).session(&mut session).await.map(drop),
                }
                .unwrap();
                log.push((session.operation_time().unwrap(), write));
                i += 1;
            }
            log
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[format!("{db}.*")], "parallel_collections = 1");
    let manifest = run_backup(&config).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let log = writer.await.unwrap();
    let end: Timestamp = manifest.oplog.end.expect("replica set backup records its end timestamp").into();
    assert!(manifest.oplog.included && manifest.oplog.start.is_some());
    let during = log.iter().filter(|(t, _)| *t > manifest.oplog.start.unwrap().into() && *t <= end).count();
    let after = log.iter().filter(|(t, _)| *t > end).count();
    assert!(during > 0 && after > 0, "writes must straddle the backup (during {during}, after {after})");

    // The source as of `end`: the seed plus every write the server stamped at or before it.
    let mut expected: BTreeMap<i32, i32> = (0..SEEDED).map(|i| (i, 0)).collect();
    for (t, write) in &log {
        if *t > end {
            continue;
        }
        match *write {
            Write::Insert(id, v) => {
                expected.insert(id, v);
            }
            Write::Set(id, v) => {
                if let Some(slot) = expected.get_mut(&id) {
                    *slot = v;
                }
            }
            Write::Delete(id) => {
                expected.remove(&id);
            }
        }
    }

    let target = format!("{db}_r");
    let renames = [(format!("{db}.$c$"), format!("{target}.$c$"))];
    let options = restore_options(&[format!("{db}.*")], &[(&renames[0].0, &renames[0].1)], false);
    let store = FilesystemStore::new(dir.path());
    let input = store.get_stream(&backup::archive_key("t", &manifest.id, manifest.compression)).await.unwrap();
    let report = restore::restore(input, &client, &options).await.unwrap();
    assert!(report.replay.applied > 0);
    let restored: BTreeMap<i32, i32> = raw_docs(&client, &target, "live")
        .await
        .into_iter()
        .map(|bytes| {
            let d = Document::from_reader(&bytes[..]).unwrap();
            (
                d.get_i32("_id").unwrap(),
                match d.get("v") {
                    Some(Bson::Int32(v)) => *v,
                    other => panic!("v = {other:?}"),
                },
            )
        })
        .collect();
    assert_eq!(restored.len(), expected.len(), "document count differs from the source at the end timestamp");
    for (id, v) in &expected {
        assert_eq!(restored.get(id), Some(v), "document {id} differs from the source at the end timestamp");
    }
}

#[tokio::test]
async fn server_stopped_mid_dump_leaves_no_backup() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, uri) = common::own_server(data.path());
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let coll = client.database("victim").collection::<Document>("c");
    for c in 0..30 {
        coll.insert_many((0..10_000).map(|i| doc! {"_id": c * 10_000 + i, "pad": "z".repeat(400)})).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = mongo_backup_agent::config::Config::parse(&format!(
        "[mongodb]\nuri = {uri:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[backup]\nbatch_size = 500\ncompression = \"none\"\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let store = FilesystemStore::new(dir.path());
    let progress = Arc::new(Progress::default());
    let killer = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while progress.totals().0 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            server.kill().unwrap();
            server.wait().unwrap();
        })
    };
    let result =
        backup::run(&config, BackupId::new(chrono::Utc::now()), &NamespaceFilter::all(), &store, &progress).await;
    killer.await.unwrap();
    let err = result.expect_err("a backup whose server died must fail").to_string();
    assert!(err.contains("reading victim.c") || err.contains("oplog") || err.contains("MongoDB"), "{err}");
    assert!(progress.totals().0 < 300_000, "the server was killed after the dump finished");
    let backups = backup::list_backups(&store, "t").await.unwrap();
    assert!(backups.iter().all(|b| !b.is_complete()), "a failed backup must not be listed as complete");
    let objects = store.list("").await.unwrap();
    assert!(objects.iter().all(|o| !o.key.ends_with("manifest.json")), "no manifest may exist: {objects:?}");
    assert!(objects.is_empty(), "the filesystem store must not keep a partial archive: {objects:?}");
}
