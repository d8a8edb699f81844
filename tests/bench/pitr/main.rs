//! `make bench` (second part): point-in-time archiving against Azurite, measured end to end with the real daemon.
//!
//! * RPO: writers insert at a fixed rate (1,000 and 10,000 writes/s) while `serve` archives; the bench lists the
//!   container every 50 ms and notes when each chunk appears. A write's RPO is the time from its commit to the
//!   appearance of the chunk holding it (read back from the container), so it includes the poll, the seal and
//!   the upload: median and p99 per rate, against the target `chunk_span` + 2 s.
//! * Tailing: the daemon's CPU while it archives 1,000 writes/s (% of one core); and its catch-up speed: stopped
//!   while the writers run flat out, restarted, the entries/s it archives the backlog at, against the write rate
//!   the server sustains.
//! * Replay: `restore --time` over the archived writes (one oplog entry each), entries/s, against a bare loader
//!   applying the same writes one by one with `insert_one`.
//!
//! Settings: `MBA_BENCH_PITR_SECS` seconds of writes per rate (30), `MBA_BENCH_PITR_SPAN` chunk span in seconds (10).
//! Output: a markdown table on stdout and in `target/bench/pitr.md`.

#[path = "../../azure_support/mod.rs"]
mod azure_support;
#[path = "../pipeline/cpu.rs"]
#[allow(dead_code)] // Only `process_secs` is needed here; the pipeline bench uses the rest.
mod cpu;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::oplog::archiver::{self, ArchiveSettings, ArchiveStatus, Resume};
use mongo_backup_agent::oplog::chain::{Chain, read_chunk};
use mongo_backup_agent::store::{self, ObjectStore};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo test --all-targets` also runs bench targets, without `--bench`: do nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("pitr bench: run it with `make bench`");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

/// The daemon under test and its files.
struct Agent {
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args)
            .output()
            .expect("run the agent");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (out.status.success(), text(out.stdout), text(out.stderr))
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("daemon.log")).expect("daemon log");
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (ok, out, _) = self.cli(&["status", "--json"]);
            if ok && out.contains("\"archiving\":true") {
                return;
            }
            assert!(Instant::now() < deadline, "archiving did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// When each chunk first appeared in the store, polled every 50 ms until `stop`.
async fn watch_chunks(store: Arc<dyn ObjectStore>, stop: Arc<Mutex<bool>>) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    while !*stop.lock().unwrap() {
        if let Ok(objects) = store.list("t/oplog/").await {
            for o in objects {
                seen.entry(o.key).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Inserts `rate` documents per second for `secs` in batches every 10 ms; returns each document's commit time by id.
async fn write_at(client: &mongodb::Client, db: &str, rate: u64, secs: u64, first_id: i64) -> Vec<(i64, Instant)> {
    let coll = client.database(db).collection::<Document>("w");
    let per_batch = (rate / 100).max(1) as i64;
    let start = Instant::now();
    let mut commits = Vec::new();
    let mut id = first_id;
    for tick in 0..secs * 100 {
        let due = start + Duration::from_millis(tick * 10);
        tokio::time::sleep_until(due.into()).await;
        let docs: Vec<Document> = (id..id + per_batch).map(|i| doc! {"_id": i, "v": "x".repeat(50)}).collect();
        coll.insert_many(docs).await.expect("insert");
        let now = Instant::now();
        commits.extend((id..id + per_batch).map(|i| (i, now)));
        id += per_batch;
    }
    commits
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run() {
    let secs: u64 = env_or("MBA_BENCH_PITR_SECS", 30);
    let span: u64 = env_or("MBA_BENCH_PITR_SPAN", 10);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let uri = std::env::var("MBA_TEST_MONGODB_URI").expect("MBA_TEST_MONGODB_URI (run through tests/bench/run.sh)");
    let endpoint = azure_support::shared_endpoint();
    let container = azure_support::unique_container("pitrbench");
    azure_support::create_container(&endpoint, &container).await;
    let dir = root.join("target/bench/work-pitr");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    let secret = dir.join("connection-string");
    std::fs::write(&secret, azure_support::connection_string(&endpoint)).expect("secret");
    let db = format!("pitrbench_{:06x}", rand::random::<u32>() & 0xff_ffff);
    let config = format!(
        "[mongodb]\nuri = {uri:?}\n[storage]\nkind = \"azure\"\nendpoint = {endpoint:?}\ncontainer = {container:?}\n\
         auth = \"connection-string\"\nconnection_string_file = {:?}\nprefix = \"t\"\n[daemon]\nsocket = {:?}\n\
         [backup]\ninclude = [\"{db}.*\"]\n[pitr]\nenabled = true\nchunk_span = \"{span}s\"\n",
        secret.display().to_string(),
        dir.join("control.sock").display().to_string()
    );
    std::fs::write(dir.join("config.toml"), &config).expect("config");
    let parsed = mongo_backup_agent::config::Config::parse(&config).expect("bench config");
    let store: Arc<dyn ObjectStore> = store::open(&parsed.storage).expect("store");
    let client = mongodb::Client::with_uri_str(&uri).await.expect("connect");
    client.database(&db).collection::<Document>("w").insert_one(doc! {"_id": -1}).await.expect("seed");
    let bin = std::env::var_os("MBA_BENCH_AGENT")
        .map_or_else(|| root.join("target/release/mongo-backup-agent"), PathBuf::from);
    let mut agent = Agent { bin, dir: dir.clone(), child: None };
    agent.start();

    let mut rows = Vec::new();
    let mut next_id = 0i64;
    for rate in [1_000u64, 10_000] {
        let stop = Arc::new(Mutex::new(false));
        let watcher = tokio::spawn(watch_chunks(store.clone(), stop.clone()));
        let cpu_before = cpu::process_secs(&agent.pid());
        let started = Instant::now();
        let commits = write_at(&client, &db, rate, secs, next_id).await;
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_before.zip(cpu::process_secs(&agent.pid())).map(|(a, b)| (b - a) / wall * 100.0);
        next_id += commits.len() as i64;
        // Everything written must appear: wait for the span to pass and a chunk to hold the last write.
        tokio::time::sleep(Duration::from_secs(span + 3)).await;
        *stop.lock().unwrap() = true;
        let seen = watcher.await.expect("watcher");
        let durable = chunk_times(store.as_ref(), &seen).await;
        let mut rpo: Vec<f64> = commits
            .iter()
            .filter_map(|(id, commit)| durable.get(id).map(|d| d.saturating_duration_since(*commit).as_secs_f64()))
            .collect();
        let missing = commits.len() - rpo.len();
        rpo.sort_by(f64::total_cmp);
        let peak = peak_rss_mib(&agent.pid());
        rows.push(format!(
            "| RPO at {rate} writes/s ({} written in {wall:.0} s{}) | median {:.2} s, p99 {:.2} s, max {:.2} s | ≤ {} s | daemon CPU {} of a core, peak RSS {peak} MiB |",
            commits.len(),
            if missing > 0 { format!(", {missing} not yet archived") } else { String::new() },
            percentile(&rpo, 0.5),
            percentile(&rpo, 0.99),
            rpo.last().copied().unwrap_or(0.0),
            span + 2,
            cpu.map_or("?".into(), |c| format!("{c:.1} %"))
        ));
    }

    // Catch-up: the server's sustained write rate flat out, with the daemon stopped; then how fast the archiver,
    // started in this process from the end of the stored chain, reads that backlog, seals it and stores it. The
    // backlog stays under half the server's oplog (SecantusDB keeps 100,000 entries), or it would be a gap.
    agent.kill();
    let coll = client.database(&db).collection::<Document>("w");
    let flat_out = Instant::now();
    let mut written = 0i64;
    while flat_out.elapsed() < Duration::from_secs(10) && written < 50_000 {
        let docs: Vec<Document> = (next_id..next_id + 1000).map(|i| doc! {"_id": i, "v": "x".repeat(50)}).collect();
        coll.insert_many(docs).await.expect("insert");
        next_id += 1000;
        written += 1000;
    }
    let server_rate = written as f64 / flat_out.elapsed().as_secs_f64();
    let catch_up = written as f64 / archive_backlog(&client, store.as_ref(), &parsed).await;
    rows.push(format!(
        "| tailing catch-up ({written} entries behind) | {catch_up:.0} entries/s | ≥ 3 × {server_rate:.0} writes/s (the server's flat-out rate) | {:.1} × |",
        catch_up / server_rate
    ));

    // Replay: restore to the newest archived moment (every write above, one entry each) vs a bare loader.
    let target = format!("{db}_r");
    let entries = next_id as f64;
    let replay = Instant::now();
    let (ok, _, err) =
        agent.cli(&["restore", "latest", "--nsFrom", &format!("{db}.*"), "--nsTo", &format!("{target}.*")]);
    assert!(ok, "restore latest failed: {err}");
    let replay_rate = entries / replay.elapsed().as_secs_f64();
    let restored =
        client.database(&target).collection::<Document>("w").estimated_document_count().await.expect("count");
    assert!(restored as i64 >= next_id, "restore holds {restored} of {next_id} documents");
    let loader_db = client.database(&format!("{db}_l")).collection::<Document>("w");
    let loader = Instant::now();
    for id in 0..next_id {
        loader_db.insert_one(doc! {"_id": id, "v": "x".repeat(50)}).await.expect("insert");
    }
    let loader_rate = entries / loader.elapsed().as_secs_f64();
    rows.push(format!(
        "| replay (`restore latest`, {next_id} entries) | {replay_rate:.0} entries/s | ≥ 20,000/s and ≥ 0.8 × loader ({loader_rate:.0}/s) | {:.2} × loader |",
        replay_rate / loader_rate
    ));
    agent.kill();
    let _ = client.database(&db).drop().await;
    let _ = client.database(&target).drop().await;
    let _ = client.database(&format!("{db}_l")).drop().await;

    let table = format!(
        "| case | measured | target | note |\n|---|---|---|---|\n{}\n\nchunk_span {span} s, {secs} s of writes per rate, \
         Azurite, SecantusDB, {}\n",
        rows.join("\n"),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    print!("{table}");
    std::fs::write(root.join("target/bench/pitr.md"), table).expect("write pitr.md");
}

/// Seconds the archiver takes from a standing start (resuming after the stored chain) to a sealed chunk holding
/// everything written so far.
async fn archive_backlog(client: &mongodb::Client, store: &dyn ObjectStore, config: &Config) -> f64 {
    let resume = Chain::load(store, "t").await.expect("chain").chunks.iter().map(|c| c.to).max().expect("a chunk");
    let settings = ArchiveSettings {
        prefix: "t".into(),
        compression: config.backup.compression_settings(),
        filter: NamespaceFilter::new(&config.backup.include, &[]).expect("filter"),
        span: Duration::from_secs(3600),
        max_bytes: config.pitr.chunk_max_bytes as usize,
        poll: Duration::from_secs(3600),
        recipients: None,
        fence: None,
    };
    let (status, cancel) = (Mutex::new(ArchiveStatus::default()), CancellationToken::new());
    let (seals, mut requests) = mpsc::channel(1);
    let (reply, answer) = oneshot::channel();
    seals.send(reply).await.expect("seal request");
    let started = Instant::now();
    let archiving = archiver::run(
        client,
        store,
        &settings,
        Resume { from: resume, inclusive: false },
        &status,
        &mut requests,
        &cancel,
    );
    let sealed = tokio::select! {
        stop = archiving => panic!("the archiver stopped: {stop}"),
        sealed = answer => sealed.expect("reply").expect("sealed"),
    };
    let took = started.elapsed().as_secs_f64();
    assert!(sealed > resume, "nothing archived");
    took
}

/// The daemon's peak resident memory so far (VmHWM), in MiB: bounded by the chunk size, whatever the write rate.
fn peak_rss_mib(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    kib.map_or("?".into(), |k| format!("{}", k / 1024))
}

/// For each document id in the chunks `seen`, when its chunk appeared.
async fn chunk_times(store: &dyn ObjectStore, seen: &HashMap<String, Instant>) -> HashMap<i64, Instant> {
    let chain = Chain::load(store, "t").await.expect("chain");
    let mut durable = HashMap::new();
    for chunk in &chain.chunks {
        let Some(at) = seen.get(&chunk.key) else { continue };
        for entry in read_chunk(store, chunk, None).await.expect("chunk") {
            if let Some(id) = entry.get_document("o").ok().and_then(|o| o.get_i64("_id").ok()) {
                durable.entry(id).or_insert(*at);
            }
        }
    }
    durable
}
