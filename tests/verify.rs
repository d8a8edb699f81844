//! Verify against a real server and store: a good backup passes (also `--deep`, which leaves no scratch database);
//! a flipped byte, a damaged document, a truncated archive and a lying manifest each fail with the collection and
//! the check named, and exit 1.

mod common;

use std::path::{Path, PathBuf};

use bson::{Document, doc};
use common::{cli, client, run_backup, unique, uri};
use mongo_backup_agent::backup::{self, Manifest};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::store::FilesystemStore;
use mongo_backup_agent::verify::{self, Check, DeepOptions};
use sha2::Digest;

/// A database with two collections, one document carrying a marker we can find in an uncompressed archive.
async fn seed() -> String {
    let db = unique("verify");
    let client = client().await;
    let orders = client.database(&db).collection::<Document>("orders");
    orders.insert_many((0..300).map(|i| doc! {"_id": i, "item": format!("item {i}"), "qty": i % 7})).await.unwrap();
    orders.insert_one(doc! {"_id": 1000, "note": "needle-in-the-archive"}).await.unwrap();
    let people = client.database(&db).collection::<Document>("people");
    people.insert_many((0..40).map(|i| doc! {"_id": i, "name": format!("person {i}")})).await.unwrap();
    db
}

struct Backup {
    _dir: tempfile::TempDir,
    config: String,
    manifest: Manifest,
    archive: PathBuf,
    manifest_path: PathBuf,
}

/// Backs `db` up with `compression` through a config file the CLI can use too.
async fn backup_of(db: &str, compression: &str) -> Backup {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let text = format!(
        "[mongodb]\nuri = {:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[backup]\ninclude = [\"{db}.*\"]\n\
         compression = \"{compression}\"\n[verify]\nsample_documents = 50\n",
        uri(),
        store.display().to_string()
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).unwrap();
    let manifest = run_backup(&config).await;
    let archive = store.join(backup::archive_key("t", &manifest.id, manifest.compression));
    let manifest_path = store.join(backup::manifest_key("t", &manifest.id));
    Backup { config: config_path.display().to_string(), manifest, archive, manifest_path, _dir: dir }
}

/// Runs `verify` on the backup; returns exit code and stdout + stderr.
fn verify_cli(backup: &Backup, extra: &[&str]) -> (i32, String) {
    let id = backup.manifest.id.to_string();
    let mut args = vec!["--config", backup.config.as_str(), "verify", id.as_str()];
    args.extend(extra);
    let (code, out, err) = cli(&args);
    (code, format!("{out}{err}"))
}

/// Rewrites the stored manifest (the store never overwrites one; a test may).
fn rewrite_manifest(backup: &Backup, change: impl FnOnce(&mut Manifest)) {
    let mut manifest = backup.manifest.clone();
    change(&mut manifest);
    std::fs::write(&backup.manifest_path, manifest.to_json()).unwrap();
}

/// Makes the manifest's size and sha256 describe the archive as it now is, so later checks are reached.
fn bless_archive(backup: &Backup) {
    let bytes = std::fs::read(&backup.archive).unwrap();
    rewrite_manifest(backup, |m| {
        m.archive_sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        m.archive_bytes = bytes.len() as u64;
    });
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_good_backup_verifies_and_a_flipped_byte_fails_the_sha256() {
    let db = seed().await;
    let backup = backup_of(&db, "zstd").await;
    let (code, out) = verify_cli(&backup, &[]);
    assert_eq!(code, 0, "{out}");
    // Two collections, plus the oplog slice (with whatever other tests wrote meanwhile) on a replica-set member.
    let namespaces = backup.manifest.namespaces.len();
    let documents: u64 = backup.manifest.namespaces.iter().map(|n| n.documents).sum();
    assert!(documents >= 341);
    assert!(out.contains(&format!("sha256 ok; namespaces {namespaces}, documents {documents}: all match")), "{out}");

    let len = std::fs::metadata(&backup.archive).unwrap().len() as usize;
    flip_byte(&backup.archive, len / 2);
    let (code, out) = verify_cli(&backup, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sha256 mismatch (stored "), "{out}");
    assert!(out.contains(&format!("backup {} failed verification", backup.manifest.id)), "{out}");

    let (code, out) = verify_cli(&backup, &["--json"]);
    assert_eq!(code, 1, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["report"]["problems"][0]["check"], "sha256");
}

#[tokio::test]
async fn a_damaged_document_names_the_collection_and_the_crc() {
    let db = seed().await;
    let backup = backup_of(&db, "none").await;
    let bytes = std::fs::read(&backup.archive).unwrap();
    let at = bytes.windows(6).position(|w| w == b"needle").expect("the marker document is in the plain archive");
    flip_byte(&backup.archive, at);
    bless_archive(&backup);
    let (code, out) = verify_cli(&backup, &[]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().next().unwrap();
    assert!(line.starts_with(&format!("{db}.orders: CRC mismatch (documents give ")), "{out}");
    assert!(!out.contains("sha256 mismatch"), "the manifest was re-blessed, only the CRC may fail: {out}");
}

#[tokio::test]
async fn a_truncated_archive_says_where_it_ends() {
    let db = seed().await;
    let backup = backup_of(&db, "none").await;
    let bytes = std::fs::read(&backup.archive).unwrap();
    std::fs::write(&backup.archive, &bytes[..bytes.len() - 100]).unwrap();
    bless_archive(&backup);
    let (code, out) = verify_cli(&backup, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("archive truncated at byte "), "{out}");
}

#[tokio::test]
async fn a_manifest_that_lies_is_caught_per_collection() {
    let db = seed().await;
    let backup = backup_of(&db, "gzip").await;
    rewrite_manifest(&backup, |m| {
        for record in &mut m.namespaces {
            if record.namespace.ends_with(".orders") {
                record.documents += 1;
            }
            if record.namespace.ends_with(".people") {
                record.crc = "0123456789abcdef".into();
            }
        }
        m.namespaces.push(backup::NamespaceRecord {
            namespace: format!("{db}.ghost"),
            kind: "collection".into(),
            documents: 1,
            bytes: 10,
            crc: "0000000000000000".into(),
        });
    });
    let (code, out) = verify_cli(&backup, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{db}.orders: document count mismatch (archive 301, manifest 302)")), "{out}");
    assert!(out.contains(&format!("{db}.people: CRC mismatch (archive ")), "{out}");
    assert!(out.contains("manifest 0123456789abcdef)"), "{out}");
    assert!(out.contains(&format!("{db}.ghost: in the manifest but not in the archive")), "{out}");
    assert!(out.contains("failed verification, problems: 3;"), "{out}");
}

async fn scratch_databases() -> Vec<String> {
    let names = client().await.list_database_names().await.unwrap();
    names.into_iter().filter(|n| n.starts_with("mbaverify_")).collect()
}

#[tokio::test]
async fn deep_verify_restores_compares_and_drops_its_scratch_databases() {
    let db = seed().await;
    let backup = backup_of(&db, "zstd").await;
    let (code, out) = verify_cli(&backup, &["--deep", "--json"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(json["ok"], true, "{out}");
    let scratch: Vec<String> = json["deep"]["scratch_databases"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(scratch.len(), 1);
    assert!(scratch[0].starts_with("mbaverify_") && scratch[0].ends_with(&format!("_0_{db}")), "{scratch:?}");
    assert_eq!(json["deep"]["collections_compared"], 2);
    assert_eq!(json["deep"]["documents_sampled"], 50 + 40);
    let existing = client().await.list_database_names().await.unwrap();
    assert!(!existing.contains(&scratch[0]), "scratch database {} left behind", scratch[0]);

    // A restored copy that does not match (here: the manifest claims more documents) is a problem, and the scratch
    // databases are dropped all the same.
    let mut lying = backup.manifest.clone();
    lying.namespaces.iter_mut().find(|r| r.namespace.ends_with(".people")).unwrap().documents = 41;
    let store = FilesystemStore::new(backup.archive.ancestors().nth(3).unwrap());
    let config = Config::load(Path::new(&backup.config)).unwrap();
    let options = DeepOptions::from_config(&config);
    let report = verify::deep(&store, "t", &lying, &client().await, options, None).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].check, Check::Documents);
    assert!(report.problems[0].to_string().starts_with(&format!("{db}.people: restored copy mbaverify_")));
    assert!(report.problems[0].detail.ends_with("has 40 documents, archive 41"), "{:?}", report.problems);
    let left = scratch_databases().await;
    assert!(!report.scratch_databases.values().any(|s| left.contains(s)), "left behind: {left:?}");
}
