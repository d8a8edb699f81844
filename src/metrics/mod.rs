//! Prometheus metrics: whether backups happen and how big and slow they are, for alerting on "no backup lately".
//!
//! The text is the Prometheus exposition format 0.0.4, written here rather than with `prometheus-client`: that
//! crate emits OpenMetrics only, whose counter `# TYPE` line names the family without `_total` and whose `info`
//! type node_exporter's textfile collector (a 0.0.4 parser) rejects or mistypes; one rendering serves both the
//! scrape endpoint ([`serve`]) and the textfile ([`write_textfile`]), so it is the format both read. The series are
//! few and fixed, which keeps the encoder a page long.

mod http;
mod textfile;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use http::{bind, serve};
pub use textfile::write_textfile;

use crate::backup::{Outcome, RunReport};
use crate::manifest::OplogTimestamp;
use crate::oplog::archiver::ArchiveStatus;

/// Why metrics could not be published.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The endpoint's address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source} (is another process using it? change [metrics] listen)")]
    Bind {
        /// The address from `[metrics] listen`.
        addr: std::net::SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The endpoint would be reachable from other hosts.
    #[error("refusing to serve metrics on {0}: [metrics] listen must be a loopback address")]
    NotLoopback(std::net::SocketAddr),
    /// The textfile could not be written or moved into place.
    #[error("cannot write metrics textfile {path}: {source} (check [metrics] textfile and the directory's owner)")]
    Textfile {
        /// The file from `[metrics] textfile`.
        path: std::path::PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// The figures behind the metrics; one lock, held only to copy or update them.
#[derive(Debug, Default, Clone)]
struct State {
    in_progress: bool,
    last_success: Option<DateTime<Utc>>,
    last_run: Option<RunReport>,
    /// Runs by outcome, in [`OUTCOMES`] order.
    totals: [u64; 3],
}

/// Every outcome, so each `backups_total` series exists (at 0) from the start and `increase()` sees the first one.
const OUTCOMES: [Outcome; 3] = [Outcome::Success, Outcome::Failed, Outcome::Cancelled];

/// The agent's metrics. The daemon owns one (behind an `Arc`), calls [`Metrics::started`] and
/// [`Metrics::finished`] around every run, and [`Metrics::render`] answers scrapes.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
    archiving: Mutex<Option<Archiving>>,
    cluster: Mutex<Option<ClusterView>>,
}

/// Replica-set mode as the metrics see it, from the heartbeats in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Members whose agents' heartbeats are current, this one's included.
    pub live: usize,
    /// Members whose agents' heartbeats stopped.
    pub silent: usize,
    /// Whether a live member other than this one archives the oplog.
    pub archived_elsewhere: bool,
}

/// Point-in-time archiving as the metrics see it: the archiver's figures, and the settings alerts compare them with.
#[derive(Debug, Clone)]
struct Archiving {
    status: Arc<Mutex<ArchiveStatus>>,
    chunk_span: Duration,
    base_interval: Option<Duration>,
}

impl Metrics {
    /// No runs yet: counters at 0, nothing in progress, no last success.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the newest good backup known from before this process started (the daemon reads it from the store
    /// at startup), so a restart does not look like "never backed up" to the staleness alert.
    pub fn set_last_success(&self, at: DateTime<Utc>) {
        let mut state = self.lock();
        state.last_success = state.last_success.max(Some(at));
    }

    /// Turns on the point-in-time series; returns the status the archiver updates, which they are read from.
    /// `chunk_span` and `base_interval` (the own schedule's period) are exported for the alert rules.
    pub fn watch_archiving(&self, chunk_span: Duration, base_interval: Option<Duration>) -> Arc<Mutex<ArchiveStatus>> {
        let status = Arc::new(Mutex::new(ArchiveStatus::default()));
        let archiving = Archiving { status: status.clone(), chunk_span, base_interval };
        *self.archiving.lock().unwrap_or_else(|e| e.into_inner()) = Some(archiving);
        status
    }

    /// Replica-set mode: what the heartbeats show now. With it, `pitr_archiving` counts archiving on any live
    /// member, so only a set where nobody archives alerts.
    pub fn set_cluster(&self, view: ClusterView) {
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    /// A backup has started.
    pub fn started(&self) {
        self.lock().in_progress = true;
    }

    /// A backup has ended, however it ended.
    pub fn finished(&self, report: &RunReport) {
        let mut state = self.lock();
        state.in_progress = false;
        if report.outcome == Outcome::Success {
            state.last_success = state.last_success.max(Some(report.finished_at));
        }
        let index = OUTCOMES.iter().position(|o| *o == report.outcome).expect("OUTCOMES lists every outcome");
        state.totals[index] += 1;
        state.last_run = Some(report.clone());
    }

    /// The metrics in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]). Series that describe the last run read
    /// 0 until there has been one; a last success timestamp of 0 means none is known.
    pub fn render(&self) -> String {
        let state = self.lock().clone();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let name = format!("mongo_backup_agent_{name}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |value: f64| [(String::new(), value)];
        let seconds = |t: Option<DateTime<Utc>>| t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
        let last = state.last_run.as_ref();
        let last_value = |f: fn(&RunReport) -> f64| one(last.map_or(0.0, f));
        family(
            "info",
            "gauge",
            "Always 1; the label says which agent version is running.",
            &[(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1.0)],
        );
        family(
            "backup_in_progress",
            "gauge",
            "1 while a backup runs, else 0.",
            &one(f64::from(u8::from(state.in_progress))),
        );
        let totals: Vec<(String, f64)> = OUTCOMES
            .iter()
            .zip(state.totals)
            .map(|(outcome, n)| (format!("{{outcome=\"{}\"}}", outcome.as_str()), n as f64))
            .collect();
        family("backups_total", "counter", "Backups finished since the agent started, by outcome.", &totals);
        family(
            "last_success_timestamp_seconds",
            "gauge",
            "When the newest successful backup finished (Unix time); 0 when none is known.",
            &one(seconds(state.last_success)),
        );
        family(
            "last_run_timestamp_seconds",
            "gauge",
            "When the last backup attempt finished (Unix time), whatever its outcome.",
            &one(seconds(last.map(|r| r.finished_at))),
        );
        family(
            "last_run_success",
            "gauge",
            "1 when the last backup attempt succeeded, else 0.",
            &last_value(|r| f64::from(u8::from(r.outcome == Outcome::Success))),
        );
        family(
            "last_run_duration_seconds",
            "gauge",
            "How long the last attempt took.",
            &last_value(RunReport::duration_secs),
        );
        family(
            "last_run_archive_bytes",
            "gauge",
            "Uncompressed archive bytes the last attempt produced.",
            &last_value(|r| r.bytes_in as f64),
        );
        family(
            "last_run_stored_bytes",
            "gauge",
            "Compressed bytes the last attempt stored (0 when it failed).",
            &last_value(|r| r.bytes_out as f64),
        );
        family("last_run_documents", "gauge", "Documents the last attempt read.", &last_value(|r| r.documents as f64));
        let archiving = self.archiving.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cluster = *self.cluster.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(archiving) = archiving {
            let elsewhere = cluster.is_some_and(|c| c.archived_elsewhere);
            render_archiving(&archiving, elsewhere, Utc::now(), &mut family);
        }
        if let Some(cluster) = cluster {
            family(
                "cluster_members_live",
                "gauge",
                "Replica-set members whose agents' heartbeats are current, this one's included.",
                &one(cluster.live as f64),
            );
            family(
                "cluster_members_silent",
                "gauge",
                "Replica-set members whose agents' heartbeats stopped: they can neither back up nor take over.",
                &one(cluster.silent as f64),
            );
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain numbers, valid after any panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The point-in-time series (`mongo_backup_agent_pitr_*`).
fn render_archiving(
    archiving: &Archiving,
    archived_elsewhere: bool,
    now: DateTime<Utc>,
    family: &mut impl FnMut(&str, &str, &str, &[(String, f64)]),
) {
    let a = archiving.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let one = |value: f64| [(String::new(), value)];
    let seconds = |ts: Option<OplogTimestamp>| ts.map_or(0.0, |t| f64::from(t.t));
    family(
        "pitr_archiving",
        "gauge",
        "1 while the oplog archiver runs (in replica-set mode: on any live member), else 0.",
        &one(f64::from(u8::from(a.archiving || archived_elsewhere))),
    );
    family(
        "pitr_archived_timestamp_seconds",
        "gauge",
        "Oplog time (Unix) up to which everything is archived: the newest restorable moment; 0 before the first chunk.",
        &one(seconds(a.archived_to)),
    );
    let lag = a.lag_secs(now).map_or(0.0, |l| l as f64);
    family(
        "pitr_lag_seconds",
        "gauge",
        "Now minus the newest restorable moment: the recovery point if the VM died now.",
        &one(lag),
    );
    family(
        "pitr_oplog_window_seconds",
        "gauge",
        "How much time the server's oplog holds (newest minus oldest entry): how long archiving may stop without a gap.",
        &one(a.oplog_window_secs().map_or(0.0, f64::from)),
    );
    family("pitr_chunks_total", "counter", "Oplog chunks stored since the agent started.", &one(a.chunks as f64));
    family(
        "pitr_stored_bytes_total",
        "counter",
        "Bytes of oplog chunks stored since the agent started.",
        &one(a.bytes as f64),
    );
    family(
        "pitr_gaps_total",
        "counter",
        "Times the oplog rolled past the archiver (or the chain broke otherwise) since the agent started.",
        &one(a.gaps as f64),
    );
    family(
        "pitr_chunk_span_seconds",
        "gauge",
        "The configured pitr.chunk_span.",
        &one(archiving.chunk_span.as_secs_f64()),
    );
    if let Some(interval) = archiving.base_interval {
        family(
            "schedule_interval_seconds",
            "gauge",
            "Time between two base backups of the own schedule.",
            &one(interval.as_secs_f64()),
        );
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
