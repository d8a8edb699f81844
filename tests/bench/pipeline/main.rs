//! `make bench`: every stage of backup and restore measured against the limit of this machine and against stock
//! mongodump/mongorestore (the peer table, first), in one run,
//! interleaved, median of several rounds; prints a markdown table and writes it as JSON to `target/bench/`.
//!
//! Needs the services of `tests/harness/with-services.sh` and the release binary; `tests/bench/run.sh` provides
//! both. Settings (environment): `MBA_BENCH_MIB` data set size (1024), `MBA_BENCH_ROUNDS` (3), `MBA_BENCH_SEED`
//! (1), `MBA_BENCH_CASES` (comma-separated case names to run; all by default), `MBA_BENCH_AGENT` (the binary).
//! `MBA_TEST_MONGODB_PID` (set by the harness when it started the server) adds the server's CPU seconds;
//! `MBA_MONGO_TOOLS_DIR` (set by the harness) holds the stock mongodump and mongorestore the peer cases run.

mod cpu;
mod dataset;
mod limits;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mongo_backup_agent::compress::{Compression, CompressionSettings};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::store;

use report::{Case, ChildRun, Sample};

/// Where one run keeps its files (store directories, configs, the archives under test).
struct Work {
    dir: PathBuf,
    agent: PathBuf,
    uri: String,
    endpoint: String,
    plain: PathBuf,
    zstd: PathBuf,
    /// Stock mongodump's `--gzip` archive of the data set, for the mongorestore peer cases.
    dump_gzip: PathBuf,
    /// The stock mongo-tools (`MBA_MONGO_TOOLS_DIR`, set by the harness).
    mongo_tools: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo test --all-targets` also runs bench targets, without `--bench`: do nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("pipeline bench: run it with `make bench`");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let mib: u64 = env_or("MBA_BENCH_MIB", 1024);
    let rounds: usize = env_or("MBA_BENCH_ROUNDS", 3);
    let seed: u64 = env_or("MBA_BENCH_SEED", 1);
    let only: Vec<String> = std::env::var("MBA_BENCH_CASES")
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = root.join("target/bench");
    let dir = out_dir.join(format!("work-{mib}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the work directory");
    let work = Work {
        agent: std::env::var_os("MBA_BENCH_AGENT")
            .map_or_else(|| root.join("target/release/mongo-backup-agent"), PathBuf::from),
        uri: std::env::var("MBA_TEST_MONGODB_URI").expect("MBA_TEST_MONGODB_URI (run through tests/bench/run.sh)"),
        endpoint: std::env::var("MBA_TEST_AZURITE_BLOB_ENDPOINT").expect("MBA_TEST_AZURITE_BLOB_ENDPOINT"),
        plain: dir.join("plain.archive"),
        zstd: dir.join("archive.zst"),
        dump_gzip: dir.join("mongodump.archive.gz"),
        mongo_tools: std::env::var_os("MBA_MONGO_TOOLS_DIR").map(PathBuf::from).expect("MBA_MONGO_TOOLS_DIR"),
        dir,
    };
    let client = mongodb::Client::with_uri_str(&work.uri).await.expect("connect");
    let dataset = dataset::ensure(&client, mib, seed).await;
    limits::container(&work.endpoint, "bench").create(None).await.ok();
    let defaults = Config::default();

    // The archive under test, plain and zstd, exactly as the agent writes it (untimed).
    agent(&work, &["backup", "--config", &config(&work, "fs", Compression::None)]);
    let fs_none = config(&work, "fs", Compression::None);
    agent(&work, &["export", "latest", "--config", &fs_none, "--compression", "none", "--out", path(&work.plain)]);
    agent(&work, &["export", "latest", "--config", &fs_none, "--compression", "zstd", "--out", path(&work.zstd)]);
    clear_store(&work, "fs", Compression::None).await;
    let plain_bytes = std::fs::metadata(&work.plain).expect("plain archive").len();
    let zstd_bytes = std::fs::metadata(&work.zstd).expect("zstd archive").len();

    let filter = NamespaceFilter::new(&includes(), &[]).expect("filter");
    let threads = defaults.backup.compression_settings().threads;
    let threads =
        if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get() as u32) } else { threads };
    let level = (defaults.backup.zstd_level, defaults.backup.gzip_level);
    let mut cases = report::cases(threads, level);
    if !only.is_empty() {
        cases.retain(|c| only.iter().any(|o| o == c.name));
    }
    if cases.iter().any(|c| c.name.starts_with("mongorestore-")) {
        // What the mongorestore cases restore: mongodump's own gzip archive of the same data (untimed).
        timed(&mut peer(&work, "mongodump", &["--gzip", &format!("--archive={}", path(&work.dump_gzip))]), &work.dir);
    }
    limits::raw_read(&client, &filter, defaults.backup.parallel_collections, defaults.backup.batch_size).await;

    let server_pid = std::env::var("MBA_TEST_MONGODB_PID").ok();
    let mut samples = Vec::new();
    for round in 0..rounds {
        let mut order = cases.clone();
        let len = order.len().max(1);
        order.rotate_left(round % len);
        for case in &order {
            let meter = cpu::Meter::start(server_pid.as_deref());
            let mut sample = measure(&work, &client, &filter, case, plain_bytes).await;
            sample.account_cpu(meter.stop());
            eprintln!(
                "bench: round {} {:<22} {:>7.2}s {:>8.1} MiB/s{}{}{}",
                round + 1,
                case.name,
                sample.secs,
                sample.bytes as f64 / (1 << 20) as f64 / sample.secs,
                sample.rss_mib.map(|r| format!(" peak RSS {r:.0} MiB")).unwrap_or_default(),
                sample.cpu_secs.map(|c| format!(" CPU {c:.2}s")).unwrap_or_default(),
                sample.server_cpu_secs.map(|c| format!(" server CPU {c:.2}s")).unwrap_or_default()
            );
            samples.push(sample);
        }
    }
    let result = report::Report::new(mib, rounds, dataset, plain_bytes, zstd_bytes, &cases, samples);
    let table = format!("{}\n{}", result.peers(), result.markdown());
    println!("{table}");
    std::fs::create_dir_all(&out_dir).expect("create target/bench");
    let json_path = out_dir.join(format!("bench-{mib}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&result.json()).expect("json")).expect("write json");
    std::fs::write(out_dir.join(format!("bench-{mib}.md")), &table).expect("write table");
    if let Some(across) = report::rss_across_sizes(&out_dir) {
        println!("{across}");
    }
    eprintln!("bench: wrote {}", json_path.display());
    let _ = std::fs::remove_dir_all(&work.dir);
}

async fn measure(
    work: &Work,
    client: &mongodb::Client,
    filter: &NamespaceFilter,
    case: &Case,
    plain_bytes: u64,
) -> Sample {
    let defaults = Config::default();
    let started = Instant::now();
    let (bytes, child) = match case.name {
        "raw-read" => (
            limits::raw_read(client, filter, defaults.backup.parallel_collections, defaults.backup.batch_size).await,
            None,
        ),
        "catalog" => {
            limits::catalog(client, filter, defaults.backup.parallel_collections).await;
            (plain_bytes, None)
        }
        "read-zstd-cli" => {
            let out = work.dir.join("read.zst");
            let args = case.command.as_ref().expect("CLI cases have a command");
            let rss_file = work.dir.join("time.rss");
            let command = under_time(Command::new(&args[0]).args(&args[1..]).arg("-o").arg(&out), &rss_file);
            let own = cpu::process_secs("self");
            let (parallel, batch_size) = (defaults.backup.parallel_collections, defaults.backup.batch_size);
            let bytes = limits::read_into_command(client, filter, parallel, batch_size, command.into()).await;
            // Durable like an archive the filesystem store commits.
            std::fs::File::open(&out).and_then(|f| f.sync_all()).expect("fsync the compressed output");
            let elapsed = started.elapsed().as_secs_f64();
            let mut run = time_output(&rss_file);
            // The reading is ours (this process), the compressing the CLI's.
            run.cpu_secs += cpu::process_secs("self").zip(own).map_or(0.0, |(now, before)| now - before);
            std::fs::remove_file(&out).expect("remove the compressed output");
            return Sample::new(case.name, elapsed, bytes, Some(run));
        }
        name if name.starts_with("backup-") => {
            let (store, compression) = case.backup.expect("backup cases name their store and compression");
            let config = config(work, store, compression);
            let run = agent(work, &["backup", "--config", &config]);
            let elapsed = started.elapsed().as_secs_f64();
            clear_store(work, store, compression).await;
            return Sample::new(case.name, elapsed, plain_bytes, Some(run));
        }
        "zstd-cli" | "gzip-cli" | "pigz-cli" => {
            let run = cli(case.command.as_ref().expect("CLI cases have a command"), &work.plain);
            (plain_bytes, Some(run))
        }
        "our-zstd" | "our-gzip" => {
            let mut settings: CompressionSettings = defaults.backup.compression_settings();
            settings.compression = if case.name == "our-zstd" { Compression::Zstd } else { Compression::Gzip };
            (limits::our_compressor(&work.plain, &settings).await, None)
        }
        "stage-block" => {
            let container = limits::container(&work.endpoint, "bench");
            let block = defaults.storage.block_size_kib as usize * 1024;
            let in_flight = (defaults.storage.upload_buffer_mib as usize * 1024
                / defaults.storage.block_size_kib as usize)
                .clamp(1, defaults.storage.upload_concurrency);
            let bytes = limits::stage_block_loop(&container, "bare/archive.zst", &work.zstd, block, in_flight).await;
            let elapsed = started.elapsed().as_secs_f64();
            container.blob_client("bare/archive.zst").delete(None).await.expect("delete the bare upload");
            return Sample::new(case.name, elapsed, bytes, None);
        }
        "our-azure-put" => {
            let store = store::open(&azure_config(work, Compression::Zstd).storage).expect("open the Azure store");
            let file = tokio::fs::File::open(&work.zstd).await.expect("open the zstd archive");
            let put = store.put_stream("ours/archive.zst", Box::pin(file), &Default::default()).await.expect("put");
            let elapsed = started.elapsed().as_secs_f64();
            store.delete("ours/archive.zst").await.expect("delete our upload");
            return Sample::new(case.name, elapsed, put.bytes, None);
        }
        "restore" => {
            let run = agent(work, &restore_args(work, &work.plain));
            let elapsed = started.elapsed().as_secs_f64();
            drop_databases(client, "restored_").await;
            return Sample::new(case.name, elapsed, plain_bytes, Some(run));
        }
        "restore-zstd" => {
            let run = agent(work, &restore_args(work, &work.zstd));
            let elapsed = started.elapsed().as_secs_f64();
            drop_databases(client, "restored_").await;
            return Sample::new(case.name, elapsed, plain_bytes, Some(run));
        }
        "mongodump-gzip" | "mongodump-null" | "mongodump-zstd" => {
            let out = work.dir.join("mongodump.out");
            let run = match case.name {
                "mongodump-gzip" => {
                    timed(&mut peer(work, "mongodump", &["--gzip", &format!("--archive={}", path(&out))]), &work.dir)
                }
                "mongodump-null" => timed(&mut peer(work, "mongodump", &["--archive=/dev/null"]), &work.dir),
                // One shell pipeline: /usr/bin/time sums the CPU of both and reports the larger peak RSS.
                _ => {
                    let dump = peer(work, "mongodump", &["--archive"]);
                    let line = format!(
                        "{} {} | zstd -q -3 -T2 -o {}",
                        dump.get_program().to_string_lossy(),
                        dump.get_args().map(|a| format!("'{}'", a.to_string_lossy())).collect::<Vec<_>>().join(" "),
                        path(&out)
                    );
                    timed(Command::new("bash").args(["-o", "pipefail", "-c"]).arg(line), &work.dir)
                }
            };
            if out.exists() {
                // Durable like an archive our filesystem store commits.
                std::fs::File::open(&out).and_then(|f| f.sync_all()).expect("fsync mongodump's output");
            }
            let elapsed = started.elapsed().as_secs_f64();
            let _ = std::fs::remove_file(&out);
            return Sample::new(case.name, elapsed, plain_bytes, Some(run));
        }
        name if name.starts_with("mongorestore-gzip") => {
            let workers = name.strip_prefix("mongorestore-gzip-w").unwrap_or("1");
            let args = [
                "--gzip".to_string(),
                format!("--archive={}", path(&work.dump_gzip)),
                format!("--numInsertionWorkersPerCollection={workers}"),
                "--nsFrom=bench_$d$.$c$".to_string(),
                "--nsTo=restored_$d$.$c$".to_string(),
            ];
            let run =
                timed(&mut peer(work, "mongorestore", &args.iter().map(String::as_str).collect::<Vec<_>>()), &work.dir);
            let elapsed = started.elapsed().as_secs_f64();
            drop_databases(client, "restored_").await;
            return Sample::new(case.name, elapsed, plain_bytes, Some(run));
        }
        "bare-load" => {
            let restore = &defaults.restore;
            let bytes =
                limits::bare_load(client, &work.plain, "loaded_", restore.parallel_inserts, restore.batch_size).await;
            let elapsed = started.elapsed().as_secs_f64();
            drop_databases(client, "loaded_").await;
            return Sample::new(case.name, elapsed, bytes, None);
        }
        other => panic!("unknown case {other}"),
    };
    Sample::new(case.name, started.elapsed().as_secs_f64(), bytes, child)
}

/// Our restore of `archive` into `restored_*` databases, as the mongorestore peer cases restore theirs.
fn restore_args<'a>(work: &'a Work, archive: &'a Path) -> [&'a str; 9] {
    [
        "restore",
        "--archive",
        path(archive),
        "--to",
        &work.uri,
        "--nsFrom",
        "bench_$d$.$c$",
        "--nsTo",
        "restored_$d$.$c$",
    ]
}

/// A stock mongo-tools command against the bench server with `args`.
fn peer(work: &Work, tool: &str, args: &[&str]) -> Command {
    let mut command = Command::new(work.mongo_tools.join(tool));
    command.arg(format!("--uri={}", work.uri)).arg("--quiet").args(args);
    command
}

fn includes() -> Vec<String> {
    dataset::DATABASES.iter().map(|db| format!("{db}.*")).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 work path")
}

/// A public key for the encrypted backup case: backing up needs no private key.
const BENCH_RECIPIENT: &str = "age1mj5tdecfufwlklcycndk95nlc42semcvf2j29lenascksqv2jvgqqrq8cs";

/// Writes the config of a backup to `store` ("fs", "azure", "fs-oplog": fs with the oplog window on, or "fs-age":
/// fs encrypted to [`BENCH_RECIPIENT`]) with `compression`; returns its path.
fn config(work: &Work, store: &str, compression: Compression) -> String {
    let file = work.dir.join(format!("{store}-{compression}.toml"));
    // The data path alone, except for the cases that measure what the oplog window or encryption add to it.
    let oplog = if store == "fs-oplog" { "auto" } else { "off" };
    let encryption =
        if store == "fs-age" { format!("[encryption]\nrecipients = [{BENCH_RECIPIENT:?}]\n") } else { String::new() };
    let storage = match store.trim_end_matches("-oplog").trim_end_matches("-age") {
        "fs" => format!("path = {:?}\nprefix = \"{store}-{compression}\"\n", path(&work.dir.join("store"))),
        _ => {
            let secret = work.dir.join("connection-string");
            let connection = format!(
                "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
                limits::DEV_ACCOUNT,
                limits::DEV_KEY,
                work.endpoint
            );
            std::fs::write(&secret, connection).expect("write the connection string");
            format!(
                "kind = \"azure\"\nendpoint = {:?}\ncontainer = \"bench\"\nauth = \"connection-string\"\n\
                 connection_string_file = {:?}\nprefix = \"az-{compression}\"\n",
                work.endpoint,
                path(&secret)
            )
        }
    };
    let text = format!(
        "[mongodb]\nuri = {:?}\n[storage]\n{storage}[backup]\ncompression = \"{compression}\"\ninclude = {:?}\n\
         oplog = {oplog:?}\n{encryption}",
        work.uri,
        includes()
    );
    std::fs::write(&file, text).expect("write a config");
    path(&file).to_string()
}

fn azure_config(work: &Work, compression: Compression) -> Config {
    Config::load(Path::new(&config(work, "azure", compression))).expect("bench config parses")
}

/// Deletes every object the backup case left in its store, so runs do not fill the disk.
async fn clear_store(work: &Work, store: &str, compression: Compression) {
    let config = Config::load(Path::new(&config(work, store, compression))).expect("bench config parses");
    let store = store::open(&config.storage).expect("open the store");
    for object in store.list(&config.storage.prefix).await.expect("list the store") {
        store.delete(&object.key).await.expect("delete a bench object");
    }
}

async fn drop_databases(client: &mongodb::Client, prefix: &str) {
    for db in client.list_database_names().await.expect("list databases") {
        if db.starts_with(prefix) {
            client.database(&db).drop().await.expect("drop a bench database");
        }
    }
}

/// Runs the agent binary under `/usr/bin/time`; returns its peak RSS and CPU time. Panics with its stderr on
/// failure, and if it left anything in its own empty `TMPDIR` (the "no temp files" target).
fn agent(work: &Work, args: &[&str]) -> ChildRun {
    let tmp = work.dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("create the agent's TMPDIR");
    let run = timed(Command::new(&work.agent).args(args).env("TMPDIR", &tmp), &work.dir);
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("read TMPDIR").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    assert!(left.is_empty(), "`mongo-backup-agent {}` left temporary files: {left:?}", args.join(" "));
    run
}

/// Runs a compressor command line on `input`, output discarded; returns its peak RSS and CPU time.
fn cli(command: &[String], input: &Path) -> ChildRun {
    let dir = input.parent().expect("work dir");
    timed(Command::new(&command[0]).args(&command[1..]).arg(input), dir)
}

fn timed(command: &mut Command, dir: &Path) -> ChildRun {
    let rss_file = dir.join("time.rss");
    let output = under_time(command, &rss_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run /usr/bin/time");
    assert!(output.status.success(), "{:?} failed: {}", command, String::from_utf8_lossy(&output.stderr));
    time_output(&rss_file)
}

/// `command` run under `/usr/bin/time`, which writes its peak RSS and CPU times to `rss_file`.
fn under_time(command: &Command, rss_file: &Path) -> Command {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M %U %S").arg("-o").arg(rss_file).arg(command.get_program()).args(command.get_args());
    timed.envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
    timed
}

/// What [`under_time`] recorded.
fn time_output(rss_file: &Path) -> ChildRun {
    let text = std::fs::read_to_string(rss_file).expect("time output");
    let [kib, user, system]: [f64; 3] = text
        .split_whitespace()
        .map(|v| v.parse().expect("a number from /usr/bin/time"))
        .collect::<Vec<_>>()
        .try_into()
        .expect("peak RSS, user and system time");
    ChildRun { rss_mib: kib / 1024.0, cpu_secs: user + system }
}
