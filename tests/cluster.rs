//! Replica-set mode end to end: three `serve` processes with their own configs and sockets, one server, one Azurite
//! container as the store they meet in. Ranks are forced through `[cluster] priority` (SecantusDB always says it is
//! primary; the ranking itself is unit-tested over real replica-set replies in `src/cluster/rank.rs`).

mod azure_support;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_support::{connection_string, create_container, shared_endpoint, unique_container};
use bson::doc;
use common::daemon::Daemon;
use common::*;
use mongo_backup_agent::cluster::requests::Served;
use mongo_backup_agent::config::Config;
use mongo_backup_agent::oplog::chain::Chain;
use mongo_backup_agent::store::{self, ObjectStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The lease every test uses: Azure's shortest, so failovers are quick.
const LEASE: Duration = Duration::from_secs(15);

/// The archiving tests' `chunk_span`.
const CHUNK_SPAN: Duration = Duration::from_secs(3);

/// One cluster at a time: three daemons each are enough load for two cores, and the ranking assertions should
/// not hinge on heartbeats delayed by a neighbouring test.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One agent of the test cluster.
struct Agent {
    daemon: Daemon,
    member: String,
    /// Where its metrics are served.
    metrics: std::net::SocketAddr,
}

impl Agent {
    /// One scrape of its metrics.
    async fn scrape(&self) -> common::prometheus::Scrape {
        common::prometheus::parse(&common::prometheus::fetch(self.metrics).await)
    }
}

/// Three agents sharing one container.
struct Cluster {
    agents: Vec<Agent>,
    _dirs: Vec<tempfile::TempDir>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// What every agent's config holds besides its member name and store endpoint.
struct Setup<'a> {
    uri: &'a str,
    db: &'a str,
    /// Extra config sections, verbatim.
    extra: &'a str,
}

/// Agent `member`'s config, serving its metrics on `metrics`.
fn agent_config(
    dir: &Path,
    setup: &Setup,
    endpoint: &str,
    container: &str,
    (member, priority, metrics): (&str, f64, std::net::SocketAddr),
) -> String {
    let secret = dir.join("connection-string");
    std::fs::write(&secret, connection_string(endpoint)).unwrap();
    format!(
        "[mongodb]\nuri = {:?}\n[storage]\nkind = \"azure\"\nendpoint = {endpoint:?}\ncontainer = {container:?}\n\
         auth = \"connection-string\"\nconnection_string_file = {:?}\nprefix = \"t\"\nretry_max_secs = 4\n\
         request_timeout_secs = 4\n[daemon]\nsocket = {:?}\n[backup]\ninclude = [\"{}.*\"]\n\
         [retention]\nprune_after_backup = false\n[metrics]\nlisten = \"{metrics}\"\n[cluster]\nenabled = true\nmember = {member:?}\npriority = {priority:.1}\nlease_duration = \"15s\"\n\
         poll_interval = \"1s\"\n{}",
        setup.uri,
        secret.display().to_string(),
        dir.join("control.sock").display().to_string(),
        setup.db,
        setup.extra
    )
}

impl Cluster {
    /// Starts agents `m1`, `m2`, `m3` with priorities 3, 2, 1 (so `m1` should win whatever it contends for);
    /// `endpoints[i]` is the store endpoint agent `i` uses (a proxy, or Azurite itself).
    async fn start(setup: &Setup<'_>, endpoints: [&str; 3]) -> Cluster {
        let serial = ONE_AT_A_TIME.lock().await;
        let container = unique_container("cluster");
        create_container(&shared_endpoint(), &container).await;
        let mut agents = Vec::new();
        let mut dirs = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let member = format!("m{}", i + 1);
            let config = dir.path().join("config.toml");
            let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let identity = (member.as_str(), 3.0 - i as f64, metrics);
            std::fs::write(&config, agent_config(dir.path(), setup, endpoint, &container, identity)).unwrap();
            let daemon = Daemon::spawn(dir.path(), &config, &dir.path().join("control.sock"), &[]);
            daemon.wait_ready();
            agents.push(Agent { daemon, member, metrics });
            dirs.push(dir);
        }
        let cluster = Cluster { agents, _dirs: dirs, _serial: serial };
        cluster.wait_for("every member's heartbeat", Duration::from_secs(30), |c| {
            (0..3).all(|i| {
                c.status(i).is_some_and(|s| {
                    s["cluster"]["live"].as_array().is_some_and(|l| l.len() == 3 && l.iter().all(|v| v == true))
                })
            })
        });
        cluster
    }

    /// `status --json` of agent `i`, when it answers.
    fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (code, out, _) = self.agents[i].daemon.cli(&["status", "--json"]);
        (code == 0).then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// Waits until `done` holds, checking every 200 ms; fails naming `what` and showing the logs.
    fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) -> Duration {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < limit, "no {what} within {limit:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        start.elapsed()
    }

    fn logs(&self) -> String {
        self.agents.iter().map(|a| format!("--- {} ---\n{}", a.member, a.daemon.log())).collect::<Vec<_>>().join("\n")
    }

    /// The store the agents share, opened directly.
    fn store(&self) -> Arc<dyn ObjectStore> {
        let config = Config::load(&self.agents[1].daemon.config).unwrap();
        store::open(&config.storage).unwrap()
    }

    /// Backup ids with a manifest in the store, and the (start, end) of each.
    async fn manifests(&self) -> BTreeMap<String, (String, String)> {
        let store = self.store();
        let mut found = BTreeMap::new();
        for object in store.list("t/").await.unwrap() {
            if let Some(id) = object.key.strip_suffix("/manifest.json").and_then(|k| k.strip_prefix("t/")) {
                let manifest: serde_json::Value =
                    serde_json::from_slice(&store.get_bytes(&object.key).await.unwrap()).unwrap();
                let span = (
                    manifest["started_at"].as_str().unwrap().to_string(),
                    manifest["finished_at"].as_str().unwrap().to_string(),
                );
                found.insert(id.to_string(), span);
            }
        }
        found
    }

    /// Which member served each request, from the results in the store.
    async fn served(&self) -> Vec<Served> {
        let store = self.store();
        let mut served = Vec::new();
        for object in store.list("t/.locks/results/").await.unwrap() {
            served.push(serde_json::from_slice(&store.get_bytes(&object.key).await.unwrap()).unwrap());
        }
        served
    }

    fn kick(&self, i: usize) -> Child {
        self.agents[i].daemon.spawn_cli(&["run-now"])
    }
}

/// Waits for a `run-now` child; returns its exit code and the backup id it printed.
fn finish_kick(child: Child) -> (i32, Option<String>, String) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout.split_whitespace().skip_while(|w| *w != "backup").nth(1).map(str::to_string);
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), id, text)
}

/// `uri` with driver timeouts longer than a test's pause of a runner, so a paused runner's reads survive it:
/// whether it then stores anything is up to fencing alone.
fn patient(uri: &str) -> String {
    let joiner = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{joiner}connectTimeoutMS=120000&heartbeatFrequencyMS=60000")
}

/// A fresh database of `docs` documents and three agents backing it up, each reaching the store at its endpoint
/// (Azurite itself when `None`).
async fn cluster_over(tag: &str, docs: usize, endpoints: [Option<&str>; 3]) -> Cluster {
    let db = unique(tag);
    fill(&db, docs).await;
    let uri = patient(&uri());
    let azurite = shared_endpoint();
    Cluster::start(&Setup { uri: &uri, db: &db, extra: "" }, endpoints.map(|e| e.unwrap_or(&azurite))).await
}

/// Fills `db.c` with `docs` documents of ~1 KiB, so a backup takes a few seconds.
async fn fill(db: &str, docs: usize) {
    let client = client().await;
    let coll = client.database(db).collection::<bson::Document>("c");
    let pad = "x".repeat(1000);
    for start in (0..docs).step_by(5000) {
        let batch: Vec<_> = (start..(start + 5000).min(docs)).map(|i| doc! {"_id": i as i64, "pad": &pad}).collect();
        coll.insert_many(batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_kicks_over_three_agents_make_one_backup_at_a_time_each_kick_gets_its_result() {
    let cluster = cluster_over("cluster_kicks", 20_000, [None; 3]).await;

    // Spread over about ten seconds, so they fall into several slots, some while a backup runs.
    let kicks: Vec<Child> = (0..50)
        .map(|k| {
            std::thread::sleep(Duration::from_millis(200));
            cluster.kick(k % 3)
        })
        .collect();
    let results: Vec<_> = kicks.into_iter().map(finish_kick).collect();
    for (code, id, text) in &results {
        assert_eq!(*code, 0, "a kick failed:\n{text}\n{}", cluster.logs());
        assert!(id.is_some(), "a kick printed no backup id:\n{text}");
    }
    let kicked: BTreeSet<String> = results.iter().filter_map(|(_, id, _)| id.clone()).collect();
    let manifests = cluster.manifests().await;
    // Every backup a kick reported exists, and no backup exists that no kick reported.
    assert_eq!(kicked, manifests.keys().cloned().collect::<BTreeSet<_>>(), "{}", cluster.logs());
    // One at a time: no two backups overlap.
    let mut spans: Vec<&(String, String)> = manifests.values().collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "backups overlap: {pair:?}");
    }
    // The best-ranked member (forced through priority) ran every one.
    assert!(manifests.len() > 1, "the kicks fell into several slots: {manifests:?}");
    let served = cluster.served().await;
    let runners: BTreeSet<&str> = served.iter().map(|s| s.member.as_str()).collect();
    assert_eq!(runners, BTreeSet::from(["m1"]), "{}", cluster.logs());
    // `status` on any member shows every member's heartbeat, best-ranked first.
    let (code, shown, _) = cluster.agents[2].daemon.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(shown.contains("cluster: this is member m3; runner: "), "{shown}");
    let rows: Vec<&str> =
        shown.lines().filter(|l| l.trim_start().starts_with('m') && l.contains("heartbeat")).collect();
    assert_eq!(rows.len(), 3, "{shown}");
    for (row, member) in rows.iter().zip(["m1", "m2", "m3"]) {
        assert!(
            row.trim_start().starts_with(member) && row.contains("primary") && row.contains("last success"),
            "{shown}"
        );
    }
    eprintln!("50 kicks over 3 agents: {} backups, all by m1", manifests.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_runner_mid_backup_another_agent_serves_the_kick() {
    let mut cluster = cluster_over("cluster_kill", 60_000, [None; 3]).await;

    let (doomed, id, failover) = take_over(&mut cluster, |c| c.agents[0].daemon.child.kill().unwrap()).await;
    eprintln!(
        "runner killed mid-backup {doomed}: m2 finished backup {id} {:.1}s after the kill",
        failover.as_secs_f64()
    );
}

/// Kicks m3 and, once m1 (the best) is backing up for it, makes m1 `lose`; the kick must then be served by m2,
/// with m2's backup the only one stored. Returns m1's backup id, m2's, and how long after the loss the kick ended.
async fn take_over(cluster: &mut Cluster, lose: impl FnOnce(&mut Cluster)) -> (String, String, Duration) {
    let kick = cluster.kick(2);
    let doomed = cluster.agents[0].daemon.wait_backing_up();
    lose(cluster);
    let lost = Instant::now();
    let (code, id, text) = finish_kick(kick);
    let failover = lost.elapsed();
    assert_eq!(code, 0, "{text}\n{}", cluster.logs());
    let id = id.unwrap();
    assert_ne!(id, doomed);
    let manifests = cluster.manifests().await;
    assert_eq!(manifests.keys().collect::<Vec<_>>(), [&id], "only the survivor's backup: {}", cluster.logs());
    let served = cluster.served().await;
    assert_eq!(served.iter().map(|s| s.member.as_str()).collect::<Vec<_>>(), ["m2"], "{}", cluster.logs());
    assert!(failover < LEASE + Duration::from_secs(60), "{failover:?}");
    (doomed, id, failover)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_renewed_runs_out_and_once_taken_its_holder_is_refused() {
    let container = unique_container("lease");
    create_container(&shared_endpoint(), &container).await;
    let (mut config, _secret) = azure_support::shared_key_config(&shared_endpoint(), &container);
    config.prefix = "t".into();
    let store = store::open(&config).unwrap();
    let key = mongo_backup_agent::cluster::lock_key("t", "backup");
    let paused = store.try_lease(&key, LEASE).await.unwrap().expect("free");
    assert!(store.try_lease(&key, LEASE).await.unwrap().is_none());
    // The holder pauses longer than its lease: the lock is free again, and the next agent takes it.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert!(!store.lease_held(&key).await.unwrap(), "an expired lease reads as free");
    let next =
        mongo_backup_agent::cluster::Holder::try_take(store.as_ref(), &key, LEASE).await.unwrap().expect("expired");
    // The paused holder's renewal, which every manifest and chunk write waits on, is refused.
    let err = paused.renew().await.unwrap_err();
    assert!(matches!(err, mongo_backup_agent::store::StoreError::LeaseLost { .. }), "{err}");
    // The new holder's fence passes, and it keeps the lease past its first duration by renewing it.
    next.admit().await.unwrap();
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    assert!(!next.lost().is_cancelled());
    assert!(store.try_lease(&key, LEASE).await.unwrap().is_none(), "renewed in the background");
    next.admit().await.unwrap();
    next.release().await;
    assert!(store.try_lease(&key, LEASE).await.unwrap().is_some(), "released");
}

/// A loopback TCP proxy in front of Azurite that the test can cut: the listener closes and every connection
/// through it is dropped, as a network partition would.
struct Proxy {
    port: u16,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            let _keep = held;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                connections.lock().await.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, tasks }
    }

    /// Drops the listener and every connection.
    fn cut(&mut self) {
        self.tasks.abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_cut_off_from_the_store_aborts_without_a_manifest_and_another_wins() {
    let upstream: url::Url = shared_endpoint().parse().unwrap();
    let upstream = std::net::SocketAddr::new(upstream.host_str().unwrap().parse().unwrap(), upstream.port().unwrap());
    let mut proxy = Proxy::start(upstream).await;
    let through_proxy = format!("http://127.0.0.1:{}/devstoreaccount1", proxy.port);
    let mut cluster = cluster_over("cluster_cut", 60_000, [Some(&through_proxy), None, None]).await;

    let (doomed, id, failover) = take_over(&mut cluster, |_| proxy.cut()).await;
    // The cut-off runner gave up on its own (its uploads failed, or its lease ran out) and stored nothing.
    cluster.wait_for("the cut-off runner to give up", Duration::from_secs(60), |c| {
        c.agents[0].daemon.log().contains(&format!("backup {doomed} failed"))
    });
    assert_eq!(cluster.manifests().await.keys().collect::<Vec<_>>(), [&id], "{}", cluster.logs());
    let log = cluster.agents[0].daemon.log();
    let gave_up = log.lines().find(|l| l.contains(&format!("backup {doomed} failed"))).unwrap_or_default().to_string();
    eprintln!(
        "runner cut off mid-backup {doomed}: m2 finished backup {id} {:.1}s after the cut; m1: {gave_up}",
        failover.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_paused_past_its_lease_wakes_up_and_writes_nothing() {
    let mut cluster = cluster_over("cluster_pause", 60_000, [None; 3]).await;
    let (doomed, id, failover) = take_over(&mut cluster, |c| c.agents[0].daemon.signal("STOP")).await;
    // The zombie wakes with its backup half done: its next renewal is refused, so it stops and stores nothing.
    cluster.agents[0].daemon.signal("CONT");
    let failed = format!("backup {doomed} failed");
    cluster.wait_for("the paused runner to give up", Duration::from_secs(60), |c| {
        c.agents[0].daemon.log().contains(&failed)
    });
    let log = cluster.agents[0].daemon.log();
    let gave_up = log.lines().find(|l| l.contains(&failed)).unwrap_or_default().to_string();
    assert!(gave_up.contains("lease"), "{gave_up}");
    // Give it time to do anything more it would do.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cluster.manifests().await.keys().collect::<Vec<_>>(), [&id], "{}", cluster.logs());
    eprintln!(
        "runner paused mid-backup {doomed}: m2 finished backup {id} {:.1}s after the pause; m1 woke: {gave_up}",
        failover.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_archiver_the_chain_goes_on_without_gap_or_duplicate() {
    archiver_failover("killed", |m1| m1.daemon.child.kill().unwrap(), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_paused_past_its_lease_wakes_up_and_stores_no_overlapping_chunk() {
    let woke = |m1: &mut Agent| {
        m1.daemon.signal("CONT");
        // It learns it lost the lease (its renewal, or the one before its next chunk, is refused) and stops.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !m1.daemon.log().contains("lost the archiving lease") {
            assert!(Instant::now() < deadline, "the paused archiver never noticed:\n{}", m1.daemon.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    archiver_failover("paused", |m1| m1.daemon.signal("STOP"), woke).await;
}

/// Archiving with a writer running; once m1 archives, `lose` it; m2 must take over and archive on; `after` runs
/// once m2 has stored a few chunks. Then the chain has no gap and no overlap, and restoring its newest point gives
/// every write exactly once.
async fn archiver_failover(how: &str, lose: impl FnOnce(&mut Agent), after: impl FnOnce(&mut Agent)) {
    let server_dir = tempfile::tempdir().unwrap();
    let (mut server, uri) = own_server(server_dir.path());
    let uri = patient(&uri);
    let db = unique("cluster_pitr");
    let azurite = shared_endpoint();
    let extra =
        format!("[pitr]\nenabled = true\nchunk_span = \"{}s\"\npoll_interval = \"250ms\"\n", CHUNK_SPAN.as_secs());
    let mut cluster = Cluster::start(&Setup { uri: &uri, db: &db, extra: &extra }, [&azurite; 3]).await;

    // A writer numbering its documents, so the restore shows whether anything is missing.
    let writer_client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let coll = writer_client.database(&db).collection::<bson::Document>("w");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (coll, stop) = (coll.clone(), stop.clone());
        async move {
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                coll.insert_one(doc! {"_id": n}).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        }
    });
    // Whether agent `i` archives (and has stored a chunk, when `sealed`).
    let archiving = |c: &Cluster, i: usize, sealed: bool| {
        c.status(i).is_some_and(|s| {
            let a = &s["pitr"]["archive"];
            a["archiving"] == true && (!sealed || a["chunks"].as_u64() > Some(0))
        })
    };
    let archiver = |c: &Cluster, sealed: bool, skip: Option<usize>| {
        (0..c.agents.len()).filter(|&i| Some(i) != skip).find(|&i| archiving(c, i, sealed))
    };
    cluster
        .wait_for("an archiving member with a chunk", Duration::from_secs(90), |c| archiver(c, true, None).is_some());
    let first = archiver(&cluster, true, None).unwrap();
    assert_eq!(cluster.agents[first].member, "m1", "the best member archives: {}", cluster.logs());
    // A standby's metrics speak for the set: archiving on (elsewhere), the base m1 took as its last success, every
    // member live, and every series the shipped rules and dashboard use is there.
    let standby = cluster.agents[2].scrape().await;
    assert_eq!(standby.get("mongo_backup_agent_pitr_archiving"), 1.0);
    assert!(standby.get("mongo_backup_agent_last_success_timestamp_seconds") > 0.0);
    assert_eq!(standby.get("mongo_backup_agent_cluster_members_live"), 3.0);
    assert_eq!(standby.get("mongo_backup_agent_cluster_members_silent"), 0.0);
    // No own schedule here, so no schedule interval.
    common::prometheus::assert_exports_what_monitoring_uses(&standby, &["mongo_backup_agent_schedule_"]);
    lose(&mut cluster.agents[first]);
    let lost = Instant::now();
    let bound = LEASE + CHUNK_SPAN;
    cluster.wait_for("another member archiving", bound + Duration::from_secs(30), |c| {
        archiver(c, false, Some(first)).is_some()
    });
    let took_over = lost.elapsed();
    let second = archiver(&cluster, false, Some(first)).unwrap();
    assert_eq!(cluster.agents[second].member, "m2", "{}", cluster.logs());
    assert!(took_over <= bound, "took over after {took_over:?}, beyond lease_duration + chunk_span");
    cluster.wait_for("a chunk from the new archiver", Duration::from_secs(30), |c| archiving(c, second, true));
    let first_chunk = lost.elapsed();
    assert_eq!(cluster.agents[2].scrape().await.get("mongo_backup_agent_cluster_members_silent"), 1.0, "m1 is silent");
    // Let it archive a few chunks, stop writing, and seal through a kick on the member that is not archiving.
    tokio::time::sleep(Duration::from_secs(4)).await;
    after(&mut cluster.agents[first]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    let standby = 3 - first - second;
    let (code, out, err) = cluster.agents[standby].daemon.cli(&["run-now"]);
    assert_eq!(code, 0, "{out}{err}\n{}", cluster.logs());
    assert!(out.contains("no gap"), "{out}");

    // The chain: consecutive chunks meet exactly (no gap, no overlap, so no entry twice), and no gap from the base.
    let store = cluster.store();
    let chain = Chain::load(store.as_ref(), "t").await.unwrap();
    assert!(chain.gaps().is_empty(), "{:?}", chain.summary());
    for pair in chain.chunks.windows(2) {
        assert_eq!(pair[0].to, pair[1].from, "chunks must meet exactly: {:?}", chain.chunks);
    }
    let (code, out, err) = cluster.agents[second].daemon.cli(&["verify", "--chain"]);
    assert_eq!(code, 0, "{out}{err}");

    // Restoring the newest point into a fresh server gives every document the writer wrote.
    let target_dir = tempfile::tempdir().unwrap();
    let (mut target, target_uri) = own_server(target_dir.path());
    let config = cluster.agents[second].daemon.config.display().to_string();
    let (code, out, err) = cli(&["--config", &config, "restore", "latest", "--to", &target_uri]);
    assert_eq!(code, 0, "{out}{err}");
    let restored = mongodb::Client::with_uri_str(&target_uri).await.unwrap();
    let ids: Vec<i64> = restored
        .database(&db)
        .collection::<bson::Document>("w")
        .distinct("_id", doc! {})
        .await
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, written, "every write restored once");
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), (0..written).collect::<BTreeSet<_>>());
    eprintln!(
        "archiver m1 {how}: m2 took the lease and archived {:.1}s later, its first chunk after {:.1}s; {} chunks, \
         {written} writes restored",
        took_over.as_secs_f64(),
        first_chunk.as_secs_f64(),
        chain.chunks.len()
    );
    let _ = target.kill();
    let _ = server.kill();
}
