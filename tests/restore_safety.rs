//! Restore on a production server: renames that really rename, `--drop` that destroys nothing until the data is
//! known good, users and roles only on purpose, and `inspect` that fails on a damaged archive. Against the real
//! server (`MBA_TEST_MONGODB_URI`) and the real binary.

mod common;

use std::path::{Path, PathBuf};

use bson::{Document, Timestamp, doc};
use common::*;
use mongo_backup_agent::archive::{ArchiveHeader, ArchiveWriter, Namespace, PreludeEntry};
use mongo_backup_agent::backup::{self, Manifest};
use mongo_backup_agent::restore::{self, RestoreOptions, STAGING_PREFIX};
use mongodb::Client;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mongodump");

/// Options restoring database `db` only: the oplog slice holds other tests' writes too, and replaying them into
/// their databases (or, with `drop`, replacing their collections) would break those tests.
fn options(db: &str, renames: &[(&str, &str)], drop: bool) -> RestoreOptions {
    restore_options(&[format!("{db}.*")], renames, drop)
}

/// Backs up `include` uncompressed (so tests can damage exact bytes); returns the manifest and the archive file.
async fn backup_to_file(dir: &Path, include: &[String]) -> (Manifest, PathBuf) {
    let config = config(dir, include, "compression = \"none\"");
    let manifest = run_backup(&config).await;
    let file = dir.join(backup::archive_key("t", &manifest.id, manifest.compression));
    assert!(file.is_file(), "{}", file.display());
    (manifest, file)
}

async fn restore_file(
    file: &Path,
    options: &RestoreOptions,
) -> mongo_backup_agent::error::Result<restore::RestoreReport> {
    let input = tokio::fs::File::open(file).await.unwrap();
    restore::restore(input, &client().await, options).await
}

/// Everything about a collection a restore could change: documents (bytes), indexes, options.
type Snapshot = (Vec<Vec<u8>>, Vec<Document>, Document);

async fn snapshot(client: &Client, db: &str, coll: &str) -> Snapshot {
    (raw_docs(client, db, coll).await, indexes(client, db, coll).await, collection_options(client, db, coll).await)
}

async fn collections(client: &Client, db: &str) -> Vec<String> {
    let mut names = client.database(db).list_collection_names().await.unwrap();
    names.retain(|n| !n.starts_with("system."));
    names.sort();
    names
}

async fn no_staging_left(client: &Client, db: &str) {
    let names = collections(client, db).await;
    assert!(!names.iter().any(|n| n.starts_with(STAGING_PREFIX)), "staging collections left in {db}: {names:?}");
}

/// A database with two collections (one with a validator and a secondary index) and a view.
async fn shop(client: &Client, db: &str, docs: i32) {
    let d = client.database(db);
    d.run_command(doc! {"create": "orders", "validator": {"$jsonSchema": {"required": ["n"]}}}).await.unwrap();
    let orders: Vec<Document> = (0..docs).map(|i| doc! {"_id": i, "n": i, "pad": "x".repeat(200)}).collect();
    d.collection::<Document>("orders").insert_many(orders).await.unwrap();
    d.run_command(doc! {"createIndexes": "orders", "indexes": [{"key": {"n": -1}, "name": "n_desc"}]}).await.unwrap();
    d.collection::<Document>("items")
        .insert_many((0..50).map(|i| doc! {"_id": i, "sku": format!("s{i}")}))
        .await
        .unwrap();
    d.run_command(doc! {"create": "big_orders", "viewOn": "orders", "pipeline": [{"$match": {"n": {"$gt": 10}}}]})
        .await
        .unwrap();
}

/// A shop database of `docs` orders, backed up to a file, then changed: the database, a client, the backup's
/// directory (keep it alive), the archive file and the changed `orders` as it is now.
async fn backed_up_then_changed(name: &str, docs: i32) -> (String, Client, tempfile::TempDir, PathBuf, Snapshot) {
    let (db, client) = (unique(name), client().await);
    shop(&client, &db, docs).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = backup_to_file(dir.path(), &[format!("{db}.*")]).await;
    change_live(&client, &db).await;
    let live = snapshot(&client, &db, "orders").await;
    (db, client, dir, file, live)
}

/// Changes the live collections after the backup, so a restore that touched them would show.
async fn change_live(client: &Client, db: &str) {
    let d = client.database(db);
    d.collection::<Document>("orders").insert_one(doc! {"_id": -1, "n": -1, "live": true}).await.unwrap();
    d.collection::<Document>("orders").delete_one(doc! {"_id": 3}).await.unwrap();
    d.run_command(
        doc! {"createIndexes": "items", "indexes": [{"key": {"sku": 1}, "name": "sku_live", "unique": true}]},
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn asterisk_renames_restore_elsewhere_and_leave_the_source_alone() {
    let (db, client, _dir, file, live) = backed_up_then_changed("rn", 100).await;

    // With --drop, a rename that is not applied would drop and overwrite the live collections.
    let target = format!("{db}_r");
    let report =
        restore_file(&file, &options(&db, &[(&format!("{db}.*"), &format!("{target}.*"))], true)).await.unwrap();
    assert_eq!(report.documents(), 150);
    assert_eq!(snapshot(&client, &db, "orders").await, live, "the source namespace was touched");
    assert_eq!(collections(&client, &target).await, ["big_orders", "items", "orders"]);
    assert_eq!(raw_docs(&client, &target, "orders").await.len(), 100);
    assert_eq!(indexes(&client, &target, "orders").await.len(), 2);
    no_staging_left(&client, &target).await;

    // `$var$` rules still work; the CLI takes both forms.
    let archive = file.display().to_string();
    let (code, _, stderr) = cli(&[
        "restore",
        "--archive",
        &archive,
        "--to",
        &uri(),
        "--nsFrom",
        "$d$.$c$",
        "--nsTo",
        "$d$_v.$c$",
        "--nsInclude",
        &format!("{db}.items"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(raw_docs(&client, &format!("{db}_v"), "items").await.len(), 50);
}

#[tokio::test]
async fn rename_rules_that_rename_nothing_or_badly_are_refused_before_anything_is_written() {
    let (db, client, _dir, file, live) = backed_up_then_changed("rnbad", 10).await;
    let archive = file.display().to_string();
    for (from, to, expect) in [
        (format!("{db}x.*"), format!("{db}_r.*"), "matches nothing in the archive"),
        (format!("{db}.*"), format!("{db}_r*"), "not a valid namespace"),
        (format!("{db}.*"), format!("{db} r.*"), "not a valid namespace"),
    ] {
        let (code, stdout, stderr) =
            cli(&["restore", "--archive", &archive, "--to", &uri(), "--drop", "--nsFrom", &from, "--nsTo", &to]);
        assert_eq!(code, 2, "{from} -> {to}: {stdout}{stderr}");
        assert!(stderr.contains(expect) && stderr.contains(&from) && stderr.lines().count() == 1, "{stderr}");
    }
    assert_eq!(snapshot(&client, &db, "orders").await, live);
    let databases = client.list_database_names().await.unwrap();
    assert!(!databases.iter().any(|d| d.starts_with(&format!("{db}_r")) || d.starts_with(&format!("{db} r"))));
}

/// Overwrites the byte after `needle`'s first occurrence past `from` (a string inside a document: BSON stays valid,
/// the CRC does not match).
fn damage(bytes: &mut [u8], needle: &[u8], from: usize) {
    let at = from + bytes[from..].windows(needle.len()).position(|w| w == needle).expect("needle in archive");
    bytes[at + needle.len()] ^= 0x01;
}

#[tokio::test]
async fn drop_restore_of_a_damaged_archive_leaves_every_target_as_it_was() {
    let (db, client) = (unique("dropbad"), client().await);
    shop(&client, &db, 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = backup_to_file(dir.path(), &[format!("{db}.*")]).await;
    change_live(&client, &db).await;
    let before = (
        snapshot(&client, &db, "orders").await,
        snapshot(&client, &db, "items").await,
        collections(&client, &db).await,
    );
    let good = std::fs::read(&file).unwrap();

    let mut truncated = good.clone();
    truncated.truncate(good.len() * 2 / 3);
    let mut crc = good.clone();
    damage(&mut crc, b"xxxxxxxx", good.len() / 2);
    for (what, bytes, expect) in [("truncated", truncated, "truncated"), ("CRC", crc, "CRC")] {
        let damaged = dir.path().join(format!("{what}.archive"));
        std::fs::write(&damaged, bytes).unwrap();
        let err = restore_file(&damaged, &options(&db, &[], true)).await.unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("every target is unchanged"), "{what}: {err}");
        let after = (
            snapshot(&client, &db, "orders").await,
            snapshot(&client, &db, "items").await,
            collections(&client, &db).await,
        );
        assert!(after == before, "{what}: a failed --drop restore changed the targets");
        no_staging_left(&client, &db).await;

        // The binary says the same, on one line, with exit 1.
        let (code, _, stderr) = cli(&[
            "restore",
            "--archive",
            damaged.to_str().unwrap(),
            "--to",
            &uri(),
            "--drop",
            "--nsInclude",
            &format!("{db}.*"),
        ]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("every target is unchanged"), "{stderr}");
        assert!(snapshot(&client, &db, "orders").await == before.0);
    }
}

#[tokio::test]
async fn drop_restore_of_a_good_archive_replaces_the_targets() {
    let (db, client) = (unique("dropgood"), client().await);
    shop(&client, &db, 1000).await;
    let backed_up = (snapshot(&client, &db, "orders").await, snapshot(&client, &db, "items").await);
    let view_options = collection_options(&client, &db, "big_orders").await;
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = backup_to_file(dir.path(), &[format!("{db}.*")]).await;
    change_live(&client, &db).await;
    // A view target replaced by a view, and one replaced by a collection.
    client.database(&db).collection::<Document>("big_orders").drop().await.unwrap();
    client.database(&db).run_command(doc! {"create": "big_orders", "viewOn": "items", "pipeline": []}).await.unwrap();

    let mut dry = options(&db, &[], true);
    dry.dry_run = true;
    let plan = restore_file(&file, &dry).await.unwrap().plan.to_string();
    assert!(plan.contains(&format!("replace collection {db}.orders")) && plan.contains("staging"), "{plan}");
    assert_ne!(snapshot(&client, &db, "orders").await, backed_up.0, "the dry run changed something");

    let report = restore_file(&file, &options(&db, &[], true)).await.unwrap();
    assert_eq!(report.replaced.len(), 3, "{:?}", report.replaced);
    assert!((snapshot(&client, &db, "orders").await, snapshot(&client, &db, "items").await) == backed_up);
    assert_eq!(collection_options(&client, &db, "big_orders").await, view_options);
    let view = client.database(&db).collection::<Document>("big_orders").count_documents(doc! {}).await.unwrap();
    assert_eq!(view, 1000 - 11);
    no_staging_left(&client, &db).await;
}

fn raw(doc: Document) -> Vec<u8> {
    let mut out = Vec::new();
    doc.to_writer(&mut out).unwrap();
    out
}

/// An archive of `db.orders` (ids 0..10) whose oplog slice inserts id 100 into it and creates `db.fresh`, a
/// collection the prelude does not know (one created during the dump: servers log its `create` first).
async fn archive_with_oplog(db: &str) -> Vec<u8> {
    let metadata = r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"collectionName":"orders","type":"collection"}"#;
    let prelude = [
        PreludeEntry { namespace: Namespace::new(db, "orders"), metadata: metadata.into(), kind: "collection".into() },
        PreludeEntry { namespace: Namespace::oplog(), metadata: String::new(), kind: String::new() },
    ];
    let mut w = ArchiveWriter::begin(Vec::new(), &ArchiveHeader::new(1, "4.4.0"), &prelude).await.unwrap();
    let orders: Vec<u8> = (0..10).flat_map(|i| raw(doc! {"_id": i, "n": i})).collect();
    w.write_block(0, &orders, 10).await.unwrap();
    w.end_collection(0).await.unwrap();
    let op = |i: u32, ns: &str, o: Document| {
        raw(doc! {"ts": Timestamp { time: 1_700_000_000, increment: i }, "op": "i", "ns": ns, "o": o})
    };
    let create = raw(
        doc! {"ts": Timestamp { time: 1_700_000_000, increment: 0 }, "op": "c", "ns": format!("{db}.$cmd"), "o": {"create": "fresh"}},
    );
    let oplog = [
        create,
        op(1, &format!("{db}.fresh"), doc! {"_id": 1}),
        op(2, &format!("{db}.orders"), doc! {"_id": 100, "n": 100}),
    ];
    w.write_block(1, &oplog.concat(), 3).await.unwrap();
    w.end_collection(1).await.unwrap();
    w.finish().await.unwrap().0
}

/// The oplog replay of a `--drop` restore lands in staging too, also for a collection the prelude does not name:
/// a good archive replaces both targets with the backup's state; one cut inside the oplog slice changes neither.
#[tokio::test]
async fn drop_restore_stages_the_oplog_replay_too() {
    let (db, client) = (unique("dropoplog"), client().await);
    let d = client.database(&db);
    d.collection::<Document>("orders").insert_many((0..5).map(|i| doc! {"_id": i, "live": true})).await.unwrap();
    d.collection::<Document>("fresh").insert_one(doc! {"_id": "live"}).await.unwrap();
    let before = (raw_docs(&client, &db, "orders").await, raw_docs(&client, &db, "fresh").await);
    let dir = tempfile::tempdir().unwrap();
    let good = archive_with_oplog(&db).await;

    let cut = dir.path().join("cut.archive");
    std::fs::write(&cut, &good[..good.len() - 40]).unwrap();
    let err = restore_file(&cut, &options(&db, &[], true)).await.unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("every target is unchanged"), "{err}");
    assert!((raw_docs(&client, &db, "orders").await, raw_docs(&client, &db, "fresh").await) == before);
    no_staging_left(&client, &db).await;

    let file = dir.path().join("good.archive");
    std::fs::write(&file, &good).unwrap();
    let report = restore_file(&file, &options(&db, &[], true)).await.unwrap();
    assert_eq!(report.replay.applied, 3);
    let ids = |docs: Vec<Vec<u8>>| -> Vec<bson::Bson> {
        docs.iter().map(|d| Document::from_reader(&d[..]).unwrap().get("_id").unwrap().clone()).collect()
    };
    let expected: Vec<bson::Bson> = (0..10).chain([100]).map(bson::Bson::Int32).collect();
    assert_eq!(ids(raw_docs(&client, &db, "orders").await), expected, "the oplog's insert was lost in the swap");
    assert_eq!(ids(raw_docs(&client, &db, "fresh").await), [bson::Bson::Int32(1)]);
    no_staging_left(&client, &db).await;
}

async fn user_names(client: &Client) -> Vec<String> {
    let reply = client.database("admin").run_command(doc! {"usersInfo": {"forAllDBs": true}}).await.unwrap();
    let mut names: Vec<String> = reply
        .get_array("users")
        .unwrap()
        .iter()
        .filter_map(|u| u.as_document().and_then(|u| u.get_str("_id").ok()).map(String::from))
        .collect();
    names.sort();
    names
}

async fn credentials(client: &Client, db: &str, user: &str) -> Document {
    let reply = client
        .database(db)
        .run_command(doc! {"usersInfo": {"user": user, "db": db}, "showCredentials": true})
        .await
        .unwrap();
    reply.get_array("users").unwrap()[0].as_document().unwrap().get_document("credentials").unwrap().clone()
}

#[tokio::test]
async fn users_and_roles_are_restored_only_on_purpose() {
    let (db, client) = (unique("auth"), client().await);
    let d = client.database(&db);
    d.collection::<Document>("c").insert_many((0..5).map(|i| doc! {"_id": i})).await.unwrap();
    let (alice, bob) = (format!("{db}.alice"), format!("{db}.bob"));
    for user in ["alice", "bob"] {
        d.run_command(doc! {"createUser": user, "pwd": "old-password", "roles": []}).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let include = [format!("{db}.*"), "admin.system.users".into(), "admin.system.roles".into()];
    let (_, file) = backup_to_file(dir.path(), &include).await;
    // After the backup: alice's password changes, bob is deleted.
    d.run_command(doc! {"updateUser": "alice", "pwd": "new-password"}).await.unwrap();
    d.run_command(doc! {"dropUser": "bob"}).await.unwrap();
    let alice_now = credentials(&client, &db, "alice").await;
    let archive = file.display().to_string();

    // A renamed restore (and a filtered one) leaves users alone and says so in the plan.
    let rename = ["--nsFrom", &format!("{db}.$c$"), "--nsTo", &format!("{db}_r.$c$")];
    let (code, stdout, stderr) =
        cli(&[&["restore", "--archive", &archive, "--to", &uri(), "--dry-run"][..], &rename[..]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("skip admin.system.users: users and roles are restored only"), "{stdout}");
    let (code, _, stderr) = cli(&[&["restore", "--archive", &archive, "--to", &uri()][..], &rename[..]].concat());
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) =
        cli(&["restore", "--archive", &archive, "--to", &uri(), "--nsExclude", &format!("{db}.c"), "--drop"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(credentials(&client, &db, "alice").await, alice_now, "a live password was rolled back");
    assert!(!user_names(&client).await.contains(&bob), "a deleted user came back");

    // Asked for: the dry run names them, the restore writes them.
    let with = ["restore", "--archive", &archive, "--to", &uri(), "--nsInclude", &format!("{db}.c"), "--drop"];
    let (code, stdout, stderr) = cli(&[&with[..], &["--with-users-and-roles", "--dry-run"]].concat());
    assert_eq!(code, 0, "{stderr}");
    // The archive holds every user of the shared server; this test's two must be named.
    let users_line = stdout.lines().find(|l| l.starts_with("restore users from admin.system.users: ")).unwrap_or("");
    assert!(users_line.contains(&alice) && users_line.contains(&bob), "{stdout}");
    assert!(!user_names(&client).await.contains(&bob), "the dry run wrote users");
    let (code, _, stderr) = cli(&[&with[..], &["--with-users-and-roles"]].concat());
    if code == 0 {
        assert!(user_names(&client).await.contains(&bob), "bob was not restored");
        assert_ne!(credentials(&client, &db, "alice").await, alice_now, "alice's password was not restored");
    } else {
        // SecantusDB keeps admin.system.users read-only (createUser/updateUser only), so the stored credentials
        // cannot be written back: the restore must say so, naming the users, and fail.
        assert_eq!(code, 1, "{stderr}");
        // On a server shared with earlier runs the archive holds their users too, and one of them may be named.
        let names_a_user = stderr.contains(&format!("refused user {alice}")) || stderr.contains("refused user t_auth_");
        assert!(names_a_user && stderr.contains(&bob), "{stderr}");
        assert!(stderr.contains("synthetic read-only view"), "not SecantusDB's known refusal: {stderr}");
    }
}

#[test]
fn inspect_exits_1_on_a_damaged_archive() {
    let (code, stdout, stderr) = cli(&["inspect", &format!("{FIXTURES}/test.bar.archive")]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let (code, stdout, stderr) = cli(&["inspect", &format!("{FIXTURES}/bad-format.archive")]);
    assert_eq!(code, 1, "metadata that does not parse: {stdout}{stderr}");
    assert!(stdout.contains("test.ixtest (problem: metadata does not parse"), "{stdout}");
    assert!(stderr.contains("has problems: 1"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(format!("{FIXTURES}/test.bar.archive")).unwrap();
    damage(&mut bytes, b"foo\0\x04\0\0\0ba", 0);
    let damaged = dir.path().join("crc.archive");
    std::fs::write(&damaged, bytes).unwrap();
    let (code, stdout, stderr) = cli(&["inspect", damaged.to_str().unwrap()]);
    assert_eq!(code, 1, "CRC mismatch: {stdout}{stderr}");
    assert!(stdout.contains("problem: ") && stdout.contains("CRC") && stdout.contains("test.bar"), "{stdout}");
}
