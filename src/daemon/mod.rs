//! `serve`: the long-running agent systemd starts. It owns the control socket, runs one backup at a time when asked
//! (or on its own schedule), and tells systemd the truth about readiness, status and liveness.

pub mod client;
pub mod cluster;
mod handlers;
pub mod pitr;
pub mod protocol;
mod reload;
mod runner;
mod socket;
mod systemd;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use reload::{EXIT_RESTART, restart_only_changes};
pub use runner::{Runner, RunningBackup};
pub use socket::{Access, SocketError, bind};

use crate::config::{Config, parse_cron};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What the process's signal handlers tell the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM/SIGINT: cancel the running backup (no manifest), then exit.
    Shutdown,
    /// SIGHUP: re-read the config; a bad one is refused and the old one kept.
    Reload,
    /// SIGUSR2: restart once no backup runs (a new binary, unit or credentials), see [`EXIT_RESTART`].
    Restart,
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop: exit 0.
    Stopped,
    /// Idle with a restart pending: exit [`EXIT_RESTART`] so systemd starts a fresh process.
    Restart,
}

/// How long shutdown waits for a cancelled backup to unwind before exiting anyway; inside the unit's
/// `TimeoutStopSec=90s`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long `serve` waits for MongoDB to answer before giving up (the unit's `TimeoutStartSec=` is 120 s).
const STARTUP_WAIT: Duration = Duration::from_secs(90);

/// State every connection handler reads.
#[derive(Debug)]
pub struct Shared {
    /// The backup runner.
    pub runner: Arc<Runner>,
    /// Who may use the socket.
    pub access: Access,
    /// The config file, re-read on SIGHUP.
    pub config_path: PathBuf,
    /// Point-in-time archiving, when `[pitr]` is enabled.
    pub pitr: Option<Arc<pitr::Pitr>>,
    /// Replica-set mode, when `[cluster]` is enabled.
    pub cluster: Option<Arc<cluster::Coordinator>>,
    schedule: Mutex<Option<croner::Cron>>,
}

impl Shared {
    /// When the own schedule fires next, if there is one.
    pub fn next_scheduled(&self) -> Option<DateTime<Utc>> {
        let schedule = self.schedule.lock().unwrap();
        schedule.as_ref().and_then(|cron| cron.find_next_occurrence(&Utc::now(), false).ok())
    }

    /// The own schedule fired: back up here, or, in a replica set, post the run for the best-ranked member (every
    /// member posts it under the same id, so it runs once).
    async fn scheduled(&self, fire: DateTime<Utc>) {
        let Some(cluster) = &self.cluster else {
            self.runner.start_or_attach("schedule");
            return;
        };
        let request = crate::cluster::requests::Request::scheduled(fire, cluster.member());
        match cluster.post(&request).await {
            Ok(()) => log::info!("scheduled backup {} posted for the best-ranked member", request.id),
            Err(e) => {
                log::error!("cannot post the scheduled backup {}: {e}; another member may still post it", request.id)
            }
        }
    }

    fn set_schedule(&self, config: &Config) {
        // Already validated by Config::parse.
        *self.schedule.lock().unwrap() = config.schedule.cron.as_deref().and_then(|c| parse_cron(c).ok());
    }
}

/// Waits until MongoDB answers, so `READY=1` means "can back up now". Gives up after [`STARTUP_WAIT`].
pub async fn wait_for_mongodb(config: &Config) -> Result<String> {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    loop {
        let attempt = async {
            let client = crate::mongo::connect(&config.mongodb).await?;
            crate::mongo::server_info(&client).await
        };
        match attempt.await {
            Ok(info) => return Ok(info.version),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                systemd::status(&format!("waiting for MongoDB: {e}"));
                log::warn!("waiting for MongoDB: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Serves `listener` until a [`Signal::Shutdown`] arrives (or the signal channel closes), or a restart is pending
/// and no backup runs. The caller binds the socket (see [`bind`]) and checks MongoDB first, so tests can run the
/// daemon in-process on a temp dir.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    listener: UnixListener,
    access: Access,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<Exit> {
    let socket_path = config.daemon.socket.clone();
    let metrics = Arc::new(Metrics::new());
    record_last_success(&config, &metrics).await;
    let stop_metrics = CancellationToken::new();
    if let Some(listen) = config.metrics.listen {
        let listener = crate::metrics::bind(listen).await.map_err(|e| Error::Refused(e.to_string()))?;
        log::info!("metrics on http://{listen}/metrics");
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), stop_metrics.clone().cancelled_owned()));
    }
    let runner = Runner::new(config.clone(), metrics.clone())?;
    let stop_cluster = CancellationToken::new();
    let cluster = if config.cluster.enabled {
        let coordinator = cluster::Coordinator::new(&config, runner.clone(), metrics.clone())?;
        log::info!(
            "replica-set mode: member {}, contending for leases in {}",
            coordinator.member(),
            coordinator.store()
        );
        tokio::spawn(coordinator.clone().run(stop_cluster.clone()));
        Some(coordinator)
    } else {
        None
    };
    let stop_archiving = CancellationToken::new();
    let (pitr, archiving) = if config.pitr.enabled {
        let status = metrics.watch_archiving(config.pitr.chunk_span, schedule_interval(&config));
        let (pitr, supervisor) =
            pitr::Pitr::start(&config, runner.clone(), cluster.clone(), status, stop_archiving.clone())?;
        (Some(pitr), Some(tokio::spawn(supervisor.run())))
    } else {
        (None, None)
    };
    let shared = Arc::new(Shared { runner, access, config_path, pitr, cluster, schedule: Mutex::new(None) });
    shared.set_schedule(&config);
    let mut last_status = status_line(&shared.runner);
    systemd::ready(&last_status);
    log::info!("serving on {} ({})", socket_path.display(), schedule_note(&shared));

    let watchdog_every = systemd::watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut status_tick = tokio::time::interval(Duration::from_secs(2));
    // Why the daemon restarts as soon as no backup runs; checked each turn (the status tick wakes it).
    let mut restart: Option<String> = None;
    loop {
        if restart.is_some() && shared.runner.running().is_none() {
            break;
        }
        let next = shared.next_scheduled();
        let until_next = next.map_or(Duration::from_secs(3600), |t| (t - Utc::now()).to_std().unwrap_or_default());
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(handlers::serve_connection(shared.clone(), stream)); }
                Err(e) => log::warn!("control socket: accept failed: {e}"),
            },
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => if let Some(why) = reload::reload(&shared) {
                    restart = Some(reload::restart_pending(&shared, why));
                },
                Some(Signal::Restart) => restart = Some(reload::restart_pending(&shared, "restart requested".into())),
                Some(Signal::Shutdown) | None => {
                    restart = None;
                    break;
                }
            },
            _ = watchdog.tick(), if watchdog_every.is_some() => systemd::watchdog(),
            _ = status_tick.tick() => {
                let line = status_line(&shared.runner);
                if line != last_status {
                    systemd::status(&line);
                    last_status = line;
                }
            }
            () = tokio::time::sleep(until_next), if next.is_some() => {
                let (shared, fire) = (shared.clone(), next.unwrap_or_else(Utc::now));
                tokio::spawn(async move { shared.scheduled(fire).await });
            }
        }
    }
    let exit = match restart {
        Some(why) => reload::finish_then_restart(&shared, &mut signals, &why).await,
        None => Exit::Stopped,
    };
    // Archiving seals its open chunk first, so a clean stop loses nothing and the next start resumes after it.
    stop_archiving.cancel();
    if let Some(archiving) = archiving
        && tokio::time::timeout(SHUTDOWN_GRACE, archiving).await.is_err()
    {
        log::warn!("point-in-time archiving did not stop within {SHUTDOWN_GRACE:?}; its open chunk is lost");
    }
    shutdown(&shared, &socket_path).await;
    stop_cluster.cancel();
    stop_metrics.cancel();
    Ok(exit)
}

/// Seeds the last-success metric from the store, so a restart does not look like hours without a backup.
async fn record_last_success(config: &Config, metrics: &Metrics) {
    let newest = async {
        let store = crate::store::open(&config.storage)?;
        let entries = crate::backup::list_backups(store.as_ref(), &config.storage.prefix).await?;
        Ok::<_, Error>(entries.iter().rev().find_map(crate::backup::BackupEntry::trusted).cloned())
    };
    match newest.await {
        Ok(Some(manifest)) => metrics.set_last_success(manifest.finished_at),
        Ok(None) => {}
        Err(e) => log::warn!("cannot read the newest backup for the last-success metric: {e}"),
    }
}

async fn shutdown(shared: &Shared, socket_path: &std::path::Path) {
    systemd::stopping();
    if let Some(running) = shared.runner.running() {
        log::info!(backup_id = running.id.as_str(); "stopping: cancelling backup {}", running.id);
        shared.runner.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, running.finished()).await.is_err() {
            log::warn!("backup {} did not unwind within {SHUTDOWN_GRACE:?}; exiting anyway", running.id);
        }
    }
    let _ = std::fs::remove_file(socket_path);
    log::info!("stopped");
}

/// Time between two runs of the own schedule (the base backups with point-in-time archiving), for the alert on
/// oplog headroom.
fn schedule_interval(config: &Config) -> Option<Duration> {
    let cron = parse_cron(config.schedule.cron.as_deref()?).ok()?;
    let first = cron.find_next_occurrence(&Utc::now(), false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    (second - first).to_std().ok()
}

fn schedule_note(shared: &Shared) -> String {
    shared.next_scheduled().map_or_else(
        || "no own schedule: backups run when asked".to_string(),
        |t| format!("next scheduled backup {}", t.format("%Y-%m-%d %H:%M UTC")),
    )
}

/// The line `systemctl status` shows.
fn status_line(runner: &Runner) -> String {
    if let Some(running) = runner.running() {
        return format!("backing up: {}", running.progress.summary());
    }
    match runner.last() {
        None => "idle, no backup yet".to_string(),
        Some(r) => match &r.error {
            None => format!("idle, last backup {} ok at {}", r.id, r.finished_at.format("%Y-%m-%d %H:%M:%S UTC")),
            Some(e) => format!("idle, last backup {} {}: {e}", r.id, r.outcome.as_str()),
        },
    }
}
