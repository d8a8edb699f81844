//! Backup → filesystem store → restore, against the real server: types, shapes, options, indexes, filters.

mod common;

use bson::spec::BinarySubtype;
use bson::{
    Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Regex, Timestamp, doc, oid::ObjectId,
};
use common::*;
use mongo_backup_agent::backup;
use mongo_backup_agent::restore::{self, RestoreOptions};
use mongo_backup_agent::store::{FilesystemStore, ObjectStore};

async fn restore_from(
    store: &FilesystemStore,
    manifest: &backup::Manifest,
    options: &RestoreOptions,
) -> mongo_backup_agent::error::Result<restore::RestoreReport> {
    let key = backup::archive_key("t", &manifest.id, manifest.compression);
    let input = store.get_stream(&key).await.unwrap();
    restore::restore(input, &client().await, options).await
}

fn every_bson_type(i: i32) -> Document {
    let binary = |subtype, bytes: &[u8]| Bson::Binary(Binary { subtype, bytes: bytes.to_vec() });
    doc! {
        "_id": i,
        "double": 1.5, "nan": f64::NAN, "neg_zero": -0.0, "string": "héllo\u{0}", "doc": {"a": {"b": [1, {"c": null}]}},
        "array": [1, "two", 3.0, [4]],
        "bin_generic": binary(BinarySubtype::Generic, b"\x00\x01"), "bin_function": binary(BinarySubtype::Function, b"f"),
        "bin_old": binary(BinarySubtype::BinaryOld, b"old"), "bin_uuid_old": binary(BinarySubtype::UuidOld, &[7; 16]),
        "bin_uuid": binary(BinarySubtype::Uuid, &[9; 16]), "bin_md5": binary(BinarySubtype::Md5, &[5; 16]),
        "bin_encrypted": binary(BinarySubtype::Encrypted, b"enc"), "bin_column": binary(BinarySubtype::Column, b"\x00"),
        "bin_user": binary(BinarySubtype::UserDefined(0x80), b"user"),
        "oid": ObjectId::parse_str("58ffb124b721bc6c3234333c").unwrap(), "bool": true,
        "date_old": DateTime::from_millis(-2_208_988_800_000), "date_far": DateTime::from_millis(253_402_300_799_999),
        "null": Bson::Null, "regex": Regex { pattern: "^a.*b$".into(), options: "imsx".into() },
        "js": Bson::JavaScriptCode("function() { return 1; }".into()),
        "js_scope": JavaScriptCodeWithScope { code: "x + 1".into(), scope: doc! {"x": 1} },
        "int32": i32::MIN, "timestamp": Timestamp { time: 1_700_000_000, increment: 7 }, "int64": i64::MAX,
        "decimal": "1234.5678E-3".parse::<Decimal128>().unwrap(), "min": Bson::MinKey, "max": Bson::MaxKey,
        "undefined": Bson::Undefined, "symbol": Bson::Symbol("sym".into()),
    }
}

#[tokio::test]
async fn every_bson_type_round_trips_byte_for_byte() {
    let db = unique("types");
    let client = client().await;
    let coll = client.database(&db).collection::<Document>("all");
    coll.insert_many((0..20).map(every_bson_type)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[format!("{db}.*")], "");
    let manifest = run_backup(&config).await;
    let store = FilesystemStore::new(dir.path());
    let target = format!("{db}_r");
    let report = restore_from(
        &store,
        &manifest,
        &restore_options(&[], &[(&format!("{db}.$c$"), &format!("{target}.$c$"))], false),
    )
    .await
    .unwrap();
    assert_eq!(report.documents(), 20);
    let source = raw_docs(&client, &db, "all").await;
    assert_eq!(source.len(), 20);
    assert_eq!(raw_docs(&client, &target, "all").await, source, "restored bytes differ from source bytes");
}

#[tokio::test]
async fn shapes_options_and_indexes_survive() {
    let db = unique("shapes");
    let other = unique("shapes_other");
    let client = client().await;
    let d = client.database(&db);
    // 200,000 small documents over several collections and two databases.
    for (database, name, n) in [(&db, "small_a", 90_000), (&db, "small_b", 60_000), (&other, "small_c", 50_000)] {
        let docs: Vec<Document> = (0..n).map(|i| doc! {"_id": i, "k": i % 97, "s": format!("v{i}")}).collect();
        for chunk in docs.chunks(10_000) {
            client.database(database).collection::<Document>(name).insert_many(chunk.to_vec()).await.unwrap();
        }
    }
    // Documents near the 16 MiB limit.
    let big = vec![0xABu8; 16 * 1024 * 1024 - 1024];
    for i in 0..3 {
        d.collection::<Document>("big")
            .insert_one(doc! {"_id": i, "blob": Binary { subtype: BinarySubtype::Generic, bytes: big.clone() }})
            .await
            .unwrap();
    }
    d.create_collection("empty").await.unwrap();
    d.run_command(doc! {"create": "capped", "capped": true, "size": 1_048_576_i64, "max": 100_i64}).await.unwrap();
    d.collection::<Document>("capped").insert_many((0..50).map(|i| doc! {"_id": i})).await.unwrap();
    d.run_command(
        doc! {"create": "validated", "validator": {"$jsonSchema": {"required": ["name"]}}, "validationLevel": "strict"},
    )
    .await
    .unwrap();
    d.collection::<Document>("validated").insert_one(doc! {"name": "ok"}).await.unwrap();
    d.run_command(doc! {"create": "view", "viewOn": "small_a", "pipeline": [{"$match": {"k": 1}}]}).await.unwrap();
    d.run_command(doc! {"createIndexes": "small_a", "indexes": [
        {"key": {"s": 1}, "name": "s_unique", "unique": true},
        {"key": {"k": 1, "s": -1}, "name": "k_s_compound"},
        {"key": {"created": 1}, "name": "ttl", "expireAfterSeconds": 3600},
        {"key": {"k": 1}, "name": "partial", "partialFilterExpression": {"k": {"$gt": 5}}},
        {"key": {"s": 1, "k": 1}, "name": "collated", "collation": {"locale": "fr", "strength": 2}},
    ]})
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[format!("{db}.*"), format!("{other}.*")], "");
    let manifest = run_backup(&config).await;
    let count = |ns: &str| manifest.namespaces.iter().find(|n| n.namespace == ns).map(|n| n.documents);
    assert_eq!(count(&format!("{db}.small_a")), Some(90_000));
    assert_eq!(count(&format!("{other}.small_c")), Some(50_000));
    assert_eq!(count(&format!("{db}.empty")), Some(0));
    assert_eq!(count(&format!("{db}.view")), Some(0));
    assert_eq!(manifest.documents(), 200_000 + 3 + 50 + 1);
    // Largest first: the big-document collection leads the catalog.
    assert_eq!(manifest.namespaces[0].namespace, format!("{db}.big"));

    let store = FilesystemStore::new(dir.path());
    let (rdb, rother) = (format!("{db}_r"), format!("{other}_r"));
    let renames = [(format!("{db}.$c$"), format!("{rdb}.$c$")), (format!("{other}.$c$"), format!("{rother}.$c$"))];
    let renames: Vec<(&str, &str)> = renames.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let report = restore_from(&store, &manifest, &restore_options(&[], &renames, false)).await.unwrap();
    assert_eq!(report.documents(), 200_054);

    for (src, dst, coll) in [
        (&db, &rdb, "small_a"),
        (&db, &rdb, "small_b"),
        (&other, &rother, "small_c"),
        (&db, &rdb, "big"),
        (&db, &rdb, "capped"),
    ] {
        assert_eq!(raw_docs(&client, dst, coll).await, raw_docs(&client, src, coll).await, "{coll}");
        assert_eq!(indexes(&client, dst, coll).await, indexes(&client, src, coll).await, "indexes of {coll}");
    }
    for coll in ["capped", "validated", "view", "empty"] {
        assert_eq!(
            collection_options(&client, &rdb, coll).await,
            collection_options(&client, &db, coll).await,
            "{coll}"
        );
    }
    let view_count = client.database(&rdb).collection::<Document>("view").count_documents(doc! {}).await.unwrap();
    assert_eq!(view_count, 90_000 / 97 + 1);
}

#[tokio::test]
async fn filters_renames_drop_and_refusal() {
    let db = unique("filters");
    let client = client().await;
    for name in ["keep", "skip", "also"] {
        client.database(&db).collection::<Document>(name).insert_many((0..10).map(|i| doc! {"_id": i})).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[format!("{db}.*")], &format!("exclude = [\"{db}.skip\"]"));
    let manifest = run_backup(&config).await;
    let names: Vec<_> = manifest.namespaces.iter().map(|n| n.namespace.clone()).collect();
    assert!(names.contains(&format!("{db}.keep")) && !names.contains(&format!("{db}.skip")), "{names:?}");

    let store = FilesystemStore::new(dir.path());
    let target = format!("{db}_copy");
    let rename = [(format!("{db}.$c$"), format!("{target}.$c$"))];
    let rename: Vec<(&str, &str)> = rename.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let only_keep = [format!("{db}.keep")];
    let report = restore_from(&store, &manifest, &restore_options(&only_keep, &rename, false)).await.unwrap();
    assert_eq!(report.inserted, vec![(mongo_backup_agent::archive::Namespace::new(&target, "keep"), 10)]);
    let names = client.database(&target).list_collection_names().await.unwrap();
    assert_eq!(names, vec!["keep".to_string()]);

    // Restoring again over non-empty targets is refused and writes nothing.
    client.database(&target).collection::<Document>("keep").insert_one(doc! {"_id": 100}).await.unwrap();
    let err =
        restore_from(&store, &manifest, &restore_options(&only_keep, &rename, false)).await.unwrap_err().to_string();
    assert!(err.contains(&format!("non-empty {target}.keep")) && err.contains("--drop"), "{err}");
    assert_eq!(client.database(&target).collection::<Document>("keep").count_documents(doc! {}).await.unwrap(), 11);

    // --drop replaces the target with exactly the backup's content.
    restore_from(&store, &manifest, &restore_options(&only_keep, &rename, true)).await.unwrap();
    assert_eq!(raw_docs(&client, &target, "keep").await, raw_docs(&client, &db, "keep").await);
}

#[tokio::test]
async fn gzip_and_none_compressions_restore_too() {
    let db = unique("codecs");
    let client = client().await;
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_many((0..500).map(|i| doc! {"_id": i, "v": "x".repeat(100)}))
        .await
        .unwrap();
    for compression in ["gzip", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &[format!("{db}.*")], &format!("compression = \"{compression}\""));
        let manifest = run_backup(&config).await;
        assert_eq!(manifest.compression.to_string(), compression);
        let target = format!("{db}_{compression}");
        let rename = [(format!("{db}.$c$"), format!("{target}.$c$"))];
        let rename: Vec<(&str, &str)> = rename.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        restore_from(&FilesystemStore::new(dir.path()), &manifest, &restore_options(&[], &rename, false))
            .await
            .unwrap();
        assert_eq!(raw_docs(&client, &target, "c").await, raw_docs(&client, &db, "c").await);
    }
}
