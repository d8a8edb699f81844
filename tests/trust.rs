//! What an operator can rely on from the one-shot commands, run as the real binary: a password in a URI shows up
//! nowhere, driver errors are one readable line, the driver never panics at exit, files are 0600 whatever the
//! umask, `check` flags a config others can read while it holds a secret, and a stuck cursor fails the backup.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bson::doc;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mongo-backup-agent");
const PASSWORD: &str = "S3cret-pw-4711";

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a config using `uri`, storing in `dir/store`, backing up `include`; returns its path.
fn write_config(dir: &Path, uri: &str, include: &[String], extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[mongodb]\nuri = {uri:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[backup]\ninclude = {include:?}\n\
         oplog = \"off\"\n{extra}",
        dir.join("store").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Runs the binary with `args` under `umask`; returns exit code, stdout and stderr.
fn run_with_umask(umask: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_port_is_one_line_naming_the_cause_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let uri = format!("mongodb://backup:{PASSWORD}@127.0.0.1:{port}/?serverSelectionTimeoutMS=1500");
    let config = write_config(dir.path(), &uri, &[], "");
    let config = config.to_str().unwrap();
    let expected = format!(
        "mongo-backup-agent: cannot reach MongoDB at 127.0.0.1:{port} (connection refused): is mongod running and \
         the URI in [mongodb] right?\n"
    );
    let runs: [Vec<&str>; 3] = [
        vec!["--config", config, "check"],
        vec!["--config", config, "-v", "backup"],
        vec!["restore", "--archive", "/dev/null", "--to", &uri],
    ];
    for args in runs {
        let (code, out, err) = cli(&args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "{args:?} printed the password:\n{out}{err}");
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(format!("{last}\n"), expected, "{args:?}: {err}");
        // The driver's own description is for -v only (a debug line, password masked).
        let shown = if args.contains(&"-v") { last.to_string() } else { err.clone() };
        for noise in ["Topology", "SystemOverloadedError", "labels", "Kind:"] {
            assert!(!shown.contains(noise), "{args:?}: driver noise {noise:?} in {err}");
        }
    }
}

#[tokio::test]
async fn against_a_live_server_with_auth_the_password_appears_in_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, user_uri) = own_auth_server(data.path(), PASSWORD).await;
    let uri = user_uri.replacen("backup@", &format!("backup:{PASSWORD}@"), 1);
    let config = write_config(dir.path(), &uri, &["admin.system.version".to_string()], "");
    let config = config.to_str().unwrap();
    let mut outputs = Vec::new();
    for args in [vec!["--config", config, "-vv", "backup"], vec!["--config", config, "-v", "check"]] {
        let (code, out, err) = cli(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        outputs.push(out + &err);
    }
    // A wrong password: refused, with the hint pointing at the credentials, and neither password shown.
    let wrong = user_uri.replacen("backup@", "backup:Wr0ng-pw-0815@", 1);
    let (code, out, err) = cli(&["restore", "--archive", "/dev/null", "--to", &wrong]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("authentication failed") && err.contains("mongodb-password secret"), "{err}");
    assert!(!err.contains("Wr0ng-pw-0815"), "{err}");
    outputs.push(out + &err);
    server.kill().unwrap();
    server.wait().unwrap();
    let (code, out, err) = cli(&["--config", config, "backup"]);
    assert_eq!(code, 3, "{err}");
    outputs.push(out + &err);
    for output in outputs {
        assert!(!output.contains(PASSWORD), "the password was printed:\n{output}");
    }
}

#[tokio::test]
async fn twenty_one_shot_backups_end_without_a_driver_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("trust_exit");
    client().await.database(&db).collection("c").insert_many((0..200).map(|i| doc! {"i": i})).await.unwrap();
    let config = write_config(dir.path(), &uri(), &[format!("{db}.*")], "");
    let config = config.to_str().unwrap();
    for run in 0..20 {
        let (code, _, err) = cli(&["--config", config, "-v", "backup"]);
        assert_eq!(code, 0, "run {run}: {err}");
        assert!(!err.contains("panicked"), "run {run} panicked at exit:\n{err}");
    }
}

#[tokio::test]
async fn stored_objects_and_exports_are_0600_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("trust_modes");
    client().await.database(&db).collection("c").insert_one(doc! {"x": 1}).await.unwrap();
    let config = write_config(dir.path(), &uri(), &[format!("{db}.*")], "");
    let config = config.to_str().unwrap();
    let (code, _, err) = run_with_umask("000", &["--config", config, "backup"]);
    assert_eq!(code, 0, "{err}");
    let export = dir.path().join("export.archive.gz");
    let (code, _, err) =
        run_with_umask("000", &["--config", config, "export", "latest", "--out", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut files = vec![export];
    let mut pending = vec![dir.path().join("store")];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    assert_eq!(files.len(), 3, "{files:?}");
    for file in files {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

#[tokio::test]
async fn check_exits_1_when_a_config_holding_a_password_is_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (_server, user_uri) = own_auth_server(data.path(), PASSWORD).await;
    let uri = user_uri.replacen("backup@", &format!("backup:{PASSWORD}@"), 1);
    let path = write_config(dir.path(), &uri, &[], "");
    let config = path.to_str().unwrap();
    let (code, out, err) = cli(&["--config", config, "check"]);
    assert_eq!(code, 0, "mode 0600 is fine: {out}{err}");
    assert!(out.contains("config: ok"), "{out}");
    for (mode, who) in [(0o640, "its group"), (0o644, "everyone")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, out, err) = cli(&["--config", config, "check"]);
        assert_eq!(code, 1, "mode {mode:o}: {out}{err}");
        assert!(out.contains("config: WARNING") && out.contains(&format!("readable by {who}")), "{out}");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(out.contains("store: ok"), "the other checks still ran: {out}");
    }
    // Without a secret inside, a readable config is fine: the password comes from the secret file.
    let secret = dir.path().join("mongodb-password");
    std::fs::write(&secret, PASSWORD).unwrap();
    write_config(dir.path(), &user_uri, &[], "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[storage]", &format!("password_file = {:?}\n[storage]", secret.display().to_string()), 1);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = cli(&["--config", config, "check"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A TCP relay to the test server that passes `budget` bytes of replies per connection and then goes silent,
/// holding the connection open: a server that hangs mid-cursor, as a stuck disk or a dead network path does.
fn stalling_relay(target: std::net::SocketAddr, budget: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = std::net::TcpStream::connect(target) else { return };
            let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_in, &mut server_out));
            std::thread::spawn(move || {
                let mut passed = 0;
                let mut buf = [0u8; 16 << 10];
                while let Ok(n) = server.read(&mut buf) {
                    if n == 0 || passed + n > budget {
                        break;
                    }
                    passed += n;
                    if client.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                // Silent from here on, the sockets held open until the process ends.
                std::thread::sleep(Duration::from_secs(3600));
                drop((client, server));
            });
        }
    });
    port
}

#[tokio::test]
async fn a_cursor_that_stalls_fails_the_backup_naming_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("trust_stall");
    let text = "x".repeat(100_000);
    // 12 MB in server batches of about 4 MiB (the reader's block): the relay passes the first batch (from `find`)
    // and stalls in the first `getMore`, so the cursor stops mid-collection.
    for chunk in 0..4 {
        let docs: Vec<_> = (0..30).map(|i| doc! {"_id": chunk * 30 + i, "text": &text}).collect();
        client().await.database(&db).collection("big").insert_many(docs).await.unwrap();
    }
    let server: std::net::SocketAddr =
        uri().trim_start_matches("mongodb://").split('/').next().unwrap().parse().unwrap();
    let port = stalling_relay(server, 6 << 20);
    let relayed = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let config = write_config(dir.path(), &relayed, &[format!("{db}.*")], "stall_timeout = \"2s\"\n");
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the backup still hangs after 60 s on a stalled cursor");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("reading {db}.big: no answer from MongoDB for 2s")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(!err.contains("panicked"), "{err}");
}
