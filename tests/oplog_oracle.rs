//! Replay against an independent oracle: oplog entries written by real MongoDB servers (mongo-tools' test data, kept
//! in `tests/fixtures/mongo-tools-oplog/`), each restored from an archive into the real test server, and compared
//! with what a real server holds after applying them: the recorded post-images of the transaction cases, and for the
//! command files the collections, options and indexes the entries describe (each expectation written down here).

mod common;

use std::path::PathBuf;

use bson::{Bson, Document, doc};
use common::*;
use futures::TryStreamExt;
use mongo_backup_agent::archive::{
    ArchiveHeader, ArchiveWriter, CollectionKind, CollectionMetadata, Namespace, PreludeEntry,
};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::restore::{self, Rename, RestoreOptions, RestoreReport};
use mongodb::Client;

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mongo-tools-oplog").join(path)
}

/// Every document of a `.bson` file (documents back to back, as bsondump reads them).
fn bson_file(path: &str) -> Vec<Document> {
    let bytes = std::fs::read(testdata(path)).unwrap();
    let mut docs = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        docs.push(Document::from_reader(&rest[..len]).unwrap());
        rest = &rest[len..];
    }
    docs
}

/// One collection the archive holds before its oplog: name, indexes beyond `_id`, options, documents. Archives whose
/// oplog creates its collections still hold one collection of that database: restore refuses a rename rule that
/// matches nothing the archive lists, and these tests rename every database.
struct Collection {
    ns: &'static str,
    indexes: Vec<Document>,
    options: Document,
    docs: Vec<Document>,
}

fn empty(ns: &'static str) -> Collection {
    Collection { ns, indexes: Vec::new(), options: Document::new(), docs: Vec::new() }
}

/// An archive of `collections` and an oplog slice of `ops`.
async fn archive(collections: &[Collection], ops: &[Document]) -> Vec<u8> {
    let mut prelude: Vec<PreludeEntry> = collections
        .iter()
        .map(|c| {
            let namespace = Namespace::parse(c.ns).unwrap();
            let mut indexes = vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}];
            indexes.extend(c.indexes.iter().cloned());
            let metadata = CollectionMetadata {
                options: c.options.clone(),
                indexes,
                uuid: None,
                collection_name: namespace.collection.clone(),
                kind: CollectionKind::Collection,
            };
            PreludeEntry { namespace, metadata: metadata.to_extended_json(), kind: "collection".into() }
        })
        .collect();
    prelude.push(PreludeEntry { namespace: Namespace::oplog(), metadata: String::new(), kind: String::new() });
    let mut writer = ArchiveWriter::begin(Vec::new(), &ArchiveHeader::new(1, "4.4.0"), &prelude).await.unwrap();
    let encode = |docs: &[Document]| {
        let mut bytes = Vec::new();
        docs.iter().for_each(|d| d.to_writer(&mut bytes).unwrap());
        bytes
    };
    for (i, c) in collections.iter().enumerate() {
        if !c.docs.is_empty() {
            writer.write_block(i, &encode(&c.docs), c.docs.len() as u64).await.unwrap();
        }
        writer.end_collection(i).await.unwrap();
    }
    let oplog = collections.len();
    if !ops.is_empty() {
        writer.write_block(oplog, &encode(ops), ops.len() as u64).await.unwrap();
    }
    writer.end_collection(oplog).await.unwrap();
    writer.finish().await.unwrap().0
}

/// Restores `archive` with every source database `dbs` renamed to `<prefix>_<db>`.
async fn restore_renamed(client: &Client, archive: Vec<u8>, dbs: &[&str], prefix: &str) -> RestoreReport {
    let renames =
        dbs.iter().map(|db| Rename::new(&format!("{db}.$c$"), &format!("{prefix}_{db}.$c$")).unwrap()).collect();
    let options = RestoreOptions { renames, ..oracle_options() };
    restore::restore(std::io::Cursor::new(archive), client, &options).await.unwrap()
}

fn oracle_options() -> RestoreOptions {
    restore_options(&[], &[], false)
}

async fn documents(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    client
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn index_names(client: &Client, db: &str, coll: &str) -> Vec<String> {
    indexes(client, db, coll).await.iter().map(|i| i.get_str("name").unwrap().to_string()).collect()
}

async fn index(client: &Client, db: &str, coll: &str, name: &str) -> Document {
    indexes(client, db, coll)
        .await
        .into_iter()
        .find(|i| i.get_str("name") == Ok(name))
        .unwrap_or_else(|| panic!("no index {name} on {db}.{coll}"))
}

async fn exists(client: &Client, db: &str, coll: &str) -> bool {
    client.database(db).list_collection_names().await.unwrap().iter().any(|c| c == coll)
}

/// Parses one document of the JSON file, whose last case uses the legacy `{"$binary": "…", "$type": "04"}` form.
fn json_document(value: &serde_json::Value) -> Document {
    fn modern(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                if let (Some(serde_json::Value::String(b64)), Some(serde_json::Value::String(subtype)), 2) =
                    (map.get("$binary"), map.get("$type"), map.len())
                {
                    return serde_json::json!({"$binary": {"base64": b64, "subType": subtype}});
                }
                map.into_iter().map(|(k, v)| (k, modern(v))).collect::<serde_json::Map<_, _>>().into()
            }
            serde_json::Value::Array(items) => items.into_iter().map(modern).collect(),
            other => other,
        }
    }
    match Bson::try_from(modern(value.clone())).unwrap() {
        Bson::Document(d) => d,
        other => panic!("not a document: {other}"),
    }
}

#[tokio::test]
async fn every_transaction_case_restores_to_the_real_servers_post_image() {
    let client = client().await;
    let cases: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata("txn_oplog_entries.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 12, "the oracle file holds 12 cases");
    let mut failures = Vec::new();
    for (name, case) in &cases {
        let ops: Vec<Document> = case["ops"].as_array().unwrap().iter().map(json_document).collect();
        // One case (vectored inserts with multiOpType) records no post-image: its expectation is its two inserts.
        let (ns, expected): (Namespace, Vec<Document>) = match case.get("postimage") {
            Some(post) => (
                Namespace::parse(case["ns"].as_str().unwrap()).unwrap(),
                post.as_array().unwrap().iter().map(json_document).collect(),
            ),
            None => {
                let inner = mongo_backup_agent::oplog::entry::apply_ops(&ops[0]).unwrap();
                let ns = Namespace::parse(inner[0].get_str("ns").unwrap()).unwrap();
                (ns, inner.iter().map(|op| op.get_document("o").unwrap().clone()).collect())
            }
        };
        let prefix = unique("txn");
        let collection = Box::leak(ns.to_string().into_boxed_str());
        let report = restore_renamed(&client, archive(&[empty(collection)], &ops).await, &[&ns.db], &prefix).await;
        let got = documents(&client, &format!("{prefix}_{}", ns.db), &ns.collection).await;
        if got != expected {
            failures.push(format!("{name}: restored {got:?}, the real server held {expected:?}"));
        }
        assert!(report.replay.open_transactions.is_empty(), "{name}: every transaction of the case completes");
        if name == "not transaction with lsid and txnNumber and command" {
            assert!(index_names(&client, &format!("{prefix}_{}", ns.db), &ns.collection).await.contains(&"x_1".into()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_transaction_without_its_commit_in_the_slice_is_not_applied_and_is_reported() {
    let client = client().await;
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("txn_oplog_entries.json")).unwrap()).unwrap();
    for (case, prepared) in [("large, prepared, committed", true), ("large, unprepared", false)] {
        let mut ops: Vec<Document> = cases[case]["ops"].as_array().unwrap().iter().map(json_document).collect();
        ops.pop();
        let ns = Namespace::parse(cases[case]["ns"].as_str().unwrap()).unwrap();
        let prefix = unique("open");
        let collection = Box::leak(ns.to_string().into_boxed_str());
        let report = restore_renamed(&client, archive(&[empty(collection)], &ops).await, &[&ns.db], &prefix).await;
        assert!(documents(&client, &format!("{prefix}_{}", ns.db), &ns.collection).await.is_empty(), "{case}");
        assert_eq!(report.replay.open_transactions.len(), 1, "{case}");
        assert_eq!(report.replay.open_transactions[0].prepared, prepared, "{case}");
    }
}

fn foo_with_f_1() -> Collection {
    Collection {
        ns: "test.foo",
        indexes: vec![doc! {"v": 2, "key": {"f": 1.0}, "name": "f_1", "expireAfterSeconds": 1000_i64}],
        options: Document::new(),
        docs: vec![doc! {"_id": 1, "f": 1}],
    }
}

#[tokio::test]
async fn index_commands_as_real_servers_log_them() {
    let client = client().await;
    // createIndexes in the flattened form.
    let p = unique("ci");
    restore_renamed(
        &client,
        archive(&[empty("test.foo")], &bson_file("oplogs/create_index.bson")).await,
        &["test"],
        &p,
    )
    .await;
    assert_eq!(index(&client, &format!("{p}_test"), "foo", "f_1").await.get_document("key").unwrap(), &doc! {"f": 1.0});
    // Two-phase build: built at commitIndexBuild.
    let p = unique("commit");
    restore_renamed(
        &client,
        archive(&[empty("test.foo")], &bson_file("oplogs/commit_index.bson")).await,
        &["test"],
        &p,
    )
    .await;
    assert!(index_names(&client, &format!("{p}_test"), "foo").await.contains(&"a_1".into()));
    // Started then aborted: the index must not exist.
    let p = unique("abort");
    let report = restore_renamed(
        &client,
        archive(&[empty("test.skip_index_entries")], &bson_file("abort_index_build.oplog.bson")).await,
        &["test"],
        &p,
    )
    .await;
    assert_eq!(index_names(&client, &format!("{p}_test"), "skip_index_entries").await, vec!["_id_".to_string()]);
    assert!(report.replay.open_index_builds.is_empty());
    // A start without its commit by the slice's end: not built, and reported.
    let start_only = vec![bson_file("oplogs/commit_index.bson").remove(0)];
    let p = unique("open_build");
    let report = restore_renamed(&client, archive(&[empty("test.foo")], &start_only).await, &["test"], &p).await;
    assert_eq!(index_names(&client, &format!("{p}_test"), "foo").await, vec!["_id_".to_string()]);
    assert_eq!(report.replay.open_index_builds.len(), 1);
    // dropIndexes by name.
    let p = unique("di");
    restore_renamed(&client, archive(&[foo_with_f_1()], &bson_file("oplogs/drop_index.bson")).await, &["test"], &p)
        .await;
    assert_eq!(index_names(&client, &format!("{p}_test"), "foo").await, vec!["_id_".to_string()]);
    // A whole session: create, no-ops, a_1, and b_1 with a partial filter (logged out of ts order by the server).
    let p = unique("session");
    restore_renamed(
        &client,
        archive(&[empty("create_indexes.other")], &bson_file("create_indexes.oplog.bson")).await,
        &["create_indexes"],
        &p,
    )
    .await;
    let db = format!("{p}_create_indexes");
    assert_eq!(index_names(&client, &db, "test").await, vec!["_id_".to_string(), "a_1".into(), "b_1".into()]);
    assert!(index(&client, &db, "test", "b_1").await.contains_key("partialFilterExpression"));
}

#[tokio::test]
async fn collmod_changes_ttl_and_hides_indexes() {
    let client = client().await;
    let p = unique("collmod");
    restore_renamed(&client, archive(&[foo_with_f_1()], &bson_file("oplogs/collMod.bson")).await, &["test"], &p).await;
    let f_1 = index(&client, &format!("{p}_test"), "foo", "f_1").await;
    assert_eq!(
        f_1.get("expireAfterSeconds").and_then(Bson::as_i64).or(f_1.get_i32("expireAfterSeconds").ok().map(i64::from)),
        Some(3600)
    );
    let p = unique("hidden");
    restore_renamed(
        &client,
        archive(&[foo_with_f_1()], &bson_file("oplogs/collMod_with_hidden.bson")).await,
        &["test"],
        &p,
    )
    .await;
    let f_1 = index(&client, &format!("{p}_test"), "foo", "f_1").await;
    assert_eq!(f_1.get_bool("hidden"), Ok(true), "{f_1}");
}

#[tokio::test]
async fn drops_remove_only_what_the_backup_owns() {
    let client = client().await;
    let p = unique("drop");
    restore_renamed(
        &client,
        archive(&[foo_with_f_1()], &bson_file("oplogs/drop_collection.bson")).await,
        &["test"],
        &p,
    )
    .await;
    assert!(!exists(&client, &format!("{p}_test"), "foo").await);
    // dropDatabase drops the backup's collections in that database, not a bystander living in the target.
    let p = unique("dropdb");
    let db = format!("{p}_test");
    client.database(&db).collection::<Document>("bystander").insert_one(doc! {"_id": 1}).await.unwrap();
    restore_renamed(&client, archive(&[foo_with_f_1()], &bson_file("oplogs/drop_db.bson")).await, &["test"], &p).await;
    assert!(!exists(&client, &db, "foo").await);
    assert_eq!(documents(&client, &db, "bystander").await, vec![doc! {"_id": 1}]);
}

#[tokio::test]
async fn vectored_inserts_and_validators() {
    let client = client().await;
    for file in ["oplogs/vectored_insert.bson", "oplogs/linked_vectored_inserts.bson"] {
        let ops = bson_file(file);
        let mut expected: Vec<Document> = ops
            .iter()
            .flat_map(|e| e.get_document("o").unwrap().get_array("applyOps").unwrap().clone())
            .map(|op| op.as_document().unwrap().get_document("o").unwrap().clone())
            .collect();
        expected.sort_by_key(|d| d.get_i32("_id").unwrap());
        let p = unique("vectored");
        restore_renamed(&client, archive(&[empty("mongodump_test_db.coll1")], &ops).await, &["mongodump_test_db"], &p)
            .await;
        assert_eq!(documents(&client, &format!("{p}_mongodump_test_db"), "coll1").await, expected, "{file}");
    }
    // Documents a validator rejects were written with bypassDocumentValidation: replay writes them too.
    let ops = bson_file("oplogs/bypassDocumentValidation.bson");
    let p = unique("bypass");
    restore_renamed(&client, archive(&[empty("mongodump_test_db.other")], &ops).await, &["mongodump_test_db"], &p)
        .await;
    let db = format!("{p}_mongodump_test_db");
    let fields: Vec<String> =
        documents(&client, &db, "coll1").await.iter().map(|d| d.get_str("testField").unwrap().to_string()).collect();
    let mut expected: Vec<String> = ops
        .iter()
        .filter(|e| e.get_str("op") == Ok("i"))
        .map(|e| e.get_document("o").unwrap().get_str("testField").unwrap().to_string())
        .collect();
    let mut fields_sorted = fields.clone();
    fields_sorted.sort();
    expected.sort();
    assert_eq!(fields_sorted, expected);
    assert!(collection_options(&client, &db, "coll1").await.contains_key("validator"));
}

#[tokio::test]
async fn a_mongodump_oplog_directory_dump_replays_onto_its_data() {
    let client = client().await;
    let data = bson_file("oplogdump/db1/c1.bson");
    let ops = bson_file("oplogdump/oplog.bson");
    let mut expected = data.clone();
    for entry in &ops {
        match entry.get_document("o").unwrap().get_array("applyOps") {
            Ok(inner) => {
                expected.extend(inner.iter().map(|op| op.as_document().unwrap().get_document("o").unwrap().clone()))
            }
            Err(_) => expected.push(entry.get_document("o").unwrap().clone()),
        }
    }
    expected.sort_by_key(|d| d.get_object_id("_id").unwrap());
    let c1 = Collection { ns: "db1.c1", indexes: Vec::new(), options: Document::new(), docs: data };
    let p = unique("dump");
    let report = restore_renamed(&client, archive(&[c1], &ops).await, &["db1"], &p).await;
    assert_eq!(documents(&client, &format!("{p}_db1"), "c1").await, expected);
    assert_eq!(report.replay.applied, 5);
}

/// collMod converting indexes to unique (prepareUnique, unique) and back (forceNonUnique, MongoDB 7.0+).
#[tokio::test]
async fn collmod_index_uniqueness() {
    let client = client().await;
    let ops = bson_file("oplogs/collMod_indexUniqueness.bson");
    let renamed = |p: &str| vec![Rename::new("mongodump_test_db.$c$", &format!("{p}.$c$")).unwrap()];
    let restore_ops = |ops: Vec<Document>, p: String| {
        let client = client.clone();
        async move {
            let options = RestoreOptions { renames: renamed(&p), ..oracle_options() };
            restore::restore(
                std::io::Cursor::new(archive(&[empty("mongodump_test_db.other")], &ops).await),
                &client,
                &options,
            )
            .await
        }
    };
    // Up to the first forceNonUnique: a_1 became unique; b_1 hidden, c_1 and d_1 TTL, d_1 hidden too.
    let first_force = ops.iter().position(|e| format!("{e}").contains("forceNonUnique")).unwrap();
    let p = unique("unique");
    restore_ops(ops[..first_force].to_vec(), p.clone()).await.unwrap();
    assert_eq!(index(&client, &p, "coll1", "a_1").await.get_bool("unique"), Ok(true));
    assert_eq!(index(&client, &p, "coll1", "b_1").await.get_bool("hidden"), Ok(true));
    let d_1 = index(&client, &p, "coll1", "d_1").await;
    assert!(d_1.get_bool("hidden") == Ok(true) && d_1.contains_key("expireAfterSeconds"), "{d_1}");
    // The whole file ends every index non-unique again; a server without forceNonUnique (SecantusDB) must make
    // the restore fail naming the command, never succeed with a_1 still unique.
    let p = unique("nonunique");
    match restore_ops(ops, p.clone()).await {
        Ok(_) => {
            for name in ["a_1", "b_1", "c_1", "d_1"] {
                assert_ne!(index(&client, &p, "coll1", name).await.get_bool("unique"), Ok(true), "{name}");
            }
        }
        Err(e) => {
            assert!(e.to_string().contains("collMod"), "{e}");
            let scratch = client.database(&unique("force"));
            scratch
                .collection::<Document>("c")
                .create_index(mongodb::IndexModel::builder().keys(doc! {"a": 1}).build())
                .await
                .unwrap();
            let direct =
                scratch.run_command(doc! {"collMod": "c", "index": {"name": "a_1", "forceNonUnique": true}}).await;
            assert!(direct.is_err(), "the server accepts forceNonUnique directly, so replay must too: {e}");
        }
    }
}

#[tokio::test]
async fn unknown_commands_fail_the_restore_unless_skipped_and_listed() {
    let client = client().await;
    let ops = vec![
        doc! {"ts": bson::Timestamp{time: 5, increment: 1}, "op": "i", "ns": "test.foo", "o": {"_id": 2}},
        doc! {"ts": bson::Timestamp{time: 5, increment: 2}, "op": "c", "ns": "test.$cmd", "o": {"futureCommand": "foo"}},
    ];
    let p = unique("unknown");
    let options =
        RestoreOptions { renames: vec![Rename::new("test.$c$", &format!("{p}.$c$")).unwrap()], ..oracle_options() };
    let err = restore::restore(std::io::Cursor::new(archive(&[empty("test.foo")], &ops).await), &client, &options)
        .await
        .expect_err("an unknown command must fail the restore");
    assert!(
        err.to_string().contains("futureCommand on test at ts 5:2") && err.to_string().contains("--oplog-skip-unknown"),
        "{err}"
    );
    let p = unique("skipped");
    let options = RestoreOptions {
        renames: vec![Rename::new("test.$c$", &format!("{p}.$c$")).unwrap()],
        oplog_skip_unknown: true,
        ..oracle_options()
    };
    let report = restore::restore(std::io::Cursor::new(archive(&[empty("test.foo")], &ops).await), &client, &options)
        .await
        .unwrap();
    assert_eq!(report.replay.skipped_commands, vec!["futureCommand on test at ts 5:2".to_string()]);
    assert_eq!(documents(&client, &p, "foo").await, vec![doc! {"_id": 2}]);
}

#[tokio::test]
async fn renames_follow_ns_from_and_ns_to_inside_command_bodies() {
    let client = client().await;
    let ts = |i: u32| bson::Timestamp { time: 7, increment: i };
    let ops = vec![
        doc! {"ts": ts(1), "op": "i", "ns": "test.a", "o": {"_id": 9}},
        doc! {"ts": ts(2), "op": "c", "ns": "test.$cmd", "o": {"renameCollection": "test.a", "to": "test.b", "dropTarget": true}},
        doc! {"ts": ts(3), "op": "i", "ns": "test.b", "o": {"_id": 10}},
        // Renamed out of what is restored: the collection leaves.
        doc! {"ts": ts(4), "op": "c", "ns": "test.$cmd", "o": {"renameCollection": "test.c", "to": "other.c"}},
    ];
    let collections = [
        Collection { ns: "test.a", indexes: Vec::new(), options: Document::new(), docs: vec![doc! {"_id": 1}] },
        Collection { ns: "test.b", indexes: Vec::new(), options: Document::new(), docs: vec![doc! {"_id": 99}] },
        Collection { ns: "test.c", indexes: Vec::new(), options: Document::new(), docs: vec![doc! {"_id": 3}] },
    ];
    let p = unique("renames");
    let options = RestoreOptions {
        filter: NamespaceFilter::new(&["test.*".to_string()], &[]).unwrap(),
        renames: vec![Rename::new("test.$c$", &format!("{p}.$c$")).unwrap()],
        ..oracle_options()
    };
    restore::restore(std::io::Cursor::new(archive(&collections, &ops).await), &client, &options).await.unwrap();
    assert!(!exists(&client, &p, "a").await);
    assert_eq!(documents(&client, &p, "b").await, vec![doc! {"_id": 1}, doc! {"_id": 9}, doc! {"_id": 10}]);
    assert!(!exists(&client, &p, "c").await, "renamed out of the restore: dropped");
    assert!(!exists(&client, "other", "c").await, "nothing is written outside the restore's namespaces");
}
