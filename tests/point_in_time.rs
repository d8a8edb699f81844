//! Point-in-time backups of a server under writes, proven against the source itself: random writers (CRUD, array
//! updates, transactions that commit or abort, collection and index DDL, `$out`-style renames) run while a backup
//! dumps; they stop before its window closes; the backup is restored into a second server and every collection
//! must equal the source: documents byte for byte, options and indexes.
//!
//! `MBA_PITR_SEEDS` picks the seeds (`make test`: a few; `make soak`: hundreds). A failing seed is kept in
//! [`FIXED_SEEDS`] once its bug is fixed.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bson::{Document, Timestamp, doc};
use common::*;
use mongo_backup_agent::backup::{self, BackupId, Manifest, Progress};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::restore::{self, Rename, RestoreOptions};
use mongo_backup_agent::store::{FilesystemStore, ObjectStore};
use mongodb::{Client, Database, IndexModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeds that found bugs, replayed by every run.
const FIXED_SEEDS: &[u64] = &[12, 20, 122];

/// Documents of the ballast collection that makes the dump last long enough for the writers.
const BALLAST_DOCS: i32 = 60_000;

fn seeds() -> Vec<u64> {
    let mut seeds: Vec<u64> = match std::env::var("MBA_PITR_SEEDS") {
        Ok(spec) if spec.contains("..") => {
            let (a, b) = spec.split_once("..").unwrap();
            (a.parse().unwrap()..b.parse().unwrap()).collect()
        }
        Ok(spec) => spec.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) => vec![1, 2, 3],
    };
    seeds.extend(FIXED_SEEDS);
    seeds
}

/// One writer's view of the database it writes to.
struct Writer {
    rng: StdRng,
    db: Database,
    client: Client,
    collections: Vec<String>,
    next_id: i64,
    /// Cluster times the server gave this writer's writes: all must be inside the backup's window.
    times: Vec<Timestamp>,
}

fn random_doc(rng: &mut StdRng, id: i64) -> Document {
    let arr: Vec<i32> = (0..rng.random_range(0..5)).map(|_| rng.random_range(0..10)).collect();
    let tags: Vec<String> = (0..rng.random_range(0..3)).map(|_| format!("t{}", rng.random_range(0..5))).collect();
    doc! {"_id": id, "n": rng.random_range(0..100), "s": "x".repeat(rng.random_range(0..40)),
    "sub": {"a": rng.random_range(0..5), "b": arr.clone()}, "arr": arr, "tags": tags}
}

/// Collections seeded before the backup: large enough that the backup reads them in many batches.
const SEEDED_COLLECTIONS: usize = 3;

impl Writer {
    fn coll(&mut self) -> mongodb::Collection<Document> {
        let name = self.collections[self.rng.random_range(0..self.collections.len())].clone();
        self.db.collection(&name)
    }

    /// A collection for DDL (index builds, drops, renames onto it): one the writers created, small enough to be
    /// read in one batch. SecantusDB makes DDL wait for the open cursors on a collection, while a cursor's next
    /// batch waits behind that DDL: a deadlock with the backup's reader (mongod kills the cursors instead), so DDL
    /// stays off the seeded collections, which the backup reads in many batches.
    fn ddl_coll(&mut self) -> Option<String> {
        let small = self.collections.len().checked_sub(SEEDED_COLLECTIONS).filter(|n| *n > 0)?;
        Some(self.collections[SEEDED_COLLECTIONS + self.rng.random_range(0..small)].clone())
    }

    fn id(&mut self) -> i64 {
        self.rng.random_range(0..self.next_id.max(1))
    }

    /// One random write through `session`; the server may refuse some (a rename onto a missing collection): those
    /// did not happen and are fine.
    async fn step(&mut self, session: &mut mongodb::ClientSession) {
        let pick = self.rng.random_range(0..100);
        let coll = self.coll();
        let id = self.id();
        let n = self.rng.random_range(0..10);
        let result = match pick {
            0..=19 => {
                self.next_id += 1;
                let d = random_doc(&mut self.rng, self.next_id + 1_000_000 * (self.times.len() as i64 % 2));
                coll.insert_one(d).session(&mut *session).await.map(drop)
            }
            20..=29 => coll
                .update_one(doc! {"_id": id}, doc! {"$set": {"sub.a": n, "sub.c.d": n, "z": n}})
                .session(&mut *session)
                .await
                .map(drop),
            30..=34 => coll
                .update_one(doc! {"_id": id}, doc! {"$unset": {"s": "", "sub.a": ""}})
                .session(&mut *session)
                .await
                .map(drop),
            35..=39 => {
                coll.update_one(doc! {"_id": id}, doc! {"$inc": {"n": n}}).session(&mut *session).await.map(drop)
            }
            40..=44 => {
                coll.update_one(doc! {"_id": id}, doc! {"$push": {"arr": n}}).session(&mut *session).await.map(drop)
            }
            45..=49 => {
                coll.update_one(doc! {"_id": id}, doc! {"$pull": {"arr": n}}).session(&mut *session).await.map(drop)
            }
            50..=54 => coll
                .update_one(doc! {"_id": id}, doc! {"$addToSet": {"tags": format!("t{n}")}})
                .session(&mut *session)
                .await
                .map(drop),
            55..=59 => coll
                .update_one(doc! {"_id": id, "arr": n}, doc! {"$set": {"arr.$": n + 100}})
                .session(&mut *session)
                .await
                .map(drop),
            60..=62 => coll
                .update_one(doc! {"_id": id}, doc! {"$set": {"arr.0": n, "sub.b.3": n}})
                .session(&mut *session)
                .await
                .map(drop),
            63..=67 => {
                let d = random_doc(&mut self.rng, id);
                coll.replace_one(doc! {"_id": id}, d).session(&mut *session).await.map(drop)
            }
            68..=74 => coll.delete_one(doc! {"_id": id}).session(&mut *session).await.map(drop),
            75..=84 => return self.transaction(session).await,
            85..=88 => {
                let field = ["n", "s", "sub.a"][self.rng.random_range(0..3)];
                coll.create_index(IndexModel::builder().keys(doc! {field: 1}).build())
                    .session(&mut *session)
                    .await
                    .map(drop)
            }
            89..=91 => {
                let field = ["n_1", "s_1", "sub.a_1"][self.rng.random_range(0..3)];
                coll.drop_index(field).session(&mut *session).await.map(drop)
            }
            92..=94 => {
                let name = format!("c{}", self.rng.random_range(0..1000));
                let made = self.db.create_collection(&name).session(&mut *session).await.map(drop);
                if made.is_ok() {
                    self.collections.push(name);
                }
                made
            }
            95..=96 => {
                let Some(name) = self.ddl_coll() else { return };
                self.collections.retain(|c| *c != name);
                self.db.collection::<Document>(&name).drop().session(&mut *session).await
            }
            _ => return self.out_rename(session).await,
        };
        if result.is_ok() {
            self.times.push(session.operation_time().unwrap());
        }
    }

    /// What `$out` does: fill a new temporary collection, then rename it over an existing one.
    async fn out_rename(&mut self, session: &mut mongodb::ClientSession) {
        let tmp = format!("tmp.agg_out.{}", self.rng.random_range(0..1_000_000));
        let docs: Vec<Document> = (0..self.rng.random_range(1..20)).map(|i| random_doc(&mut self.rng, i)).collect();
        let target = match self.ddl_coll() {
            Some(existing) => existing,
            None => {
                let fresh = format!("c{}", self.rng.random_range(1000..2000));
                self.collections.push(fresh.clone());
                fresh
            }
        };
        if self.db.collection::<Document>(&tmp).insert_many(docs).session(&mut *session).await.is_err() {
            return;
        }
        let command = doc! {"renameCollection": format!("{}.{tmp}", self.db.name()), "to": format!("{}.{target}", self.db.name()), "dropTarget": true};
        if self.client.database("admin").run_command(command).session(&mut *session).await.is_ok() {
            self.times.push(session.operation_time().unwrap());
        }
    }

    /// A multi-document transaction over two collections; about a third abort.
    async fn transaction(&mut self, session: &mut mongodb::ClientSession) {
        let (a, b) = (self.coll(), self.coll());
        let (id, n) = (self.id(), self.rng.random_range(0..10));
        self.next_id += 1;
        let fresh = random_doc(&mut self.rng, self.next_id + 2_000_000);
        let commit = self.rng.random_range(0..3) > 0;
        if session.start_transaction().await.is_err() {
            return;
        }
        let ok = a.insert_one(fresh).session(&mut *session).await.is_ok()
            && b.update_one(doc! {"_id": id}, doc! {"$inc": {"n": n}, "$push": {"arr": n}})
                .session(&mut *session)
                .await
                .is_ok()
            && a.delete_one(doc! {"_id": self.id()}).session(&mut *session).await.is_ok();
        if ok && commit && session.commit_transaction().await.is_ok() {
            self.times.push(session.operation_time().unwrap());
        } else {
            let _ = session.abort_transaction().await;
        }
    }
}

/// Every collection of `db` on both servers: same names, documents, options and indexes.
/// Whether the source logs updates as change-stream style diffs (`updatedFields`, as SecantusDB does) rather than
/// mongod's `$v:2` diffs. Those say which fields an update set but not whether each was new (appended) or already
/// there (kept in place), so replaying an update over a document the dump read after a later update can order its
/// fields differently from the source, values equal (seen in 1 of 4 runs of seed 126). mongod's diffs mark new
/// fields (`i`), which replay moves to the end, so against mongod documents must match byte for byte.
async fn logs_change_stream_diffs(source: &Client) -> bool {
    let oplog = source.database("local").collection::<Document>("oplog.rs");
    oplog.find_one(doc! {"op": "u", "o.diff.updatedFields": {"$exists": true}}).await.unwrap().is_some()
}

/// Collections the source lists that the restore lacks, which are empty and which the source's own oplog renamed
/// away: SecantusDB sometimes keeps listing the source of a `renameCollection … dropTarget` (seen once in 126
/// seeds). The restore follows the oplog; the server's catalog disagrees with it, so such a collection is no
/// evidence against the restore.
async fn phantoms(source: &Client, db: &str, expected: &BTreeSet<String>, got: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for name in expected.difference(got) {
        let oplog = source.database("local").collection::<Document>("oplog.rs");
        let last = |filter: Document| {
            let oplog = oplog.clone();
            async move {
                let entry = oplog.find_one(filter).sort(doc! {"ts": -1}).await.unwrap();
                entry.and_then(|e| e.get_timestamp("ts").ok())
            }
        };
        let renamed = last(doc! {"op": "c", "o.renameCollection": format!("{db}.{name}")}).await;
        let created = last(doc! {"op": "c", "ns": format!("{db}.$cmd"), "o.create": name}).await;
        // Renamed away after its last creation, and empty: the oplog says it is gone.
        if renamed.is_some() && renamed > created && raw_docs(source, db, name).await.is_empty() {
            found.push(name.clone());
        }
    }
    found
}

async fn assert_same(source: &Client, db: &str, target: &Client, target_db: &str, context: &str) {
    let names = |c: Client, d: String| async move {
        c.database(&d).list_collection_names().await.unwrap().into_iter().collect::<BTreeSet<_>>()
    };
    let (mut expected, got) = (names(source.clone(), db.into()).await, names(target.clone(), target_db.into()).await);
    for phantom in phantoms(source, db, &expected, &got).await {
        eprintln!(
            "{context}: SecantusDB still lists {db}.{phantom}, empty, after its own oplog renamed it away: ignored"
        );
        expected.remove(&phantom);
    }
    assert_eq!(got, expected, "{context}: collections differ");
    for coll in &expected {
        let (restored, source_docs) = (raw_docs(target, target_db, coll).await, raw_docs(source, db, coll).await);
        let decoded =
            |docs: &[Vec<u8>]| docs.iter().map(|d| Document::from_reader(&d[..]).unwrap()).collect::<Vec<_>>();
        if restored != source_docs
            && decoded(&restored) == decoded(&source_docs)
            && logs_change_stream_diffs(source).await
        {
            // Equal values, fields in another order: see `logs_change_stream_diffs`.
            eprintln!("{context}: documents of {coll} equal but for field order (change-stream style update entries)");
            continue;
        }
        if restored != source_docs {
            // Raw bytes: field order counts, which `Document` equality ignores.
            let decode = |d: &Vec<u8>| Document::from_reader(&d[..]).unwrap().to_string();
            let differ = restored.iter().zip(&source_docs).find(|(a, b)| a != b).map(|(a, b)| (decode(a), decode(b)));
            panic!(
                "{context}: documents of {coll} differ ({} restored, {} on the source); first difference: {differ:?}",
                restored.len(),
                source_docs.len()
            );
        }
        assert_eq!(
            collection_options(target, target_db, coll).await,
            collection_options(source, db, coll).await,
            "{context}: options of {coll}"
        );
        let specs = |v: Vec<Document>| {
            v.into_iter()
                .map(|mut d| {
                    d.remove("ns");
                    d.remove("v");
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            specs(indexes(target, target_db, coll).await),
            specs(indexes(source, db, coll).await),
            "{context}: indexes of {coll}"
        );
    }
}

async fn ballast(client: &Client) -> String {
    let db = unique("ballast");
    let coll = client.database(&db).collection::<Document>("ballast");
    for c in 0..(BALLAST_DOCS / 5000) {
        coll.insert_many((0..5000).map(|i| doc! {"_id": c * 5000 + i, "pad": "b".repeat(300)})).await.unwrap();
    }
    db
}

/// One seed: writers against a backup of `db.*` (plus the ballast), then restore and compare. Returns false when
/// the backup refused, loudly, because a collection vanished without a trace in the oplog (SecantusDB's catalog can
/// show a collection whose rename or drop is already behind the window's start): refusing is right there, and the
/// caller bounds how often it may happen.
async fn differential(source: &Client, source_uri: &str, ballast_db: &str, target: &Client, seed: u64) -> bool {
    let parallel = if seed.is_multiple_of(2) { 4 } else { 1 };
    let db = unique(&format!("pitr{seed}"));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut collections = Vec::new();
    for c in 0..3 {
        let name = format!("c{c}");
        let docs: Vec<Document> = (0..2000).map(|i| random_doc(&mut rng, i)).collect();
        source.database(&db).collection::<Document>(&name).insert_many(docs).await.unwrap();
        collections.push(name);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let mut writer = Writer {
            rng: StdRng::seed_from_u64(seed * 1000 + w),
            db: source.database(&db),
            client: source.clone(),
            collections: collections.clone(),
            next_id: 2000 + (w as i64) * 10_000_000,
            times: Vec::new(),
        };
        let (stop, progress, client) = (stop.clone(), progress.clone(), source.clone());
        writers.push(tokio::spawn(async move {
            let mut session = client.start_session().await.unwrap();
            // Write from before the window opens until about half of the ballast is read.
            while !stop.load(Ordering::Relaxed) && progress.totals().0 < u64::try_from(BALLAST_DOCS / 2).unwrap() {
                writer.step(&mut session).await;
            }
            writer.times
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(
        dir.path(),
        &[format!("{db}.*"), format!("{ballast_db}.*")],
        &format!("parallel_collections = {parallel}\nbatch_size = 200\ncompression = \"zstd\""),
    );
    config.mongodb.uri = source_uri.to_string();
    let store = FilesystemStore::new(dir.path());
    let filter = NamespaceFilter::new(&config.backup.include, &[]).unwrap();
    let result = backup::run(&config, BackupId::new(chrono::Utc::now()), &filter, &store, &progress).await;
    stop.store(true, Ordering::Relaxed);
    let manifest: Manifest = match result {
        Ok(manifest) => manifest,
        // The two refusals by design when a writer's DDL hits a collection mid-read (a `$out` renames its temporary
        // collection over a target): no manifest, "run the backup again".
        Err(e)
            if ["vanished while the backup read it", "so the backup may hold only part of it"]
                .iter()
                .any(|refusal| e.to_string().contains(refusal)) =>
        {
            eprintln!("seed {seed}: backup refused: {e}");
            for w in writers {
                w.await.unwrap();
            }
            assert!(store.list("").await.unwrap().iter().all(|o| !o.key.ends_with("manifest.json")));
            return false;
        }
        Err(e) => panic!("seed {seed}: backup failed: {e}"),
    };
    let mut times = Vec::new();
    for w in writers {
        times.extend(w.await.unwrap());
    }
    let (start, end): (Timestamp, Timestamp) =
        (manifest.oplog.start.unwrap().into(), manifest.oplog.end.unwrap().into());
    assert!(
        times.iter().all(|t| *t <= end),
        "seed {seed}: a write landed after the window closed: the writers outran the dump"
    );
    assert!(times.iter().filter(|t| **t > start).count() > 10, "seed {seed}: too few writes inside the window");

    let target_db = unique("restored");
    let options = RestoreOptions {
        filter: NamespaceFilter::new(&[format!("{db}.*")], &[]).unwrap(),
        renames: vec![Rename::new(&format!("{db}.$c$"), &format!("{target_db}.$c$")).unwrap()],
        ..restore_options(&[], &[], false)
    };
    let input = store.get_stream(&backup::archive_key("t", &manifest.id, manifest.compression)).await.unwrap();
    let report = restore::restore(input, target, &options).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let context =
        format!("seed {seed} (parallel {parallel}, {} writes, {} replayed)", times.len(), report.replay.applied);
    let report = report.replay;
    assert!(report.open_transactions.is_empty(), "{context}: {report:?}");
    assert_same(source, &db, target, &target_db, &context).await;
    eprintln!("{context}: restored exactly");
    source.database(&db).drop().await.unwrap();
    target.database(&target_db).drop().await.unwrap();
    true
}

#[tokio::test]
async fn random_writers_during_a_backup_restore_to_the_source_exactly() {
    // A source of its own: the other tests of this file write fast enough to the shared server (100 oplog entries
    // per `update_many`) to roll its 100,000-entry oplog over during a seed's dump, which fails that backup, rightly.
    let (source_data, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut source_server, source_uri) = own_server(source_data.path());
    let source = Client::with_uri_str(&source_uri).await.unwrap();
    let (mut server, uri) = own_server(data.path());
    let target = Client::with_uri_str(&uri).await.unwrap();
    let ballast_db = ballast(&source).await;
    let seeds = seeds();
    let mut refused = 0;
    for &seed in &seeds {
        if !differential(&source, &source_uri, &ballast_db, &target, seed).await {
            refused += 1;
        }
    }
    eprintln!("{} seeds restored exactly, {refused} backups refused", seeds.len() - refused);
    assert!(refused * 4 <= seeds.len(), "{refused} of {} backups refused: too many to trust the rest", seeds.len());
    server.kill().unwrap();
    source_server.kill().unwrap();
}

#[tokio::test]
async fn restoring_a_backup_of_a_into_the_live_server_leaves_b_untouched() {
    let client = client().await;
    let (a, b) = (unique("fa"), unique("fb"));
    client
        .database(&a)
        .collection::<Document>("x")
        .insert_many((0..20_000).map(|i| doc! {"_id": i, "pad": "a".repeat(100)}))
        .await
        .unwrap();
    let billing = client.database(&b).collection::<Document>("y");
    billing.insert_many((0..100).map(|i| doc! {"_id": i, "v": 0})).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (billing, stop) = (billing.clone(), stop.clone());
        tokio::spawn(async move {
            let mut v = 1;
            while !stop.load(Ordering::Relaxed) {
                billing.update_many(doc! {}, doc! {"$set": {"v": v}}).await.unwrap();
                billing.insert_one(doc! {"_id": 1000 + v, "v": v}).await.unwrap();
                v += 1;
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[format!("{a}.*")], "batch_size = 100\nparallel_collections = 1");
    let manifest = run_backup(&config).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    billing.update_many(doc! {}, doc! {"$set": {"v": -1}}).await.unwrap();
    let before = raw_docs(&client, &b, "y").await;
    let options =
        RestoreOptions { filter: NamespaceFilter::all(), renames: Vec::new(), ..restore_options(&[], &[], true) };
    let store = FilesystemStore::new(dir.path());
    let input = store.get_stream(&backup::archive_key("t", &manifest.id, manifest.compression)).await.unwrap();
    let report = restore::restore(input, &client, &options).await.unwrap();
    assert_eq!(report.replay.outside_backup, 0, "the slice holds nothing outside the backup");
    assert_eq!(raw_docs(&client, &b, "y").await, before, "restoring a backup of {a}.* changed {b}.y");
    assert_eq!(raw_docs(&client, &a, "x").await.len(), 20_000);
}

/// A backup of `db.*` with one reader: a large collection, read first, and `small`, already listed, on which
/// `command` (run in `command_db`) acts once reading has started, before `small`'s turn. Returns the backup's result
/// and its store (with the directory that holds it).
async fn backup_while_ddl_runs(
    client: &Client,
    db: &str,
    small: &str,
    command_db: &str,
    command: Document,
) -> (mongo_backup_agent::error::Result<Manifest>, FilesystemStore, tempfile::TempDir) {
    let large = client.database(db).collection::<Document>("large");
    for c in 0..4 {
        large.insert_many((0..5000).map(|i| doc! {"_id": c * 5000 + i, "pad": "m".repeat(200)})).await.unwrap();
    }
    client.database(db).collection::<Document>(small).insert_many((0..10).map(|i| doc! {"_id": i})).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[format!("{db}.*")], "batch_size = 50\nparallel_collections = 1");
    let progress = Arc::new(Progress::default());
    let ddl = {
        let (client, progress, command_db) = (client.clone(), progress.clone(), command_db.to_string());
        tokio::spawn(async move {
            while progress.totals().0 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            client.database(&command_db).run_command(command).await.unwrap();
        })
    };
    let store = FilesystemStore::new(dir.path());
    let filter = NamespaceFilter::new(&config.backup.include, &[]).unwrap();
    let result = backup::run(&config, BackupId::new(chrono::Utc::now()), &filter, &store, &progress).await;
    ddl.await.unwrap();
    (result, store, dir)
}

#[tokio::test]
async fn a_collection_renamed_while_dumped_fails_the_backup() {
    let client = client().await;
    let db = unique("ren");
    let rename = doc! {"renameCollection": format!("{db}.moving"), "to": format!("{db}.moved")};
    let (result, store, _dir) = backup_while_ddl_runs(&client, &db, "moving", "admin", rename).await;
    let err = result.expect_err("a backup whose collection moved under it must fail").to_string();
    assert!(err.contains(&format!("{db}.moving was renamed to {db}.moved")), "{err}");
    assert!(store.list("").await.unwrap().iter().all(|o| !o.key.ends_with("manifest.json")));
}

#[tokio::test]
async fn a_collection_dropped_during_the_backup_is_noted_and_restored_as_dropped() {
    let client = client().await;
    let db = unique("dropped");
    let (result, store, _dir) = backup_while_ddl_runs(&client, &db, "doomed", &db, doc! {"drop": "doomed"}).await;
    let manifest = result.unwrap();
    assert_eq!(manifest.dropped_during_backup, vec![format!("{db}.doomed")]);
    let target = unique("dropped_r");
    let options = RestoreOptions {
        filter: NamespaceFilter::all(),
        renames: vec![Rename::new(&format!("{db}.$c$"), &format!("{target}.$c$")).unwrap()],
        ..restore_options(&[], &[], false)
    };
    let input = store.get_stream(&backup::archive_key("t", &manifest.id, manifest.compression)).await.unwrap();
    restore::restore(input, &client, &options).await.unwrap();
    assert_same(&client, &db, &client, &target, "dropped during the backup").await;
}

#[tokio::test]
async fn an_oplog_that_rolls_over_during_the_dump_fails_the_backup() {
    // A server whose oplog keeps 500 entries: a writer pushes the start out of it while the dump reads.
    let data = tempfile::tempdir().unwrap();
    let (mut server, uri) = own_server_with(data.path(), &["--oplog-max-entries", "500"]);
    let client = Client::with_uri_str(&uri).await.unwrap();
    let coll = client.database("big").collection::<Document>("c");
    for c in 0..10 {
        coll.insert_many((0..5000).map(|i| doc! {"_id": c * 5000 + i, "pad": "r".repeat(200)})).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = mongo_backup_agent::config::Config::parse(&format!(
        "[mongodb]\nuri = {uri:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[backup]\nbatch_size = 100\nparallel_collections = 1\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let churn = client.database("churn").collection::<Document>("w");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                churn.insert_many((i..i + 100).map(|id| doc! {"_id": id})).await.unwrap();
                i += 100;
            }
            i
        })
    };
    let store = FilesystemStore::new(dir.path());
    let result =
        backup::run(&config, BackupId::new(chrono::Utc::now()), &NamespaceFilter::all(), &store, &progress).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 1000, "the writer must outrun the 500-entry oplog during the dump ({writes} writes)");
    let err = result.expect_err("a backup whose oplog rolled over must fail").to_string();
    assert!(err.contains("the oplog rolled over during the backup"), "{err}");
    assert!(store.list("").await.unwrap().iter().all(|o| !o.key.ends_with("manifest.json")));
    server.kill().unwrap();
}
