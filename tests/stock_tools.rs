//! Stock mongodump and mongorestore 100.18.0 as test peers (issue 15): stock mongorestore restores our archives
//! (plain, gzip, and the stored zstd through `zstd -dc`), we restore stock mongodump archives, and both tools given
//! the same restore options leave the same databases behind, except where README "Compatibility with mongodump and
//! mongorestore" lists a deliberate difference. Against the real server and the real binaries.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp, doc};
use common::*;
use futures::TryStreamExt;
use mongodb::Client;

/// Runs a stock tool against `uri` with `args`; panics with its output unless it succeeds.
fn stock(tool: &str, uri: &str, args: &[&str]) {
    let out = Command::new(mongo_tool(tool)).arg(format!("--uri={uri}")).args(args).output().unwrap();
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// `zstd -dc FILE | mongorestore --archive ARGS`: how a user restores our stored zstd archive with stock tools.
fn stock_restore_zstd(file: &Path, uri: &str, args: &[&str]) {
    let mut zstd = Command::new("zstd").arg("-dc").arg(file).stdout(Stdio::piped()).spawn().unwrap();
    let out = Command::new(mongo_tool("mongorestore"))
        .arg(format!("--uri={uri}"))
        .arg("--archive")
        .args(args)
        .stdin(zstd.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(zstd.wait().unwrap().success());
    assert!(out.status.success(), "zstd -dc | mongorestore failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Our `restore --archive FILE --to URI ARGS` through the binary: exit code, stdout, stderr.
fn restore_archive(file: &Path, to: &str, args: &[&str]) -> (i32, String, String) {
    cli(&[&["restore", "--archive", file.to_str().unwrap(), "--to", to], args].concat())
}

/// One document holding every BSON type (dbPointer through Extended JSON: the crate has no constructor for it).
fn every_type() -> Document {
    let oid = bson::oid::ObjectId::parse_str("5f1e2d3c4b5a69788796a5b4").unwrap();
    let db_pointer =
        Bson::try_from(serde_json::json!({"$dbPointer": {"$ref": "db.coll", "$id": {"$oid": oid.to_hex()}}})).unwrap();
    let binary = |subtype, bytes: &[u8]| Bson::Binary(Binary { subtype, bytes: bytes.to_vec() });
    doc! {
        "_id": 0,
        "double": 1.5, "negative_zero": -0.0, "infinity": f64::INFINITY,
        "string": "héllo wörld ✓",
        "document": {"nested": {"deeper": [1, {"x": "y"}]}},
        "array": [1, "two", {"three": 3}, [4.0], Bson::Null],
        "binary": binary(BinarySubtype::Generic, b"\x00\x01\x02\xff"),
        "binary_old": binary(BinarySubtype::BinaryOld, b"old"),
        "uuid": binary(BinarySubtype::Uuid, &[7; 16]),
        "md5": binary(BinarySubtype::Md5, &[9; 16]),
        "user_defined": binary(BinarySubtype::UserDefined(0x80), b"mine"),
        "undefined": Bson::Undefined,
        "object_id": oid,
        "bool": true,
        "date": bson::DateTime::from_millis(1_700_000_000_123),
        "date_before_1970": bson::DateTime::from_millis(-86_400_000),
        "null": Bson::Null,
        "regex": Regex { pattern: "^a.c$".into(), options: "imsx".into() },
        "db_pointer": db_pointer,
        "javascript": Bson::JavaScriptCode("function () { return 1; }".into()),
        "symbol": Bson::Symbol("sym".into()),
        "javascript_with_scope": JavaScriptCodeWithScope { code: "x + 1".into(), scope: doc! {"x": 41} },
        "int32": i32::MIN,
        "timestamp": Timestamp { time: 1_700_000_000, increment: 7 },
        "int64": i64::MAX,
        "decimal128": Bson::Decimal128("1234567890.0987654321".parse().unwrap()),
        "min_key": Bson::MinKey,
        "max_key": Bson::MaxKey,
    }
}

/// The varied data set of issue 15 in `a` and `b`: every BSON type, capped, validator, collation, views, TTL /
/// partial / unique / compound / sparse indexes, documents near 16 MiB.
async fn seed(client: &Client, a: &str, b: &str) {
    let d = client.database(a);
    let types = d.collection::<RawDocumentBuf>("types");
    let mut docs = vec![RawDocumentBuf::from_document(&every_type()).unwrap()];
    docs.extend((1..20).map(|i| RawDocumentBuf::from_document(&doc! {"_id": i, "string": format!("s{i}")}).unwrap()));
    types.insert_many(docs).await.unwrap();
    let commands = [
        doc! {"create": "capped", "capped": true, "size": 65536, "max": 1000},
        doc! {"create": "validated", "validator": {"$jsonSchema": {"required": ["n"]}}, "validationLevel": "moderate",
        "validationAction": "error"},
        doc! {"create": "collated", "collation": {"locale": "fr", "strength": 2}},
        doc! {"create": "types_view", "viewOn": "types", "pipeline": [{"$project": {"string": 1}}]},
        doc! {"create": "collated_view", "viewOn": "collated", "pipeline": [{"$match": {"name": "é"}}],
        "collation": {"locale": "fr", "strength": 2}},
        doc! {"createIndexes": "collated", "indexes": [{"key": {"name": 1}, "name": "name_1"}]},
        doc! {"createIndexes": "indexed", "indexes": [
            {"key": {"created": 1}, "name": "ttl", "expireAfterSeconds": 3600},
            {"key": {"score": 1}, "name": "partial", "partialFilterExpression": {"score": {"$gt": 5}}},
            {"key": {"email": 1}, "name": "email_unique", "unique": true},
            {"key": {"a": 1, "b": -1}, "name": "compound"},
            {"key": {"s": 1}, "name": "sparse", "sparse": true},
        ]},
    ];
    for command in commands {
        d.run_command(command).await.unwrap();
    }
    let insert = |coll: &str, docs: Vec<Document>| {
        let coll = d.collection::<Document>(coll);
        async move { coll.insert_many(docs).await.unwrap() }
    };
    insert("capped", (0..50).map(|i| doc! {"_id": i, "n": i}).collect()).await;
    insert("validated", (0..10).map(|i| doc! {"_id": i, "n": i}).collect()).await;
    insert(
        "collated",
        ["é", "e", "E", "f"].iter().enumerate().map(|(i, n)| doc! {"_id": i as i32, "name": *n}).collect(),
    )
    .await;
    let now = bson::DateTime::now();
    insert(
        "indexed",
        (0..100)
            .map(|i| doc! {"_id": i, "created": now, "score": i % 10, "email": format!("u{i}@x"), "a": i % 3, "b": i})
            .collect(),
    )
    .await;
    // Two documents just under the 16 MiB BSON limit (the 40 bytes are _id and the binary's framing).
    let near_limit = |id: i32| doc! {"_id": id, "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![id as u8; (16 << 20) - 40] }};
    for id in 0..2 {
        d.collection::<Document>("big").insert_one(near_limit(id)).await.unwrap();
    }
    let other = client.database(b).collection::<Document>("other");
    other.insert_many((0..20).map(|i| doc! {"_id": i, "k": format!("k{i}")})).await.unwrap();
    client
        .database(b)
        .run_command(doc! {"createIndexes": "other", "indexes": [{"key": {"k": 1}, "name": "k", "unique": true}]})
        .await
        .unwrap();
}

/// A collection as a restore must reproduce it: type, options, index specs (by name) and documents (bytes, by `_id`).
type Collection = (String, Document, Vec<Document>, Vec<Vec<u8>>);

/// Every collection and view of `db` (server-internal `system.*` left out), by name.
async fn database(client: &Client, db: &str) -> BTreeMap<String, Collection> {
    let specs: Vec<Document> =
        client.database(db).run_cursor_command(doc! {"listCollections": 1}).await.unwrap().try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for spec in specs {
        let name = spec.get_str("name").unwrap().to_string();
        if name.starts_with("system.") {
            continue;
        }
        let kind = spec.get_str("type").unwrap_or("collection").to_string();
        let options = spec.get_document("options").cloned().unwrap_or_default();
        let (specs, docs) = if kind == "view" {
            (Vec::new(), Vec::new())
        } else {
            (indexes(client, db, &name).await, raw_docs(client, db, &name).await)
        };
        out.insert(name, (kind, options, specs, docs));
    }
    out
}

/// Asserts that `restored` on `to` holds exactly what `source` on `from` holds.
async fn assert_same(from: &Client, source: &str, to: &Client, restored: &str, how: &str) {
    let (expected, actual) = (database(from, source).await, database(to, restored).await);
    assert!(!expected.is_empty(), "{source} is empty");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{how}: collections differ");
    for (name, (kind, options, specs, docs)) in &expected {
        let (r_kind, r_options, r_specs, r_docs) = &actual[name];
        assert_eq!((r_kind, r_options), (kind, options), "{how}: type or options of {restored}.{name}");
        assert_eq!(r_specs, specs, "{how}: indexes of {restored}.{name}");
        assert_eq!(r_docs.len(), docs.len(), "{how}: document count of {restored}.{name}");
        assert!(r_docs == docs, "{how}: documents of {restored}.{name} are not byte-identical");
    }
}

/// Backs `a` and `b` up with the CLI (zstd, the default) and exports the backup uncompressed and gzip: the three
/// archives a user could hand to stock mongorestore.
#[tokio::test]
async fn stock_mongorestore_restores_our_archives() {
    let (a, b, client) = (unique("ours_a"), unique("ours_b"), client().await);
    seed(&client, &a, &b).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &[format!("{a}.*"), format!("{b}.*")]);
    let (code, out, err) = cli(&["--config", &config, "backup", "--json"]);
    assert_eq!(code, 0, "{err}");
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The filesystem store's layout: <path>/<prefix>/<id>/archive.zst (README "Storage layout").
    let stored = dir.path().join("store/t").join(manifest["id"].as_str().unwrap()).join("archive.zst");
    assert!(stored.is_file(), "{}", stored.display());
    let export = |compression: &str| {
        let file = dir.path().join(format!("export.{compression}"));
        let (code, _, err) = cli(&[
            "--config",
            &config,
            "export",
            "latest",
            "--out",
            file.to_str().unwrap(),
            "--compression",
            compression,
        ]);
        assert_eq!(code, 0, "{err}");
        file
    };
    let [plain, gzip] = ["none", "gzip"].map(|c| format!("--archive={}", export(c).display()));
    for (how, suffix) in [
        ("mongorestore --archive", "n"),
        ("mongorestore --gzip --archive", "g"),
        ("zstd -dc | mongorestore --archive", "z"),
    ] {
        let (to_a, to_b) = (format!("{a}_{suffix}"), format!("{b}_{suffix}"));
        let renames = [
            format!("--nsFrom={a}.*"),
            format!("--nsTo={to_a}.*"),
            format!("--nsFrom={b}.*"),
            format!("--nsTo={to_b}.*"),
        ];
        let renames: Vec<&str> = renames.iter().map(String::as_str).collect();
        match suffix {
            "n" => stock("mongorestore", &uri(), &[&[&*plain], &renames[..]].concat()),
            "g" => stock("mongorestore", &uri(), &[&["--gzip", &*gzip], &renames[..]].concat()),
            _ => stock_restore_zstd(&stored, &uri(), &renames),
        }
        assert_same(&client, &a, &client, &to_a, how).await;
        assert_same(&client, &b, &client, &to_b, how).await;
    }
}

/// Stock mongodump archives of a whole server and of one database, plain and gzip, restored by us.
#[tokio::test]
async fn we_restore_stock_mongodump_archives() {
    let dir = tempfile::tempdir().unwrap();
    let (mut source_server, source_uri) = own_server(&dir.path().join("source"));
    let (mut target_server, target_uri) = own_server(&dir.path().join("target"));
    let source = Client::with_uri_str(&source_uri).await.unwrap();
    let target = Client::with_uri_str(&target_uri).await.unwrap();
    seed(&source, "shop", "billing").await;
    for gzip in [false, true] {
        let compression: &[&str] = if gzip { &["--gzip"] } else { &[] };
        let file = dir.path().join(format!("whole-{gzip}.archive"));
        stock("mongodump", &source_uri, &[&[&*format!("--archive={}", file.display())], compression].concat());
        // A whole-server dump restored whole into an empty server (compression is detected, no flag needed).
        let (code, _, err) = restore_archive(&file, &target_uri, &["--drop"]);
        assert_eq!(code, 0, "{err}");
        for db in ["shop", "billing"] {
            assert_same(&source, db, &target, db, &format!("whole server, gzip {gzip}")).await;
        }
        // `mongodump --db`, restored under another name on the shared test server.
        let file = dir.path().join(format!("db-{gzip}.archive"));
        stock(
            "mongodump",
            &source_uri,
            &[&["--db=shop", &*format!("--archive={}", file.display())], compression].concat(),
        );
        let to = unique("from_mongodump");
        let (code, _, err) = restore_archive(&file, &uri(), &["--nsFrom", "shop.*", "--nsTo", &format!("{to}.*")]);
        assert_eq!(code, 0, "{err}");
        assert_same(&source, "shop", &client().await, &to, &format!("--db, gzip {gzip}")).await;
    }
    for server in [&mut source_server, &mut target_server] {
        server.kill().unwrap();
        server.wait().unwrap();
    }
}

/// What a parity case expects of the two tools.
#[derive(Debug, PartialEq)]
enum Parity {
    /// Both succeed and leave identical databases.
    Same,
    /// A deliberate difference, listed in README: mongorestore succeeds, we refuse and change nothing.
    WeRefuse(&'static str),
}

/// Every user database of a server (not admin, config, local), as [`database`] sees it.
async fn server(client: &Client) -> BTreeMap<String, BTreeMap<String, Collection>> {
    let mut out = BTreeMap::new();
    for db in client.list_database_names().await.unwrap() {
        if !["admin", "config", "local"].contains(&db.as_str()) {
            out.insert(db.clone(), database(client, &db).await);
        }
    }
    out
}

async fn drop_user_databases(client: &Client) {
    for db in server(client).await.keys() {
        client.database(db).drop().await.unwrap();
    }
}

/// The same restore options through stock mongorestore (into one server) and through us (into another), from the
/// same stock mongodump archive: the table in README "Compatibility with mongodump and mongorestore".
#[tokio::test]
async fn restore_options_match_mongorestore() {
    let (src, client) = (unique("parity"), client().await);
    let d = client.database(&src);
    for coll in ["a", "b", "c"] {
        d.collection::<Document>(coll).insert_many((0..30).map(|i| doc! {"_id": i, "v": coll})).await.unwrap();
    }
    d.run_command(doc! {"createIndexes": "a", "indexes": [{"key": {"v": 1, "_id": -1}, "name": "v_id"}]})
        .await
        .unwrap();
    d.run_command(doc! {"create": "a_view", "viewOn": "a", "pipeline": [{"$match": {"_id": {"$lt": 5}}}]})
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("parity.archive");
    stock("mongodump", &uri(), &[&format!("--db={src}"), &format!("--archive={}", archive.display())]);

    let (mut theirs_server, theirs_uri) = own_server(&dir.path().join("theirs"));
    let (mut ours_server, ours_uri) = own_server(&dir.path().join("ours"));
    let (theirs, ours) =
        (Client::with_uri_str(&theirs_uri).await.unwrap(), Client::with_uri_str(&ours_uri).await.unwrap());
    let occupied = "restore into a non-empty collection, no --drop";
    let cases: Vec<(&str, Vec<String>, bool, Parity)> = vec![
        ("--nsInclude db.coll", vec![format!("--nsInclude={src}.a")], false, Parity::Same),
        ("--nsInclude *.coll", vec!["--nsInclude=*.b".into()], false, Parity::Same),
        ("--nsExclude", vec![format!("--nsExclude={src}.b")], false, Parity::Same),
        ("--nsFrom/--nsTo with *", vec![format!("--nsFrom={src}.*"), "--nsTo=star.*".into()], false, Parity::Same),
        (
            "--nsFrom/--nsTo with $var$",
            vec![format!("--nsFrom={src}.$c$"), "--nsTo=vars.$c$_copy".into()],
            false,
            Parity::Same,
        ),
        ("--drop over changed data", vec!["--drop".into()], true, Parity::Same),
        (occupied, vec![], true, Parity::WeRefuse("refusing to restore into non-empty")),
    ];
    for (case, args, occupy, expected) in cases {
        for client in [&theirs, &ours] {
            drop_user_databases(client).await;
            if occupy {
                // The target's `a` already holds a changed document and one the archive does not have.
                let a = client.database(&src).collection::<Document>("a");
                a.insert_many([doc! {"_id": 0, "v": "changed"}, doc! {"_id": 1000, "v": "extra"}]).await.unwrap();
            }
        }
        let before = server(&ours).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stock("mongorestore", &theirs_uri, &[&[&*format!("--archive={}", archive.display())], &args[..]].concat());
        let (code, _, err) = restore_archive(&archive, &ours_uri, &args);
        let (theirs_now, ours_now) = (server(&theirs).await, server(&ours).await);
        match expected {
            Parity::Same => {
                assert_eq!(code, 0, "{case}: {err}");
                assert!(!ours_now.is_empty(), "{case}: nothing restored");
                assert!(
                    ours_now == theirs_now,
                    "{case}: the databases differ:\nours {ours_now:?}\ntheirs {theirs_now:?}"
                );
            }
            Parity::WeRefuse(message) => {
                assert_eq!(code, 1, "{case}: {err}");
                assert!(err.contains(message), "{case}: {err}");
                assert!(ours_now == before, "{case}: our refused restore changed the target");
                assert!(ours_now != theirs_now, "{case}: no longer a difference; update README and this table");
            }
        }
    }
    for server in [&mut theirs_server, &mut ours_server] {
        server.kill().unwrap();
        server.wait().unwrap();
    }
}

/// A time-series collection as stock mongodump 100.18.0 writes it (prelude `test.weather` of type `timeseries`,
/// data as `test.system.buckets.weather` blocks; tests/fixtures/mongodump/timeseries.archive, dumped from
/// SecantusDB) is read, and restored where the server takes buckets. SecantusDB keeps measurements and refuses
/// buckets, so there the restore must fail naming the collection, with nothing written.
#[tokio::test]
async fn mongodump_timeseries_archive_is_read_and_restored_or_refused_cleanly() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mongodump/timeseries.archive");
    let (code, out, err) = cli(&["inspect", fixture]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test.weather: 2 documents") && out.contains("test.plain: 3 documents"), "{out}");

    let (db, client) = (unique("timeseries"), client().await);
    let restore = |extra: &[&str]| {
        let to = format!("{db}.*");
        restore_archive(Path::new(fixture), &uri(), &[&["--nsFrom", "test.*", "--nsTo", &to], extra].concat())
    };
    let (code, _, err) = restore(&[]);
    // with-services.sh sets MBA_TEST_MONGODB_PID only when it started SecantusDB itself.
    if std::env::var("MBA_TEST_MONGODB_PID").is_ok() {
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("cannot restore time-series collection {db}.weather (from test.weather)")),
            "{err}"
        );
        assert!(err.contains("nothing was written") && err.contains("--nsExclude 'test.weather'"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(client.database(&db).list_collection_names().await.unwrap().is_empty(), "something was written");
        let (code, _, err) = restore(&["--nsExclude", "test.weather"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(raw_docs(&client, &db, "plain").await.len(), 3);
    } else {
        assert_eq!(code, 0, "{err}");
        let weather = client.database(&db).collection::<Document>("weather");
        assert_eq!(weather.count_documents(doc! {}).await.unwrap(), 10);
        assert_eq!(raw_docs(&client, &db, "system.buckets.weather").await.len(), 2);
    }
}

/// The prelude entry of `ns` and its documents, read from a plain archive with our reader.
async fn archived(file: &Path, ns: &str) -> (mongo_backup_agent::archive::CollectionMetadata, Vec<Vec<u8>>) {
    use mongo_backup_agent::archive::{ArchiveItem, ArchiveReader, CollectionMetadata};
    let mut reader = ArchiveReader::open(tokio::fs::File::open(file).await.unwrap()).await.unwrap();
    let index = reader.prelude().iter().position(|e| e.namespace.to_string() == ns).expect("in the prelude");
    let entry = reader.prelude()[index].clone();
    let metadata = CollectionMetadata::parse(&entry.namespace, &entry.metadata, &entry.kind).unwrap();
    let mut documents = Vec::new();
    while let Some(item) = reader.next().await.unwrap() {
        if let ArchiveItem::Document { ns, document } = item
            && ns == index
        {
            documents.push(document);
        }
    }
    documents.sort();
    (metadata, documents)
}

/// Our backup of a time-series collection carries what stock mongodump's does: the same type, options and index
/// specs (in the collection's own terms, as mongorestore creates them again) and the same buckets.
#[tokio::test]
async fn our_timeseries_archive_matches_mongodump() {
    let (db, client) = (unique("ts_backup"), client().await);
    let d = client.database(&db);
    d.run_command(
        doc! {"create": "weather", "timeseries": {"timeField": "t", "metaField": "m", "granularity": "minutes"}},
    )
    .await
    .unwrap();
    let t0 = 1_700_000_000_000_i64;
    let measurements =
        (0..40).map(|i| doc! {"t": bson::DateTime::from_millis(t0 + i * 60_000), "m": {"s": i % 3}, "v": i});
    d.collection::<Document>("weather").insert_many(measurements).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("mongodump.archive");
    stock("mongodump", &uri(), &[&format!("--db={db}"), &format!("--archive={}", theirs.display())]);
    let config = config(&dir.path().join("store"), &[format!("{db}.*")], "compression = \"none\"");
    let manifest = run_backup(&config).await;
    let ours =
        dir.path().join("store").join(mongo_backup_agent::backup::archive_key("t", &manifest.id, manifest.compression));
    let ns = format!("{db}.weather");
    let ((our_meta, our_buckets), (their_meta, their_buckets)) =
        (archived(&ours, &ns).await, archived(&theirs, &ns).await);
    assert_eq!(our_meta, their_meta);
    assert_eq!(our_meta.kind, mongo_backup_agent::archive::CollectionKind::Timeseries);
    assert!(!our_buckets.is_empty());
    assert!(our_buckets == their_buckets, "the buckets differ");
}
