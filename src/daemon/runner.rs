//! Single flight: at most one backup runs; a request while one runs attaches to it and gets the same result.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::protocol::{RunningInfo, StatusReply};
use crate::backup::{self, BackupId, Manifest, Outcome, Progress, RunReport};
use crate::cluster::Holder;
use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::mongo::NamespaceFilter;
use crate::notify::Notifier;
use crate::store::{self, ObjectStore};
use crate::{retention, verify};

/// A backup in progress, shared by every request attached to it.
#[derive(Debug)]
pub struct RunningBackup {
    /// Its id, known from the start so attached clients can name it.
    pub id: BackupId,
    /// Who started it.
    pub trigger: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Live counters.
    pub progress: Arc<Progress>,
    done: watch::Sender<Option<RunReport>>,
    cancel: CancellationToken,
    /// In a replica set, the lease this backup runs under: lost, the backup stops without a manifest.
    fence: Option<Arc<Holder>>,
}

impl RunningBackup {
    /// Waits for the backup to end and returns its report.
    pub async fn finished(&self) -> RunReport {
        let mut rx = self.done.subscribe();
        let report = rx.wait_for(Option::is_some).await.expect("the sender lives in self");
        report.clone().expect("waited for Some")
    }
}

/// Owns the running backup and the recent history, and tells metrics and notifications how each run ended.
pub struct Runner {
    settings: Mutex<Arc<Settings>>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("state", &self.state).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    running: Option<Arc<RunningBackup>>,
    recent: VecDeque<RunReport>,
}

impl Runner {
    /// A runner using `config` until [`Runner::set_config`] replaces it; fails when `[notify]` is unusable.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, ConfigError> {
        let settings = Mutex::new(Arc::new(Settings::new(config)?));
        Ok(Arc::new(Runner { settings, metrics, state: Mutex::default() }))
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.lock().unwrap().clone()
    }

    /// The config new backups use.
    pub fn config(&self) -> Arc<Config> {
        self.settings().config.clone()
    }

    /// Replaces the config (SIGHUP); a backup already running keeps the one it started with. A `[notify]` that
    /// cannot be used refuses the whole new config.
    pub fn set_config(&self, config: Config) -> Result<(), ConfigError> {
        *self.settings.lock().unwrap() = Arc::new(Settings::new(config)?);
        Ok(())
    }

    /// Starts a backup, or returns the running one. The flag says whether the caller attached to a running backup.
    pub fn start_or_attach(self: &Arc<Self>, trigger: &str) -> (Arc<RunningBackup>, bool) {
        self.start_fenced(trigger, None)
    }

    /// [`Runner::start_or_attach`] for the runner of a replica set, holding the backup lease `fence`.
    pub fn start_fenced(self: &Arc<Self>, trigger: &str, fence: Option<Arc<Holder>>) -> (Arc<RunningBackup>, bool) {
        let mut state = self.state.lock().unwrap();
        if let Some(running) = &state.running {
            return (running.clone(), true);
        }
        let started_at = Utc::now();
        let running = Arc::new(RunningBackup {
            id: BackupId::new(started_at),
            trigger: trigger.to_string(),
            started_at,
            progress: Arc::new(Progress::default()),
            done: watch::channel(None).0,
            cancel: CancellationToken::new(),
            fence,
        });
        state.running = Some(running.clone());
        drop(state);
        self.metrics.started();
        write_textfile(&self.config(), &self.metrics);
        log::info!(backup_id = running.id.as_str(), trigger = trigger; "backup {} started (trigger: {trigger})", running.id);
        tokio::spawn(self.clone().execute(running.clone()));
        (running, false)
    }

    /// The running backup, if any.
    pub fn running(&self) -> Option<Arc<RunningBackup>> {
        self.state.lock().unwrap().running.clone()
    }

    /// Stops the running backup (daemon shutdown): no manifest is written, so no backup exists.
    pub fn cancel(&self) {
        if let Some(running) = self.running() {
            running.cancel.cancel();
        }
    }

    /// The last finished run, if any.
    pub fn last(&self) -> Option<RunReport> {
        self.state.lock().unwrap().recent.front().cloned()
    }

    /// What `status` reports.
    pub fn status(&self, config_path: &str, next_scheduled: Option<String>) -> StatusReply {
        let settings = self.settings();
        let state = self.state.lock().unwrap();
        StatusReply {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            config: config_path.to_string(),
            store: settings.store.clone(),
            running: state.running.as_ref().map(|r| RunningInfo {
                id: r.id.clone(),
                trigger: r.trigger.clone(),
                started_at: r.started_at,
                summary: r.progress.summary(),
            }),
            recent: state.recent.iter().cloned().collect(),
            next_scheduled,
            pitr: None,
            cluster: None,
        }
    }

    /// Notifies every channel of a problem outside any one backup (a broken point-in-time chain), as a failed run.
    pub async fn alert(&self, report: &RunReport) {
        let notifier = self.settings().notifier.clone();
        notifier.notify(report).await;
    }

    async fn execute(self: Arc<Self>, running: Arc<RunningBackup>) {
        let settings = self.settings();
        let config = &settings.config;
        // The run is a task of its own, so a panic in it (a bug) ends this run as failed and the daemon serves on.
        let mut task = tokio::spawn({
            let (config, running) = (settings.config.clone(), running.clone());
            async move { back_up_and_maintain(&config, &running).await }
        });
        let result = tokio::select! {
            joined = &mut task => match joined {
                Ok(result) => result.map_err(|e| (Outcome::Failed, e)),
                Err(e) => Err((Outcome::Failed, format!("internal error, the backup task {}", panic_text(e)))),
            },
            () = running.cancel.cancelled() => {
                task.abort();
                Err((Outcome::Cancelled, "stopped by daemon shutdown; no backup was recorded".to_string()))
            }
        };
        let report = RunReport::new(
            running.id.clone(),
            &running.trigger,
            settings.store.clone(),
            running.started_at,
            &result,
            &running.progress,
        );
        log_report(&report);
        self.metrics.finished(&report);
        write_textfile(config, &self.metrics);
        // The notifier in force now: a reload during the run may have changed where notifications go.
        let notifier = self.settings().notifier.clone();
        let notified = report.clone();
        // Delivery is bounded by notify.timeout and never holds up the clients waiting for the result.
        tokio::spawn(async move { notifier.notify(&notified).await });
        {
            let mut state = self.state.lock().unwrap();
            state.recent.push_front(report.clone());
            state.recent.truncate(config.daemon.history);
            state.running = None;
        }
        running.done.send_replace(Some(report));
    }
}

/// What a panicked or aborted task says, for the run's error.
fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text payload".to_string());
            format!("panicked: {text}")
        }
        Err(error) => format!("ended abnormally: {error}"),
    }
}

/// Test-only failure injection, read from the environment of the daemon process: `panic` makes the run panic after
/// the backup is stored, `corrupt-before-verify` damages the stored archive before the verification after it.
/// Tests set it on the daemon child they start (`tests/daemon.rs`); nothing else does.
const FAULT_ENV: &str = "MBA_TEST_FAULT";

/// One backup, then what the config asks after a good one: verification, then retention. A backup that fails
/// verification is marked untrusted (see [`backup::mark_untrusted`]), reported as failed and prunes nothing, so a
/// bad new backup never pushes out a good old one. A prune that fails is logged and does not fail the backup.
async fn back_up_and_maintain(config: &Config, running: &RunningBackup) -> Result<Manifest, String> {
    let filter = NamespaceFilter::new(&config.backup.include, &config.backup.exclude).map_err(|e| e.to_string())?;
    let store = store::open(&config.storage).map_err(|e| Error::from(e).to_string())?;
    let fence = running.fence.as_deref();
    let backup = backup::run_fenced(config, running.id.clone(), &filter, store.as_ref(), &running.progress, fence);
    let lost = fence.map(Holder::lost).unwrap_or_default();
    let manifest = tokio::select! {
        result = backup => result.map_err(|e| e.to_string())?,
        // Dropping the backup abandons its upload: nothing of it becomes visible.
        () = lost.cancelled(), if fence.is_some() => {
            return Err("lost the backup lease to another member mid-backup (store unreachable or this agent \
                        paused too long); stopped without a manifest, the other member serves the request"
                .to_string());
        }
    };
    let prefix = &config.storage.prefix;
    let fault = std::env::var(FAULT_ENV).unwrap_or_default();
    if fault == "panic" {
        panic!("{FAULT_ENV}=panic: injected failure after backup {}", manifest.id);
    }
    if config.verify.after_backup {
        running.progress.set_phase("verifying");
        if fault == "corrupt-before-verify" {
            let key = backup::archive_key(prefix, &manifest.id, manifest.compression);
            let garbage: store::ByteStream = Box::pin(std::io::Cursor::new(b"injected damage".to_vec()));
            store.put_stream(&key, garbage, &Default::default()).await.map_err(|e| e.to_string())?;
        }
        // The VM holds no identity: an encrypted backup gets the checks of its stored bytes only.
        let report = verify::verify(store.as_ref(), prefix, &manifest, None).await.map_err(|e| e.to_string())?;
        if !report.is_ok() {
            let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            let marked = match backup::mark_untrusted(store.as_ref(), prefix, &manifest.id, &problems).await {
                Ok(()) => "marked untrusted: `latest`, retention and the last-success metric skip it".to_string(),
                Err(e) => format!("and marking it untrusted failed too ({e}): do not restore it"),
            };
            return Err(format!(
                "backup {} was stored but failed the verification after it, {marked}; problems: {}",
                manifest.id,
                problems.join("; ")
            ));
        }
        log::info!(backup_id = manifest.id.as_str(); "backup {} verified: {} namespaces, {} documents", manifest.id, report.namespaces_checked, report.documents);
    }
    if config.retention.prune_after_backup {
        running.progress.set_phase("pruning");
        prune(store.as_ref(), config, &manifest.id).await;
    }
    Ok(manifest)
}

/// Retention after backup `current`, which this prune never deletes.
async fn prune(store: &dyn ObjectStore, config: &Config, current: &BackupId) {
    let now = chrono::Utc::now();
    match retention::prune(store, &config.storage.prefix, &config.retention, now, Some(current)).await {
        Ok(report) if report.deleted_objects > 0 => log::info!(
            "retention: deleted {} backups and {} incomplete attempts ({} bytes freed)",
            report.plan.forget.len(),
            report.plan.incomplete.len(),
            report.freed_bytes
        ),
        Ok(_) => log::debug!("retention: nothing to delete"),
        Err(e) => log::warn!("retention: prune failed, will retry after the next backup: {e}"),
    }
}

fn write_textfile(config: &Config, metrics: &Metrics) {
    if let Some(path) = &config.metrics.textfile
        && let Err(e) = metrics::write_textfile(metrics, path)
    {
        log::warn!("{e}");
    }
}

fn log_channels(notifier: &Notifier) {
    let channels = notifier.channels();
    if channels.is_empty() {
        log::info!("notifications: no channel configured");
    } else {
        log::info!("notifications: {}", channels.join(", "));
    }
}

/// A config with what is derived from it once, not per request: the notifier (its secrets read) and the store's
/// description. Replaced as a whole on reload.
struct Settings {
    config: Arc<Config>,
    notifier: Arc<Notifier>,
    /// Where backups go, for status and reports; a store that cannot be opened says why instead.
    store: String,
}

impl Settings {
    fn new(config: Config) -> Result<Self, ConfigError> {
        let notifier = Arc::new(Notifier::new(&config.notify)?);
        log_channels(&notifier);
        let store = store::open(&config.storage).map_or_else(|e| format!("unusable store: {e}"), |s| s.describe());
        Ok(Settings { config: Arc::new(config), notifier, store })
    }
}

fn log_report(report: &RunReport) {
    let secs = report.duration_secs();
    match &report.error {
        None => log::info!(
            backup_id = report.id.as_str(), outcome = report.outcome.as_str(), duration_secs = secs,
            bytes_in = report.bytes_in, bytes_out = report.bytes_out, documents = report.documents;
            "backup {} complete: {} documents, {} bytes stored, {secs:.1}s", report.id, report.documents, report.bytes_out
        ),
        Some(error) => log::error!(
            backup_id = report.id.as_str(), outcome = report.outcome.as_str(), duration_secs = secs;
            "backup {} {}: {error}", report.id, report.outcome.as_str()
        ),
    }
}
