//! Client-side encryption end to end, with Debian's `age` CLI as the independent peer (`MBA_AGE`, installed by
//! tests/harness/install-age.sh): it makes the keys, decrypts what the agent stored, and encrypts an archive the
//! agent then restores. Wrong and missing keys, a tampered byte under `--drop`, key rotation, and the same round
//! trip through Azurite. Against the real server (`MBA_TEST_MONGODB_URI`) and the real binary.

mod azure_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bson::{Document, doc};
use common::*;
use mongo_backup_agent::backup::{self, BackupId, Manifest, Progress};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::crypt::{AGE_MAGIC, Identities};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::restore::{self, STAGING_PREFIX};
use mongo_backup_agent::{store, verify};
use mongodb::Client;

/// The `age` binary; `age-keygen` lives beside it.
fn age() -> PathBuf {
    PathBuf::from(std::env::var("MBA_AGE").expect("MBA_AGE: run the tests through tests/harness/with-services.sh"))
}

fn run(command: &mut Command) -> Vec<u8> {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A key pair made by `age-keygen`: the identity file and its recipient.
struct Key {
    file: PathBuf,
    recipient: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let file = dir.join(format!("{name}.key"));
    run(Command::new(age().with_file_name("age-keygen")).arg("-o").arg(&file));
    let recipient = String::from_utf8(run(Command::new(age().with_file_name("age-keygen")).arg("-y").arg(&file)))
        .unwrap()
        .trim()
        .to_string();
    Key { file, recipient }
}

/// The fingerprint as the README defines it, computed by coreutils: `printf %s age1… | sha256sum | cut -c1-16`.
fn sha256sum_fingerprint(recipient: &str) -> String {
    let out = run(Command::new("sh").arg("-c").arg(format!("printf %s '{recipient}' | sha256sum | cut -c1-16")));
    String::from_utf8(out).unwrap().trim().to_string()
}

/// A database with incompressible padding, so the encrypted archive spans many 64 KiB chunks.
async fn seed(client: &Client, db: &str, docs: i32) {
    let coll = client.database(db).collection::<Document>("orders");
    let pad = || (0..40).map(|_| format!("{:016x}", rand::random::<u64>())).collect::<String>();
    coll.insert_many((0..docs).map(|i| doc! {"_id": i, "n": i, "pad": pad()})).await.unwrap();
    client.database(db).collection::<Document>("items").insert_one(doc! {"_id": "only"}).await.unwrap();
}

/// A config file backing up `db` into `dir/store`, encrypted to `recipients`; returns its path.
fn config_file(dir: &Path, name: &str, db: &str, recipients: &[&str]) -> String {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[mongodb]\nuri = {:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[backup]\ninclude = [\"{db}.*\"]\n\
         oplog = \"off\"\n[encryption]\nrecipients = {recipients:?}\n",
        uri(),
        dir.join("store").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn backup_with(config: &str) -> Manifest {
    run_backup(&Config::load(Path::new(config)).unwrap()).await
}

fn stored(dir: &Path, manifest: &Manifest) -> PathBuf {
    dir.join("store").join(backup::archive_key("t", &manifest.id, manifest.compression))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs the binary with `args` plus the `restore` flags moving `db` to `to` on the test server.
fn restore_into(args: &[&str], db: &str, to: &str) -> (i32, String, String) {
    let (uri, from, into) = (uri(), format!("{db}.$c$"), format!("{to}.$c$"));
    let mut args = args.to_vec();
    args.extend(["--to", &uri, "--nsFrom", &from, "--nsTo", &into]);
    cli(&args)
}

async fn drop_all(client: &Client, dbs: &[&String]) {
    for d in dbs {
        client.database(d).drop().await.unwrap();
    }
}

async fn same_data(client: &Client, a: &str, b: &str) {
    for coll in ["orders", "items"] {
        let (x, y) = (raw_docs(client, a, coll).await, raw_docs(client, b, coll).await);
        assert!(!x.is_empty() && x == y, "{a}.{coll} and {b}.{coll} differ");
    }
}

async fn databases(client: &Client) -> Vec<String> {
    client.list_database_names().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_round_trip_and_the_age_cli_reads_them() {
    let (db, client, dir) = (unique("crypt"), client().await, tempfile::tempdir().unwrap());
    seed(&client, &db, 3000).await;
    let key = keygen(dir.path(), "ops");
    let config = config_file(dir.path(), "vm", &db, &[&key.recipient]);
    let manifest = backup_with(&config).await;

    let fingerprint = sha256sum_fingerprint(&key.recipient);
    let recorded = manifest.encryption.as_ref().expect("the manifest records the encryption");
    assert_eq!((recorded.format.as_str(), recorded.recipients.clone()), ("age", vec![fingerprint.clone()]));
    let archive = stored(dir.path(), &manifest);
    let bytes = std::fs::read(&archive).unwrap();
    assert!(bytes.starts_with(AGE_MAGIC) && bytes.len() > 8 * 65536, "{} bytes", bytes.len());

    // The independent peer: `age -d -i KEY < stored | zstd -dc` gives an archive our inspect and restore take.
    let plain = dir.path().join("plain.archive");
    let decrypt = format!("{} -d -i {} < {} | zstd -dc > {}", p(&age()), p(&key.file), p(&archive), p(&plain));
    run(Command::new("bash").arg("-c").arg(format!("set -o pipefail; {decrypt}")));
    let (code, out, err) = cli(&["inspect", p(&plain)]);
    assert_eq!(code, 0, "{out}{err}");
    let from_cli = format!("{db}_cli");
    let (code, out, err) = restore_into(&["restore", "--archive", p(&plain)], &db, &from_cli);
    assert_eq!(code, 0, "{out}{err}");
    same_data(&client, &db, &from_cli).await;

    // Ours, by id, with the identity.
    let restored = format!("{db}_r");
    let args = ["--config", &config, "restore", manifest.id.as_str(), "--identity", p(&key.file)];
    let (code, out, err) = restore_into(&args, &db, &restored);
    assert_eq!(code, 0, "{out}{err}");
    same_data(&client, &db, &restored).await;

    // Without the identity: list shows the key, a shallow verify checks the stored bytes only.
    let (code, out, err) = cli(&["--config", &config, "list"]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with(manifest.id.as_str())).unwrap();
    assert!(line.contains(&fingerprint), "{out}");
    let (code, out, err) = cli(&["--config", &config, "verify", manifest.id.as_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("sha256 ok") && err.contains("contents not read"), "{err}");
    let (code, out, err) = cli(&["--config", &config, "verify", manifest.id.as_str(), "--identity", p(&key.file)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("namespaces 2"), "{err}");
    let (code, out, err) = cli(&["--config", &config, "verify", "latest", "--deep", "--identity", p(&key.file)]);
    assert_eq!(code, 0, "{out}{err}");

    // export writes a plain archive for stock mongorestore.
    let exported = dir.path().join("export.gz");
    let args = ["--config", &config, "export", "latest", "--identity", p(&key.file), "--out", p(&exported)];
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(&std::fs::read(&exported).unwrap()[..2], &[0x1f, 0x8b], "gzip, not age");
    let (code, out, err) = cli(&["inspect", p(&exported)]);
    assert_eq!(code, 0, "{out}{err}");
    drop_all(&client, &[&db, &restored, &from_cli]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_identity_is_one_line_exit_2_and_writes_nothing() {
    let (db, client, dir) = (unique("cryptkey"), client().await, tempfile::tempdir().unwrap());
    seed(&client, &db, 200).await;
    let (key, other) = (keygen(dir.path(), "ops"), keygen(dir.path(), "other"));
    let config = config_file(dir.path(), "vm", &db, &[&key.recipient]);
    let manifest = backup_with(&config).await;
    let needed = sha256sum_fingerprint(&key.recipient);
    let target = format!("{db}_r");
    let exported = dir.path().join("export.gz");
    let id = manifest.id.as_str();
    let other_key = p(&other.file);
    let attempts: Vec<Vec<&str>> = vec![
        vec!["--config", &config, "restore", id],
        vec!["--config", &config, "restore", id, "--identity", other_key, "--drop"],
        vec!["--config", &config, "export", id, "--out", p(&exported)],
        vec!["--config", &config, "export", id, "--out", p(&exported), "--identity", other_key],
        vec!["--config", &config, "verify", id, "--deep"],
        vec!["--config", &config, "verify", id, "--deep", "--identity", other_key],
    ];
    for args in attempts {
        let (code, out, err) = if args[2] == "restore" { restore_into(&args, &db, &target) } else { cli(&args) };
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(&needed) && err.contains("--identity"), "{args:?} names the key it needs: {err}");
        if args.contains(&other_key) {
            assert!(err.contains(&sha256sum_fingerprint(&other.recipient)), "{args:?} names the key given: {err}");
        }
    }
    assert!(!databases(&client).await.iter().any(|d| d == &target || d.starts_with("mbaverify_")), "nothing written");
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().starts_with("export")), "{leftovers:?}");

    // A bare encrypted file: no manifest to name the key, still exit 2 and one line.
    let (code, _, err) = cli(&["inspect", p(&stored(dir.path(), &manifest))]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("is encrypted") && err.contains("--identity"), "{err}");
    let (code, _, err) = cli(&["inspect", p(&stored(dir.path(), &manifest)), "--identity", other_key]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    // An identity file holding a public key by mistake is refused without echoing it.
    let wrong = dir.path().join("pub.key");
    std::fs::write(&wrong, format!("{}\n", key.recipient)).unwrap();
    let (code, _, err) = cli(&["inspect", p(&stored(dir.path(), &manifest)), "--identity", p(&wrong)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("public key") && !err.contains(&key.recipient), "{err}");
    client.database(&db).drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_byte_fails_authentication_and_drop_touches_no_target() {
    let (db, client, dir) = (unique("cryptdrop"), client().await, tempfile::tempdir().unwrap());
    seed(&client, &db, 3000).await;
    let key = keygen(dir.path(), "ops");
    let config = config_file(dir.path(), "vm", &db, &[&key.recipient]);
    let manifest = backup_with(&config).await;
    // The target as it is now, different from the backup.
    let orders = client.database(&db).collection::<Document>("orders");
    orders.delete_many(doc! {"n": {"$gte": 100}}).await.unwrap();
    orders.insert_one(doc! {"_id": -1, "n": -1}).await.unwrap();
    let before = (raw_docs(&client, &db, "orders").await, raw_docs(&client, &db, "items").await);

    // One bit, three quarters into the stored object: chunks before it decrypt and reach the staging collections.
    let archive = stored(dir.path(), &manifest);
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0x10;
    std::fs::write(&archive, &bytes).unwrap();

    let args = ["--config", &config, "restore", manifest.id.as_str(), "--identity", p(&key.file), "--drop"];
    let (code, out, err) = cli(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("failed authentication") && err.contains("every target is unchanged"), "{err}");
    assert_eq!((raw_docs(&client, &db, "orders").await, raw_docs(&client, &db, "items").await), before);
    let names = client.database(&db).list_collection_names().await.unwrap();
    assert!(!names.iter().any(|n| n.starts_with(STAGING_PREFIX)), "staging left: {names:?}");

    // export stops at the same chunk and leaves no partial file.
    let exported = dir.path().join("export.gz");
    let args = ["--config", &config, "export", "latest", "--identity", p(&key.file), "--out", p(&exported)];
    let (code, out, err) = cli(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("failed authentication"), "{err}");
    assert!(!exported.exists() && !exported.with_extension("partial").exists(), "partial export left behind");

    // The VM's own check (no identity) sees it too, by the stored bytes' sha256; `age` itself refuses the file.
    let (code, out, _) = cli(&["--config", &config, "verify", manifest.id.as_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sha256 mismatch"), "{out}");
    let status = Command::new(age()).arg("-d").arg("-i").arg(&key.file).arg(&archive).stdout(Stdio::null()).status();
    assert!(!status.unwrap().success(), "age -d must refuse the tampered file too");
    client.database(&db).drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_the_age_cli_encrypted_restores() {
    let (db, client, dir) = (unique("cryptcli"), client().await, tempfile::tempdir().unwrap());
    seed(&client, &db, 1000).await;
    let key = keygen(dir.path(), "ops");
    // A plain backup (no recipients), encrypted afterwards by `age -e`.
    let config = config_file(dir.path(), "plain", &db, &[]);
    let manifest = backup_with(&config).await;
    assert!(manifest.encryption.is_none());
    let (code, out, _) = cli(&["--config", &config, "list"]);
    assert_eq!(code, 0);
    assert!(out.lines().find(|l| l.starts_with(manifest.id.as_str())).unwrap().contains(" none "), "{out}");
    let sealed = dir.path().join("by-age.zst.age");
    run(Command::new(age())
        .arg("-e")
        .arg("-r")
        .arg(&key.recipient)
        .arg("-o")
        .arg(&sealed)
        .arg(stored(dir.path(), &manifest)));

    let (code, out, err) = cli(&["inspect", p(&sealed), "--identity", p(&key.file)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(zstd, age-encrypted)"), "{out}");
    let target = format!("{db}_r");
    let (code, out, err) =
        restore_into(&["restore", "--archive", p(&sealed), "--identity", p(&key.file)], &db, &target);
    assert_eq!(code, 0, "{out}{err}");
    same_data(&client, &db, &target).await;
    drop_all(&client, &[&db, &target]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_new_backups_use_the_new_key_and_list_says_which() {
    let (db, client, dir) = (unique("cryptrot"), client().await, tempfile::tempdir().unwrap());
    seed(&client, &db, 100).await;
    let (old, new) = (keygen(dir.path(), "old"), keygen(dir.path(), "new"));
    let before = backup_with(&config_file(dir.path(), "before", &db, &[&old.recipient])).await;
    let config = config_file(dir.path(), "after", &db, &[&new.recipient]);
    let after = backup_with(&config).await;

    let (code, out, err) = cli(&["--config", &config, "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<(String, Vec<String>)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            let fps = v["encryption"]["recipients"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().into());
            (v["id"].as_str().unwrap().to_string(), fps.collect())
        })
        .collect();
    let (fp_old, fp_new) = (sha256sum_fingerprint(&old.recipient), sha256sum_fingerprint(&new.recipient));
    assert_eq!(keys, [(before.id.to_string(), vec![fp_old.clone()]), (after.id.to_string(), vec![fp_new.clone()])]);

    // The new key does not open the old backup (and says which key does); the old one does.
    let target = format!("{db}_r");
    let restore =
        |id: &str, key: &Path| restore_into(&["--config", &config, "restore", id, "--identity", p(key)], &db, &target);
    let (code, _, err) = restore(before.id.as_str(), &new.file);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&fp_old), "{err}");
    let (code, out, err) = restore(before.id.as_str(), &old.file);
    assert_eq!(code, 0, "{out}{err}");
    // One identity file holding both keys opens every backup.
    let both = dir.path().join("both.key");
    let text = std::fs::read_to_string(&old.file).unwrap() + &std::fs::read_to_string(&new.file).unwrap();
    std::fs::write(&both, text).unwrap();
    client.database(&target).drop().await.unwrap();
    let (code, out, err) = restore(after.id.as_str(), &both);
    assert_eq!(code, 0, "{out}{err}");
    same_data(&client, &db, &target).await;
    drop_all(&client, &[&db, &target]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_round_trip_through_azurite() {
    use azure_support::{create_container, shared_endpoint, shared_key_config, unique_container};
    let (db, client, dir) = (unique("cryptaz"), client().await, tempfile::tempdir().unwrap());
    seed(&client, &db, 2000).await;
    let key = keygen(dir.path(), "ops");
    let endpoint = shared_endpoint();
    let container = unique_container("crypt");
    create_container(&endpoint, &container).await;
    let mut config = Config::load(Path::new(&config_file(dir.path(), "az", &db, &[&key.recipient]))).unwrap();
    let (storage, _secret) = shared_key_config(&endpoint, &container);
    config.storage = mongo_backup_agent::config::StorageConfig { prefix: "t".into(), block_size_kib: 64, ..storage };
    let store = store::open(&config.storage).unwrap();
    let filter = NamespaceFilter::new(&config.backup.include, &[]).unwrap();
    let manifest =
        backup::run(&config, BackupId::new(chrono::Utc::now()), &filter, store.as_ref(), &Progress::default())
            .await
            .unwrap();
    let raw = store.get_bytes(&backup::archive_key("t", &manifest.id, manifest.compression)).await.unwrap();
    assert!(raw.starts_with(AGE_MAGIC), "stored encrypted");
    assert!(manifest.archive_bytes > 3 * 64 * 1024, "the archive spans several blocks");

    // What the VM can check, and what the identity adds.
    let report = verify::verify(store.as_ref(), "t", &manifest, None).await.unwrap();
    assert!(report.is_ok() && !report.contents_checked && report.namespaces_checked == 0, "{report:?}");
    let ids = Identities::parse(&std::fs::read_to_string(&key.file).unwrap(), "test").unwrap();
    let report = verify::verify(store.as_ref(), "t", &manifest, Some(&ids)).await.unwrap();
    assert!(report.is_ok() && report.contents_checked && report.namespaces_checked == 2, "{report:?}");

    let target = format!("{db}_r");
    let renames = [(format!("{db}.$c$"), format!("{target}.$c$"))];
    let options = restore_options(&[], &[(&renames[0].0, &renames[0].1)], false);
    let input = backup::open_archive(store.as_ref(), "t", &manifest, Some(&ids)).await.unwrap();
    let report = restore::restore(input, &client, &options).await.unwrap();
    assert_eq!(report.documents(), 2001);
    same_data(&client, &db, &target).await;
    let refused = backup::open_archive(store.as_ref(), "t", &manifest, None).await.err().expect("no identity");
    assert_eq!(refused.exit_code(), 2, "{refused}");
    drop_all(&client, &[&db, &target]).await;
}
