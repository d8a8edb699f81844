//! Stock mongodump archives (fixtures) and the command line's exit codes and messages.

mod common;

use bson::{Document, doc};
use common::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/mongodump/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Restores a fixture's `test.*` namespaces into `db` through the CLI.
fn restore_fixture(name: &str, db: &str) -> (i32, String, String) {
    let to = format!("{db}.$c$");
    cli(&["restore", "--archive", &fixture(name), "--to", &uri(), "--nsFrom", "test.$c$", "--nsTo", &to])
}

#[tokio::test]
async fn stock_mongodump_archive_restores_exactly() {
    let db = unique("fixture");
    let (code, _, err) = restore_fixture("test.bar.archive", &db);
    assert_eq!(code, 0, "{err}");
    let client = client().await;
    let docs = raw_docs(&client, &db, "bar").await;
    // The exact bytes of the document mongodump 3.4 wrote.
    let expected = hex::decode("23000000075f69640058ffb124b721bc6c3234333c02666f6f00040000006261720000").unwrap();
    assert_eq!(docs, vec![expected]);
    let names: Vec<_> =
        indexes(&client, &db, "bar").await.iter().map(|i| i.get_str("name").unwrap().to_string()).collect();
    assert_eq!(names, ["_id_"]);
    // admin.system.version is read and CRC-checked but, like mongorestore, not written into the server.
    assert!(err.contains("restored 1 documents"), "{err}");
    let (code, out, _) = cli(&["inspect", &fixture("test.bar.archive")]);
    assert_eq!(code, 0);
    assert!(out.contains("admin.system.version: 1 documents") && out.contains("test.bar: 1 documents"), "{out}");
}

#[tokio::test]
async fn malformed_metadata_fails_clearly_and_writes_nothing() {
    let db = unique("badformat");
    let (code, _, err) = restore_fixture("bad-format.archive", &db);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("mongo-backup-agent: bad metadata for test.ixtest: not valid JSON"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error expected: {err}");
    assert!(client().await.database(&db).list_collection_names().await.unwrap().is_empty());
}

#[tokio::test]
async fn cli_backup_list_export_inspect() {
    let db = unique("cli");
    let client = client().await;
    client.database(&db).collection::<Document>("c").insert_many((0..100).map(|i| doc! {"_id": i})).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &[format!("{db}.*")]);
    let (code, _, err) = cli(&["--config", &config, "check"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&["--config", &config, "backup", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("complete: 1 collections, 100 documents"), "{err}");
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = manifest["id"].as_str().unwrap().to_string();
    let (code, out, _) = cli(&["--config", &config, "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("complete"), "{out}");
    let archive = dir.path().join("export.gz");
    let (code, _, err) = cli(&["--config", &config, "export", "latest", "--out", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&archive).unwrap()[..2], [0x1f, 0x8b], "export must be gzip for mongorestore --gzip");
    let (code, out, _) = cli(&["inspect", archive.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("{db}.c: 100 documents")) && out.contains("(gzip)"), "{out}");
    let (code, _, err) = cli(&["--config", &config, "restore", "20200101T000000Z-abc"]);
    assert_eq!(code, 1);
    assert!(err.contains("no backup \"20200101T000000Z-abc\"") && err.contains("list"), "{err}");
}

#[test]
fn bad_config_and_unreachable_server_have_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[backup]\ncompresion = \"zstd\"\n").unwrap();
    let (code, _, err) = cli(&["--config", bad.to_str().unwrap(), "backup"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `compresion`"), "{err}");

    let (code, _, err) = cli(&["--config", dir.path().join("missing.toml").to_str().unwrap(), "backup"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read config") && err.contains("--config"), "{err}");

    let unreachable = dir.path().join("unreachable.toml");
    std::fs::write(&unreachable, "[mongodb]\nuri = \"mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500\"\n").unwrap();
    let (code, _, err) = cli(&["--config", unreachable.to_str().unwrap(), "backup"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach MongoDB at 127.0.0.1:1 (connection refused)"), "{err}");
}
