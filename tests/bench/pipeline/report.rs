//! The cases, how each is judged against its limit, and the markdown table and JSON written from the samples.

use std::path::Path;

use mongo_backup_agent::compress::Compression;
use serde_json::{Value, json};

use crate::dataset::Dataset;

const MIB: f64 = (1 << 20) as f64;

/// How a case is compared with its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Judge {
    /// A limit itself.
    Limit,
    /// Time over the limit's time must be at most this.
    TimeAtMost(&'static str, f64),
    /// Throughput over the limit's throughput must be at least this (0 = reported, no target).
    SpeedAtLeast(&'static str, f64),
}

/// One thing measured.
#[derive(Debug, Clone)]
pub struct Case {
    /// Name in the table, the JSON and `MBA_BENCH_CASES`.
    pub name: &'static str,
    /// For backups: the store ("fs" or "azure") and compression.
    pub backup: Option<(&'static str, Compression)>,
    /// For compressor command lines: the program and its flags (the input file is appended).
    pub command: Option<Vec<String>>,
    judge: Judge,
    /// What the row means, for the table.
    what: String,
}

/// Every case, at the agent's default zstd/gzip `levels` and zstd `threads`.
pub fn cases(threads: u32, (zstd_level, gzip_level): (i32, u32)) -> Vec<Case> {
    let plain = |name, judge, what: String| Case { name, backup: None, command: None, judge, what };
    let backup = |name, store, compression, what: &str| Case {
        name,
        backup: Some((store, compression)),
        command: None,
        judge: Judge::TimeAtMost(
            "raw-read",
            if store == "fs" && compression == Compression::Zstd { 1.15 } else { 0.0 },
        ),
        what: what.to_string(),
    };
    let command =
        |name, args: Vec<String>, judge, what: String| Case { name, backup: None, command: Some(args), judge, what };
    vec![
        plain("raw-read", Judge::Limit, "driver reads every collection as raw BSON, discards it".into()),
        plain(
            "catalog",
            Judge::Limit,
            "listing and sizing the collections (`collStats`), the first step of raw-read and of a backup".into(),
        ),
        command(
            "read-zstd-cli",
            vec!["zstd".into(), "-q".into(), format!("-{zstd_level}"), format!("-T{threads}")],
            Judge::Limit,
            format!("raw-read piped into `zstd -{zstd_level} -T{threads}`, output fsynced: reading plus compressing"),
        ),
        backup("backup-fs-zstd", "fs", Compression::Zstd, "backup to a directory, zstd (default)"),
        Case {
            judge: Judge::TimeAtMost("backup-fs-zstd", 1.05),
            ..backup(
                "backup-fs-zstd-oplog",
                "fs-oplog",
                Compression::Zstd,
                "backup-fs-zstd with the oplog window on (start, end, rollover check, slice)",
            )
        },
        Case {
            judge: Judge::TimeAtMost("backup-fs-zstd", 1.05),
            ..backup(
                "backup-fs-zstd-age",
                "fs-age",
                Compression::Zstd,
                "backup-fs-zstd encrypted to an age recipient ([encryption], same data)",
            )
        },
        backup("backup-fs-gzip", "fs", Compression::Gzip, "backup to a directory, gzip"),
        backup("backup-fs-none", "fs", Compression::None, "backup to a directory, uncompressed"),
        backup("backup-azure-zstd", "azure", Compression::Zstd, "backup to Azurite, zstd"),
        backup("backup-azure-gzip", "azure", Compression::Gzip, "backup to Azurite, gzip"),
        backup("backup-azure-none", "azure", Compression::None, "backup to Azurite, uncompressed"),
        command(
            "zstd-cli",
            vec!["zstd".into(), "-q".into(), "-c".into(), format!("-{zstd_level}"), format!("-T{threads}")],
            Judge::Limit,
            format!("`zstd -{zstd_level} -T{threads}` on the plain archive"),
        ),
        plain(
            "our-zstd",
            Judge::SpeedAtLeast("zstd-cli", 0.9),
            format!("our zstd stage alone, level {zstd_level}, {threads} threads"),
        ),
        command(
            "pigz-cli",
            vec!["pigz".into(), "-c".into(), "-p".into(), "1".into(), format!("-{gzip_level}")],
            Judge::Limit,
            format!("`pigz -{gzip_level} -p 1` (our gzip is one stream on one thread)"),
        ),
        command(
            "gzip-cli",
            vec!["gzip".into(), "-c".into(), format!("-{gzip_level}")],
            Judge::SpeedAtLeast("pigz-cli", 0.0),
            format!("`gzip -{gzip_level}`"),
        ),
        plain("our-gzip", Judge::SpeedAtLeast("pigz-cli", 0.0), format!("our gzip stage alone, level {gzip_level}")),
        plain(
            "stage-block",
            Judge::Limit,
            "bare `stage_block` loop, the zstd archive, same block size and in flight".into(),
        ),
        plain(
            "our-azure-put",
            Judge::SpeedAtLeast("stage-block", 0.0),
            "our Azure store uploading the zstd archive".into(),
        ),
        plain("bare-load", Judge::Limit, "bare unordered `insert_many` loader, same batches and parallelism".into()),
        plain("restore", Judge::SpeedAtLeast("bare-load", 0.8), "restore of the plain archive (new databases)".into()),
        plain("restore-zstd", Judge::SpeedAtLeast("bare-load", 0.0), "restore of the stored zstd archive".into()),
        peer("mongodump-gzip", "`mongodump --archive=FILE --gzip`"),
        peer("mongodump-zstd", &format!("`mongodump --archive | zstd -{zstd_level} -T{threads}` into a file")),
        peer("mongodump-null", "`mongodump --archive=/dev/null`: the source limit as mongodump sees it"),
        peer("mongorestore-gzip", "`mongorestore --gzip --archive` of mongodump's archive, its defaults"),
        peer("mongorestore-gzip-w2", "the same with `--numInsertionWorkersPerCollection 2`"),
        peer("mongorestore-gzip-w4", "the same with `--numInsertionWorkersPerCollection 4`"),
    ]
}

/// A stock mongo-tools run: what a user would otherwise run; compared in [`Report::peers`].
fn peer(name: &'static str, what: &str) -> Case {
    Case { name, backup: None, command: None, judge: Judge::Limit, what: what.to_string() }
}

/// Our case, the peer cases it is compared with (the best of them counts), and the targets of issue 15 for the
/// time and the peak RSS ratios (0 = reported, no target).
const PEERS: &[(&str, &[&str], f64, f64)] = &[
    ("backup-fs-zstd-oplog", &["mongodump-gzip"], 0.6, 0.5),
    ("backup-fs-zstd-oplog", &["mongodump-null"], 1.15, 0.5),
    ("backup-fs-zstd-oplog", &["mongodump-zstd"], 0.0, 0.0),
    ("backup-fs-zstd", &["mongodump-null"], 0.0, 0.0),
    ("backup-fs-gzip", &["mongodump-gzip"], 0.0, 0.0),
    ("restore-zstd", &["mongorestore-gzip", "mongorestore-gzip-w2", "mongorestore-gzip-w4"], 0.7, 0.5),
    ("restore-zstd", &["mongorestore-gzip"], 0.0, 0.0),
];

/// What `/usr/bin/time` says of a case run as a child process.
#[derive(Debug, Clone, Copy)]
pub struct ChildRun {
    /// Peak RSS.
    pub rss_mib: f64,
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    name: &'static str,
    /// Wall-clock seconds.
    pub secs: f64,
    /// Bytes the throughput is counted over (plain archive bytes, or compressed bytes for uploads).
    pub bytes: u64,
    /// Peak RSS of the child process, for cases run as one.
    pub rss_mib: Option<f64>,
    /// CPU seconds of the child process, or of this process for cases run in it.
    pub cpu_secs: Option<f64>,
    /// CPU seconds of the MongoDB server during the case, when its pid is known.
    pub server_cpu_secs: Option<f64>,
}

impl Sample {
    /// A sample of case `name`; `child` when it ran as a child process.
    pub fn new(name: &'static str, secs: f64, bytes: u64, child: Option<ChildRun>) -> Self {
        Sample {
            name,
            secs,
            bytes,
            rss_mib: child.map(|c| c.rss_mib),
            cpu_secs: child.map(|c| c.cpu_secs),
            server_cpu_secs: None,
        }
    }

    /// Takes what a [`crate::cpu::Meter`] saw: this process's CPU counts only for cases without a child.
    pub fn account_cpu(&mut self, (own, server): (Option<f64>, Option<f64>)) {
        self.cpu_secs = self.cpu_secs.or(own);
        self.server_cpu_secs = server;
    }
}

struct Row {
    case: Case,
    secs: Vec<f64>,
    median: f64,
    bytes: u64,
    rss_mib: Option<f64>,
    cpu_secs: Option<f64>,
    server_cpu_secs: Option<f64>,
    ratio: Option<f64>,
    holds: Option<bool>,
}

/// The result of a run.
pub struct Report {
    mib: u64,
    rounds: usize,
    dataset: Dataset,
    plain_bytes: u64,
    zstd_bytes: u64,
    rows: Vec<Row>,
}

/// The median of the values that were measured, if any were.
fn median_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let measured: Vec<f64> = values.flatten().collect();
    (!measured.is_empty()).then(|| median(&measured))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Report {
    /// Medians, ratios and verdicts from the samples.
    pub fn new(
        mib: u64,
        rounds: usize,
        dataset: Dataset,
        plain_bytes: u64,
        zstd_bytes: u64,
        cases: &[Case],
        samples: Vec<Sample>,
    ) -> Self {
        let mut rows: Vec<Row> = cases
            .iter()
            .map(|case| {
                let mine: Vec<&Sample> = samples.iter().filter(|s| s.name == case.name).collect();
                let secs: Vec<f64> = mine.iter().map(|s| s.secs).collect();
                Row {
                    case: case.clone(),
                    median: median(&secs),
                    secs,
                    bytes: mine.first().map_or(0, |s| s.bytes),
                    rss_mib: mine.iter().filter_map(|s| s.rss_mib).reduce(f64::max),
                    cpu_secs: median_of(mine.iter().map(|s| s.cpu_secs)),
                    server_cpu_secs: median_of(mine.iter().map(|s| s.server_cpu_secs)),
                    ratio: None,
                    holds: None,
                }
            })
            .collect();
        let speed = |r: &Row| r.bytes as f64 / r.median;
        let by_name: Vec<(&'static str, f64, f64)> = rows.iter().map(|r| (r.case.name, r.median, speed(r))).collect();
        for row in &mut rows {
            let base = |name: &str| by_name.iter().find(|(n, ..)| *n == name).copied();
            let (ratio, target) = match row.case.judge {
                Judge::Limit => continue,
                Judge::TimeAtMost(limit, target) => (base(limit).map(|(_, secs, _)| row.median / secs), target),
                Judge::SpeedAtLeast(limit, target) => {
                    (base(limit).map(|(.., s)| row.bytes as f64 / row.median / s), target)
                }
            };
            row.ratio = ratio;
            row.holds = match (ratio, row.case.judge) {
                (Some(r), Judge::TimeAtMost(..)) if target > 0.0 => Some(r <= target),
                (Some(r), Judge::SpeedAtLeast(..)) if target > 0.0 => Some(r >= target),
                _ => None,
            };
        }
        Report { mib, rounds, dataset, plain_bytes, zstd_bytes, rows }
    }

    /// The markdown table with the machine and data set above it.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Data set {} MiB requested: {} documents in {} collections, plain archive {:.0} MiB, zstd archive {:.0} MiB \
             (ratio {:.2}). {} rounds, interleaved; median wall time. Every agent run had an empty TMPDIR of its \
             own, checked empty afterwards (no temp files).\nMachine: {}\n\n",
            self.mib,
            self.dataset.documents,
            self.dataset.collections,
            self.plain_bytes as f64 / MIB,
            self.zstd_bytes as f64 / MIB,
            self.plain_bytes as f64 / self.zstd_bytes.max(1) as f64,
            self.rounds,
            machine().values().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
        );
        out.push_str(
            "| case | what | median s | MiB/s | peak RSS MiB | CPU s | server CPU s | compared with | ratio | target |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---|---:|---|\n");
        for row in &self.rows {
            let (against, target) = match row.case.judge {
                Judge::Limit => ("**limit**".to_string(), String::new()),
                Judge::TimeAtMost(limit, t) => {
                    (format!("time / {limit}"), if t > 0.0 { format!("≤ {t}") } else { String::new() })
                }
                Judge::SpeedAtLeast(limit, t) => {
                    (format!("speed / {limit}"), if t > 0.0 { format!("≥ {t}") } else { String::new() })
                }
            };
            let verdict = match row.holds {
                Some(true) => " ✅",
                Some(false) => " ❌",
                None => "",
            };
            let secs = |v: Option<f64>| v.map(|c| format!("{c:.2}")).unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {}{} |\n",
                row.case.name,
                row.case.what,
                row.median,
                row.bytes as f64 / MIB / row.median,
                row.rss_mib.map(|r| format!("{r:.0}")).unwrap_or_default(),
                secs(row.cpu_secs),
                secs(row.server_cpu_secs),
                against,
                row.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                target,
                verdict
            ));
        }
        out.push_str(&self.cpu_floors());
        out
    }

    /// For each case judged by time against a limit: the shortest wall time its CPU seconds (ours plus the
    /// server's) allow on this machine's cores, as a multiple of the limit's measured time. The catalog step
    /// (`catalog`) runs on the server alone before any reading starts, so it counts whole; the rest shares the
    /// cores. A ratio near its floor is the machine's limit, not a bottleneck in the agent. Compressed backups are
    /// also compared with reading plus compressing by the CLI (`read-zstd-cli`), the same work without our pipeline.
    fn cpu_floors(&self) -> String {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let row = |name: &str| self.rows.iter().find(|r| r.case.name == name);
        let (serial_secs, serial_cpu) = row("catalog")
            .map_or((0.0, 0.0), |c| (c.median, c.cpu_secs.unwrap_or(0.0) + c.server_cpu_secs.unwrap_or(0.0)));
        let mut out = String::new();
        for r in &self.rows {
            let Judge::TimeAtMost(limit, _) = r.case.judge else { continue };
            let Some(base) = row(limit) else { continue };
            let (Some(ours), Some(server)) = (r.cpu_secs, r.server_cpu_secs) else { continue };
            let shared = (ours + server - serial_cpu).max(0.0);
            let floor = serial_secs + shared / cores;
            out.push_str(&format!(
                "\n{}: the catalog step ({serial_secs:.2} s, the server alone) plus {shared:.2} CPU s of reading and \
                 writing (agent {ours:.2} + server {server:.2}, less the catalog's {serial_cpu:.2}) on {cores} cores \
                 cannot finish in less than {floor:.2} s = {:.2} × {limit} (measured {:.2} ×).",
                r.case.name,
                floor / base.median,
                r.median / base.median,
            ));
            let compressed = r.case.backup.is_some_and(|(_, c)| c == Compression::Zstd);
            if let Some(read_zstd) = row("read-zstd-cli").filter(|_| compressed) {
                out.push_str(&format!(
                    " Reading and compressing alone (read-zstd-cli) took {:.2} × {limit}; this backup {:.2} × that.",
                    read_zstd.median / base.median,
                    r.median / read_zstd.median,
                ));
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// The peer table: each of our cases against what a user would run instead, same data, same run. Ratios are
    /// ours / theirs (below 1 is better); against several peer settings the fastest counts.
    pub fn peers(&self) -> String {
        let row = |name: &str| self.rows.iter().find(|r| r.case.name == name);
        let mut out = String::from(
            "| ours | theirs | wall s ours / theirs | ratio | target | CPU s ours / theirs | peak RSS MiB ours / theirs \
             | ratio | target |\n|---|---|---:|---:|---|---:|---:|---:|---|\n",
        );
        for (ours, theirs, time_target, rss_target) in PEERS {
            let Some(ours_row) = row(ours) else { continue };
            let Some(best) = theirs.iter().filter_map(|t| row(t)).min_by(|a, b| a.median.total_cmp(&b.median)) else {
                continue;
            };
            let name = if theirs.len() > 1 {
                format!("best of {}: {}", theirs.join(", "), best.case.name)
            } else {
                best.case.name.to_string()
            };
            let verdict = |ratio: Option<f64>, target: f64| match ratio {
                Some(r) if target > 0.0 => format!("≤ {target} {}", if r <= target { "✅" } else { "❌" }),
                _ => String::new(),
            };
            let pair = |a: Option<f64>, b: Option<f64>, digits: usize| {
                let show = |v: Option<f64>| v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into());
                format!("{} / {}", show(a), show(b))
            };
            let time_ratio = ours_row.median / best.median;
            let rss_ratio = ours_row.rss_mib.zip(best.rss_mib).map(|(a, b)| a / b);
            out.push_str(&format!(
                "| {ours} | {name} | {} | {time_ratio:.2} | {} | {} | {} | {} | {} |\n",
                pair(Some(ours_row.median), Some(best.median), 2),
                verdict(Some(time_ratio), *time_target),
                pair(ours_row.cpu_secs, best.cpu_secs, 2),
                pair(ours_row.rss_mib, best.rss_mib, 0),
                rss_ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                verdict(rss_ratio, *rss_target),
            ));
        }
        out
    }

    /// Everything, samples included.
    pub fn json(&self) -> Value {
        json!({
            "mib": self.mib,
            "rounds": self.rounds,
            "machine": machine(),
            "dataset": self.dataset,
            "plain_archive_bytes": self.plain_bytes,
            "zstd_archive_bytes": self.zstd_bytes,
            "cases": self.rows.iter().map(|r| json!({
                "name": r.case.name,
                "what": r.case.what,
                "samples_secs": r.secs,
                "median_secs": r.median,
                "bytes": r.bytes,
                "mib_per_sec": r.bytes as f64 / MIB / r.median,
                "peak_rss_mib": r.rss_mib,
                "cpu_secs": r.cpu_secs,
                "server_cpu_secs": r.server_cpu_secs,
                "ratio": r.ratio,
                "holds": r.holds,
            })).collect::<Vec<_>>(),
        })
    }
}

/// CPU, cores, memory, kernel and load when the run ended (the machine is shared: load says how noisy it was).
fn machine() -> serde_json::Map<String, Value> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let memory = read("/proc/meminfo").lines().find_map(|l| l.strip_prefix("MemTotal:")).map(|l| l.trim().to_string());
    let mut m = serde_json::Map::new();
    m.insert("cpu".into(), json!(model.unwrap_or("unknown CPU")));
    m.insert("cores".into(), json!(format!("{} cores", std::thread::available_parallelism().map_or(1, |n| n.get()))));
    m.insert("memory".into(), json!(format!("{} RAM", memory.unwrap_or_default())));
    m.insert("kernel".into(), json!(format!("Linux {}", read("/proc/sys/kernel/osrelease").trim())));
    m.insert(
        "load".into(),
        json!(format!("load average {}", read("/proc/loadavg").split(' ').take(3).collect::<Vec<_>>().join(" "))),
    );
    m
}

/// When runs of several sizes are in `dir`: peak RSS of backup and restore per size, the independence check.
pub fn rss_across_sizes(dir: &Path) -> Option<String> {
    let mut runs: Vec<(u64, Value)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("bench-") && e.path().extension().is_some_and(|x| x == "json")
        })
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter_map(|v| Some((v.get("mib")?.as_u64()?, v)))
        .collect();
    if runs.len() < 2 {
        return None;
    }
    runs.sort_by_key(|(mib, _)| *mib);
    let rss =
        |v: &Value, name: &str| v["cases"].as_array()?.iter().find(|c| c["name"] == name)?["peak_rss_mib"].as_f64();
    let mut out =
        String::from("\n| data set | peak RSS backup-fs-zstd | backup-azure-zstd | restore |\n|---:|---:|---:|---:|\n");
    for (mib, v) in &runs {
        let cell = |name| rss(v, name).map(|r| format!("{r:.0} MiB")).unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {mib} MiB | {} | {} | {} |\n",
            cell("backup-fs-zstd"),
            cell("backup-azure-zstd"),
            cell("restore")
        ));
    }
    Some(out)
}
