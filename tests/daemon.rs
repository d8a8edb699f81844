//! The daemon as systemd runs it: a child process with a temp control socket, driven by the real CLI.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bson::doc;
use common::daemon::{BIN, Daemon, config_text, find};
use common::*;

/// Slow settings: zstd at level 19 on one thread over ~3 MB of random words makes a backup take several seconds,
/// long enough to attach to it or stop it while it runs.
const SLOW: &str = "compression = \"zstd\"\nzstd_level = 19\ncompression_threads = 1\n";

/// Seeds a database with text zstd -19 chews on slowly: words in a pseudo-random order (a fixed LCG, so every run
/// is the same), which leaves little for the compressor to find and much for it to search.
async fn seed_slow(client: &mongodb::Client, db: &str) {
    let words = ["backup", "mongodb", "archive", "zstd", "azure", "restore", "oplog", "daemon", "socket", "retention"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_word = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        words[(state >> 33) as usize % words.len()]
    };
    let docs: Vec<_> = (0..4)
        .map(|i| {
            let text: String = (0..120_000).map(|_| next_word()).collect::<Vec<_>>().join(" ");
            doc! {"_id": i, "text": text}
        })
        .collect();
    for chunk in docs.chunks(4) {
        client.database(db).collection("big").insert_many(chunk.to_vec()).await.unwrap();
    }
}

fn output(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test]
async fn run_now_backs_up_and_a_second_request_attaches_to_the_same_backup() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_attach");
    seed_slow(&client().await, &db).await;
    let daemon = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], SLOW);

    let first = daemon.spawn_cli(&["run-now", "--json"]);
    let running = daemon.wait_backing_up();
    let second = daemon.spawn_cli(&["run-now", "--json"]);
    let (code1, out1, err1) = output(first);
    let (code2, out2, err2) = output(second);
    assert_eq!((code1, code2), (0, 0), "first: {err1}\nsecond: {err2}\nlog:\n{}", daemon.log());

    let (events1, events2) = (events(&out1), events(&out2));
    assert_eq!(events1[0]["type"], "started");
    assert_eq!(events1[0]["attached"], false);
    assert_eq!(events2[0]["attached"], true, "{out2}");
    let finished1 = events1.last().unwrap();
    let finished2 = events2.last().unwrap();
    assert_eq!(finished1["type"], "finished");
    assert_eq!(finished1["report"]["outcome"], "success");
    assert_eq!(finished1["report"]["id"], running);
    assert_eq!(finished2["report"]["id"], running, "the attached request got another backup's result");
    assert!(events1.iter().any(|e| e["type"] == "progress"), "no progress events: {out1}");
    assert_eq!(finished1["report"]["documents"], 4);

    // Exactly one backup was made, and it is complete.
    let manifests = daemon.manifests();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert!(manifests[0].parent().unwrap().ends_with(&running));

    // status remembers it; the plain (non-JSON) run-now prints a summary line and exits 0.
    let (code, out, _) = daemon.cli(&["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["recent"][0]["id"], running);
    assert_eq!(status["recent"][0]["trigger"], "run-now");
    assert!(status["running"].is_null());
    let (code, out, err) = daemon.cli(&["run-now"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete: 4 documents"), "{out}");
    let (_, text, _) = daemon.cli(&["status"]);
    assert!(text.contains("now: idle") && text.contains("success"), "{text}");
}

#[tokio::test]
async fn sigterm_mid_backup_leaves_no_manifest_and_exits_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_term");
    seed_slow(&client().await, &db).await;
    let mut daemon = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], SLOW);

    let follower = daemon.spawn_cli(&["run-now"]);
    daemon.wait_backing_up();
    daemon.signal("TERM");
    let (code, took) = daemon.wait_exit(Duration::from_secs(90));
    assert_eq!(code, 0, "log:\n{}", daemon.log());
    assert!(took < Duration::from_secs(30), "took {took:?} to stop");
    let (follower_code, _, follower_err) = output(follower);
    assert_ne!(follower_code, 0, "run-now succeeded although the backup was stopped");
    assert!(follower_err.contains("cancelled") || follower_err.contains("closed the connection"), "{follower_err}");
    assert!(daemon.manifests().is_empty(), "a stopped backup left a manifest: {:?}", daemon.manifests());
    assert!(!daemon.socket.exists(), "the socket file was left behind");
    assert!(daemon.log().contains("cancelling backup"), "{}", daemon.log());
}

#[tokio::test]
async fn a_backup_against_a_stopped_server_fails_run_now_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, server_uri) = own_server(data.path());
    let daemon = Daemon::start(dir.path(), &server_uri, &[], "");
    server.kill().unwrap();
    server.wait().unwrap();

    let (code, _, err) = daemon.cli(&["run-now"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed") && err.to_lowercase().contains("mongodb"), "{err}");
    assert!(daemon.manifests().is_empty());
    let (_, out, _) = daemon.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["recent"][0]["outcome"], "failed");
    assert!(status["recent"][0]["error"].as_str().unwrap().len() > 10);
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_hup");
    client().await.database(&db).collection("c").insert_one(doc! {"x": 1}).await.unwrap();
    let daemon = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], "");
    let good = std::fs::read_to_string(&daemon.config).unwrap();

    std::fs::write(&daemon.config, "[backup]\ncompresion = \"zstd\"\n").unwrap();
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("reload refused") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.log().contains("reload refused") && daemon.log().contains("compresion"), "{}", daemon.log());
    // Still serving, with the old config: a backup works (the client reads the broken file, so name the socket).
    let socket = daemon.socket.to_str().unwrap();
    let (code, out, err) = cli(&["run-now", "--socket", socket]);
    assert_eq!(code, 0, "{err}\n{}", daemon.log());
    assert!(out.contains("complete: 1 documents"), "{out}");

    // A good new config is taken: the schedule it adds shows in status.
    std::fs::write(
        &daemon.config,
        format!("{good}[schedule]\ncron = \"0 3 * * *\"\n").replace("[schedule]", "\n[schedule]"),
    )
    .unwrap();
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, out, _) = daemon.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status["next_scheduled"].as_str().unwrap().contains("T03:00:00"), "{out}");
}

/// Starts a daemon over a slow data set and a backup with `run-now ARGS`; once that is dumping, rewrites the config
/// with `extra` (under `[backup]`) and sends SIGHUP. Returns the temp dir, the daemon, the `run-now` child and the
/// running backup's id.
async fn reload_mid_backup(name: &str, run_now: &[&str], extra: &str) -> (tempfile::TempDir, Daemon, Child, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = unique(name);
    seed_slow(&client().await, &db).await;
    let include = [format!("{db}.*")];
    let daemon = Daemon::start(dir.path(), &uri(), &include, SLOW);
    let kick = daemon.spawn_cli(run_now);
    let running = daemon.wait_backing_up();
    std::fs::write(&daemon.config, config_text(dir.path(), &uri(), &include, extra)).unwrap();
    daemon.signal("HUP");
    (dir, daemon, kick, running)
}

#[tokio::test]
async fn sighup_mid_backup_lets_it_finish_and_the_next_backup_takes_the_new_config() {
    let (_dir, mut daemon, first, running) =
        reload_mid_backup("daemon_hup_mid", &["run-now", "--json"], "compression = \"gzip\"\n").await;
    daemon.wait_log("reloaded");
    assert!(daemon.cli(&["status", "--json"]).1.contains(&running), "the reload ended the running backup");

    let (code, out, err) = output(first);
    assert_eq!(code, 0, "{err}\nlog:\n{}", daemon.log());
    let finished = events(&out).pop().unwrap();
    assert_eq!(
        (&finished["report"]["id"], &finished["report"]["outcome"]),
        (&running.clone().into(), &"success".into())
    );
    assert_eq!(daemon.manifest(&running)["compression"], "zstd", "the running backup changed config midway");

    let (code, out, err) = daemon.cli(&["run-now", "--json"]);
    assert_eq!(code, 0, "{err}");
    let second = events(&out).pop().unwrap()["report"]["id"].as_str().unwrap().to_string();
    assert_eq!(daemon.manifest(&second)["compression"], "gzip", "the next backup did not take the new config");
    assert!(daemon.child.try_wait().unwrap().is_none(), "the reload ended the daemon");
    assert!(!daemon.log().contains("cancel"), "{}", daemon.log());
}

#[tokio::test]
async fn a_reload_that_moves_the_metrics_listener_restarts_once_the_running_backup_is_done() {
    let moved = format!("{SLOW}[metrics]\nlisten = \"127.0.0.1:9\"\n");
    let (_dir, mut daemon, kick, running) = reload_mid_backup("daemon_hup_restart", &["run-now"], &moved).await;
    daemon.wait_log("metrics.listen changed: restarting once backup");
    assert!(daemon.child.try_wait().unwrap().is_none(), "exited while the backup ran:\n{}", daemon.log());

    let (code, _, err) = output(kick);
    assert_eq!(code, 0, "the backup did not survive the reload: {err}\nlog:\n{}", daemon.log());
    daemon.manifest(&running);
    let (code, _) = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(code, mongo_backup_agent::daemon::EXIT_RESTART, "log:\n{}", daemon.log());
    assert!(!daemon.socket.exists(), "the socket file was left behind");
}

#[tokio::test]
async fn a_replaced_binary_or_sigusr2_restarts_an_idle_daemon_at_once() {
    // A package upgrade renames a new file over the running binary, then reloads.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("mongo-backup-agent");
    std::fs::copy(BIN, &bin).unwrap();
    let socket = dir.path().join("control.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &uri(), &[], "")).unwrap();
    let mut daemon = Daemon::spawn_binary(&bin, dir.path(), &config, &socket, &[]);
    daemon.wait_ready();
    daemon.signal("HUP");
    daemon.wait_log("reloaded");
    assert!(daemon.child.try_wait().unwrap().is_none(), "a plain reload ended the daemon:\n{}", daemon.log());
    let new = dir.path().join("mongo-backup-agent.new");
    std::fs::copy(BIN, &new).unwrap();
    std::fs::rename(&new, &bin).unwrap();
    daemon.signal("HUP");
    let (code, took) = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(code, mongo_backup_agent::daemon::EXIT_RESTART, "log:\n{}", daemon.log());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(daemon.log().contains("the binary changed"), "{}", daemon.log());

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &uri(), &[], "");
    daemon.signal("USR2");
    let (code, _) = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(code, mongo_backup_agent::daemon::EXIT_RESTART, "log:\n{}", daemon.log());
    assert!(daemon.log().contains("restart requested"), "{}", daemon.log());
}

#[tokio::test]
async fn one_daemon_per_socket_and_clients_say_when_none_runs() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &uri(), &[], "");
    let mut second = Daemon::spawn(dir.path(), &daemon.config, &daemon.socket, &[]);
    let (code, _) = second.wait_exit(Duration::from_secs(30));
    assert_ne!(code, 0);
    assert!(second.log().contains("already serving"), "{}", second.log());
    assert_eq!(daemon.cli(&["status"]).0, 0, "the first daemon was disturbed");

    // A client speaking another protocol version is told so; garbage and oversized lines only end their own
    // connection.
    use std::io::{BufRead, Write};
    let ask = |line: &[u8]| {
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        // The daemon stops reading an oversized line and hangs up, so the rest of a long write may fail.
        let _ = stream.write_all(line);
        let mut answer = String::new();
        std::io::BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    };
    let answer = ask(b"{\"version\":99,\"request\":{\"type\":\"status\"}}\n");
    assert!(answer.contains("\"error\"") && answer.contains("protocol 99"), "{answer}");
    assert!(ask(b"not json\n").contains("malformed"));
    assert!(ask(&[b'x'; 2 << 20]).contains("longer than"));
    assert_eq!(daemon.cli(&["status"]).0, 0, "a bad client took the daemon down");

    let nowhere = dir.path().join("nobody.sock");
    let (code, _, err) = cli(&["run-now", "--socket", nowhere.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("daemon is not running") && err.contains("--standalone"), "{err}");
    let (code, _, err) = cli(&["status", "--socket", nowhere.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
}

#[tokio::test]
async fn the_trigger_runs_only_what_it_allows() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_trigger");
    client().await.database(&db).collection("c").insert_one(doc! {"x": 1}).await.unwrap();
    // Both backups fall into one hour, where retention would keep only the newer one.
    let daemon = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], "[retention]\nprune_after_backup = false\n");
    let trigger = |command: &str| {
        let out = Command::new(BIN)
            .args(["--config", daemon.config.to_str().unwrap(), "trigger"])
            .env("SSH_ORIGINAL_COMMAND", command)
            .env("SSH_CONNECTION", "192.0.2.7 50000 127.0.0.1 22")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for hostile in ["rm -rf /", "run-now; id", "run-now run-now", "/bin/sh", "status --json", "restore latest"] {
        let (code, _, err) = trigger(hostile);
        assert_eq!(code, 2, "{hostile:?}: {err}");
        assert!(err.contains("refused"), "{err}");
    }
    assert!(daemon.manifests().is_empty(), "a refused command started a backup");
    let (code, out, err) = trigger("run-now");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete: 1 documents"), "{out}");
    let (code, out, err) = trigger("");
    assert_eq!(code, 0, "{err}");
    assert_eq!(daemon.manifests().len(), 2);
    let (code, status, _) = trigger("status");
    assert_eq!(code, 0);
    assert!(status.contains("recent runs") && status.contains("ssh"), "{status}");
    assert!(out.contains("complete"));
}

#[tokio::test]
async fn after_a_backup_the_daemon_verifies_prunes_notifies_and_exports_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_hooks");
    client().await.database(&db).collection("c").insert_many((0..50).map(|i| doc! {"i": i})).await.unwrap();
    let receiver = common::http_receiver::Receiver::start(common::http_receiver::Answer::Status(200)).await;
    let webhook = dir.path().join("webhook-url");
    std::fs::write(&webhook, receiver.url("/hook")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let textfile = dir.path().join("agent.prom");
    // keep_last = 1 and nothing else: the second backup makes the first one go.
    let extra = format!(
        "[verify]\nafter_backup = true\n[retention]\nkeep_last = 1\nkeep_hourly = 0\nkeep_daily = 0\nkeep_weekly = 0\n\
         keep_monthly = 0\n[notify]\non_success = true\nwebhook_url_file = {:?}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         textfile = {:?}\n",
        webhook.display().to_string(),
        textfile.display().to_string()
    );
    let daemon = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], &extra);

    let (code, first, err) = daemon.cli(&["run-now"]);
    assert_eq!(code, 0, "{err}\n{}", daemon.log());
    let (code, second, err) = daemon.cli(&["run-now", "--json"]);
    assert_eq!(code, 0, "{err}\n{}", daemon.log());
    let second_id = events(&second).last().unwrap()["report"]["id"].as_str().unwrap().to_string();
    assert!(daemon.log().contains(&format!("{second_id} verified: 1 namespaces, 50 documents")), "{}", daemon.log());

    // Retention ran after the second backup: only it is left, and the first one's directory is gone.
    let manifests = daemon.manifests();
    assert_eq!(manifests.len(), 1, "{manifests:?} (first run: {first})");
    assert!(manifests[0].parent().unwrap().ends_with(&second_id));

    // Both successes reached the webhook (on_success = true); delivery runs beside the reply, so give it a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.seen().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].path, "/hook");
    assert_eq!(seen[1].body["id"], second_id);
    assert_eq!(seen[1].body["outcome"], "success");

    // The endpoint and the textfile carry the same numbers.
    let body = common::prometheus::fetch(format!("127.0.0.1:{port}")).await;
    for scrape in
        [common::prometheus::parse(&body), common::prometheus::parse(&std::fs::read_to_string(&textfile).unwrap())]
    {
        assert_eq!(scrape.get("mongo_backup_agent_backups_total{outcome=\"success\"}"), 2.0);
        assert_eq!(scrape.get("mongo_backup_agent_backups_total{outcome=\"failed\"}"), 0.0);
        assert_eq!(scrape.get("mongo_backup_agent_backup_in_progress"), 0.0);
        assert_eq!(scrape.get("mongo_backup_agent_last_run_success"), 1.0);
        assert_eq!(scrape.get("mongo_backup_agent_last_run_documents"), 50.0);
        let now = chrono::Utc::now().timestamp() as f64;
        let last = scrape.get("mongo_backup_agent_last_success_timestamp_seconds");
        assert!((now - 120.0..=now + 1.0).contains(&last), "last success {last}, now {now}");
    }
}

#[tokio::test]
async fn without_a_daemon_run_now_says_so_and_standalone_backs_up_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_standalone");
    client().await.database(&db).collection("c").insert_one(doc! {"x": 1}).await.unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &uri(), &[format!("{db}.*")], "")).unwrap();
    let config = config.to_str().unwrap();

    let (code, _, err) = cli(&["--config", config, "run-now"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("systemctl start mongo-backup-agent"), "{err}");
    assert!(find(&dir.path().join("store"), "manifest.json").is_empty());

    let (code, _, err) = cli(&["--config", config, "run-now", "--standalone"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("complete: 1 collections, 1 documents"), "{err}");
    assert_eq!(find(&dir.path().join("store"), "manifest.json").len(), 1);
}

#[tokio::test]
async fn on_a_terminal_run_now_shows_live_progress() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_tty");
    seed_slow(&client().await, &db).await;
    let daemon = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], SLOW);
    // script(1) runs the command on a pseudo-terminal, as an operator's shell would; -e passes its exit status on.
    let command = format!("{BIN} --config {} run-now", daemon.config.display());
    let out = Command::new("script").args(["-qec", &command, "/dev/null"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("dumping ("), "no live progress on the terminal: {text}");
    assert!(text.contains("complete: 4 documents"), "{text}");
}

/// Waits for a client process to end, failing the test (not hanging it) after `limit`.
fn output_within(mut child: Child, limit: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("client still waiting after {limit:?}: the run never ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    output(child)
}

/// Waits until the webhook receiver has seen `count` deliveries.
async fn deliveries(receiver: &common::http_receiver::Receiver, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.seen().len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.seen().into_iter().map(|r| r.body).collect()
}

/// `[notify]` posting every outcome to `receiver`, and a metrics textfile in `dir`.
fn notify_and_textfile(dir: &Path, receiver: &common::http_receiver::Receiver) -> String {
    let webhook = dir.join("webhook-url");
    std::fs::write(&webhook, receiver.url("/hook")).unwrap();
    format!(
        "[notify]\non_success = true\nwebhook_url_file = {:?}\n[metrics]\ntextfile = {:?}\n",
        webhook.display().to_string(),
        dir.join("agent.prom").display().to_string()
    )
}

#[tokio::test]
async fn a_backup_failing_its_verification_is_untrusted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_untrusted");
    client().await.database(&db).collection("c").insert_many((0..20).map(|i| doc! {"i": i})).await.unwrap();
    let receiver = common::http_receiver::Receiver::start(common::http_receiver::Answer::Status(200)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!(
        "[verify]\nafter_backup = true\n{}listen = \"127.0.0.1:{port}\"\n",
        notify_and_textfile(dir.path(), &receiver)
    );
    let env = [("MBA_TEST_FAULT", "corrupt-before-verify")];
    let mut daemon = Daemon::start_with_env(dir.path(), &uri(), &[format!("{db}.*")], &extra, &env);
    let textfile = dir.path().join("agent.prom");

    let (code, out, err) = daemon.cli(&["run-now", "--json"]);
    assert_eq!(code, 1, "{out}{err}\n{}", daemon.log());
    let report = events(&out).last().unwrap()["report"].clone();
    let id = report["id"].as_str().unwrap().to_string();
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("failed the verification after it, marked untrusted"), "{error}");
    assert_eq!(daemon.manifests().len(), 1, "the manifest stays: the backup is kept for a look, not trusted");

    // The notification says so.
    let bodies = deliveries(&receiver, 1).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["outcome"], "failed");
    assert!(bodies[0]["error"].as_str().unwrap().contains("marked untrusted"), "{}", bodies[0]);

    // `list` shows it untrusted; `latest` finds no trusted backup.
    let (code, out, _) = daemon.cli(&["list", "--json"]);
    assert_eq!(code, 0);
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((row["id"].as_str(), row["retention"].as_str()), (Some(id.as_str()), Some("untrusted")), "{out}");
    let export = dir.path().join("x.archive.gz");
    let (code, _, err) = daemon.cli(&["export", "latest", "--out", export.to_str().unwrap()]);
    assert_eq!(code, 1, "latest must not be the untrusted backup: {err}");
    assert!(err.contains("no backup \"latest\""), "{err}");

    // The last-success metric: none, also after a restart reads the store again.
    let scrape = common::prometheus::parse(&std::fs::read_to_string(&textfile).unwrap());
    assert_eq!(scrape.get("mongo_backup_agent_last_success_timestamp_seconds"), 0.0);
    assert_eq!(scrape.get("mongo_backup_agent_backups_total{outcome=\"failed\"}"), 1.0);
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(30));
    let restarted = Daemon::start(dir.path(), &uri(), &[format!("{db}.*")], &extra);
    let scrape_last_success = || async {
        let body = common::prometheus::fetch(format!("127.0.0.1:{port}")).await;
        common::prometheus::parse(&body).get("mongo_backup_agent_last_success_timestamp_seconds")
    };
    assert_eq!(scrape_last_success().await, 0.0, "the restarted daemon took the untrusted backup as a success");
    // A good backup (no fault this time) counts, and is what `latest` is now.
    let (code, out, err) = restarted.cli(&["run-now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(scrape_last_success().await > 0.0);
    let (code, _, err) = restarted.cli(&["export", "latest", "--out", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(&id), "{err}");
}

#[tokio::test]
async fn a_panic_in_a_run_fails_that_run_and_the_daemon_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique("daemon_panic");
    client().await.database(&db).collection("c").insert_one(doc! {"x": 1}).await.unwrap();
    let daemon = Daemon::start_with_env(dir.path(), &uri(), &[format!("{db}.*")], "", &[("MBA_TEST_FAULT", "panic")]);
    for run in 1..=2 {
        let (code, _, err) = output_within(daemon.spawn_cli(&["run-now"]), Duration::from_secs(60));
        assert_eq!(code, 1, "run {run}: {err}\n{}", daemon.log());
        assert!(err.contains("internal error") && err.contains("panicked"), "run {run}: {err}");
        let (code, out, _) = daemon.cli(&["status", "--json"]);
        assert_eq!(code, 0, "the daemon stopped answering after a panic");
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(status["running"].is_null(), "{out}");
        assert_eq!(status["recent"].as_array().unwrap().len(), run, "{out}");
        assert_eq!(status["recent"][0]["outcome"], "failed");
    }
}

#[tokio::test]
async fn a_password_in_the_uri_reaches_no_log_status_notification_or_metric() {
    const PASSWORD: &str = "D4emon-secret-9931";
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, user_uri) = own_auth_server(data.path(), PASSWORD).await;
    let uri = user_uri.replacen("backup@", &format!("backup:{PASSWORD}@"), 1);
    let receiver = common::http_receiver::Receiver::start(common::http_receiver::Answer::Status(200)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = notify_and_textfile(dir.path(), &receiver) + &format!("listen = \"127.0.0.1:{port}\"\n");
    let daemon = Daemon::start(dir.path(), &uri, &["admin.system.version".to_string()], &extra);
    let mut seen = Vec::new();
    let (code, out, err) = daemon.cli(&["run-now"]);
    assert_eq!(code, 0, "{err}\n{}", daemon.log());
    seen.push(out + &err);
    server.kill().unwrap();
    server.wait().unwrap();
    let (code, out, err) = daemon.cli(&["run-now", "--json"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("cannot reach MongoDB at 127.0.0.1:"), "{out}");
    seen.push(out + &err);
    for args in [["status", "--json"], ["status", "-v"]] {
        let (_, out, err) = daemon.cli(&args);
        seen.push(out + &err);
    }
    seen.extend(deliveries(&receiver, 2).await.iter().map(|b| b.to_string()));
    seen.push(common::prometheus::fetch(format!("127.0.0.1:{port}")).await);
    seen.push(std::fs::read_to_string(dir.path().join("agent.prom")).unwrap());
    seen.push(daemon.log());
    assert_eq!(seen.len(), 9, "two notifications expected");
    for text in seen {
        assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
    }
}
