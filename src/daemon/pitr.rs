//! Point-in-time archiving inside the daemon: keeps the oplog archiver running after the newest base backup,
//! takes a base when there is none or when the chain broke, and seals the open chunk when the hourly kick asks.
//!
//! The supervisor owns the archiver's lifecycle; the archiver itself ([`crate::oplog::archiver`]) knows nothing of
//! the daemon. Each turn it reads the chain from the store and resumes after the newest stored chunk, or from the
//! newest base's window start when no chunk reaches it, so a restart (even after `kill -9`) archives no entry twice
//! and skips none. A gap (the oplog rolled past the archiver) is logged, counted, notified, and answered with a new
//! base backup at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::backup::{Outcome, RunReport};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::OplogTimestamp;
use crate::mongo::NamespaceFilter;
use crate::oplog::archiver::{self, ArchiveSettings, ArchiveStatus, Resume, SealRequest, Stop};
use crate::oplog::chain::{Chain, describe};

/// How long the supervisor waits before retrying after an error (server or store unreachable), doubling up to
/// [`RETRY_MAX`] while the errors go on.
const RETRY_AFTER: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What `status` and the kick see of archiving.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PitrState {
    /// What this process's archivers did (the metrics read the same figures).
    pub archive: ArchiveStatus,
    /// The last gap or error, one line.
    pub last_problem: Option<String>,
    /// The store's restore windows and gaps, one line each ([`Chain::summary`]).
    #[serde(default)]
    pub windows: Vec<String>,
}

/// The daemon's handle on archiving.
#[derive(Debug)]
pub struct Pitr {
    seals: mpsc::Sender<SealRequest>,
    state: Arc<Mutex<PitrState>>,
    status: Arc<Mutex<ArchiveStatus>>,
}

impl Pitr {
    /// Starts the supervisor for `config` (whose `[pitr]` is enabled), until `cancel`.
    pub fn start(
        config: &Config,
        runner: Arc<Runner>,
        status: Arc<Mutex<ArchiveStatus>>,
        cancel: CancellationToken,
    ) -> Result<(Arc<Pitr>, Supervisor)> {
        let filter = NamespaceFilter::new(&config.backup.include, &config.backup.exclude).map_err(Error::Usage)?;
        let settings = ArchiveSettings {
            prefix: config.storage.prefix.clone(),
            compression: config.backup.compression_settings(),
            filter,
            span: config.pitr.chunk_span,
            max_bytes: config.pitr.chunk_max_bytes as usize,
            poll: config.pitr.poll_interval,
            recipients: Some(config.encryption.recipients()?).filter(|r| !r.is_empty()),
        };
        let (seals, requests) = mpsc::channel(16);
        let pitr = Arc::new(Pitr { seals, state: Arc::default(), status });
        let supervisor = Supervisor { pitr: pitr.clone(), config: config.clone(), settings, runner, requests, cancel };
        Ok((pitr, supervisor))
    }

    /// The archiving state with the store's windows and gaps, for `status`.
    pub async fn report(&self, config: &Config) -> PitrState {
        let mut state = self.state();
        let chain = async {
            let store = crate::store::open(&config.storage)?;
            Chain::load(store.as_ref(), &config.storage.prefix).await
        };
        state.windows = match chain.await {
            Ok(chain) => chain.summary(),
            Err(e) => vec![format!("cannot read the chain from the store: {e}")],
        };
        state
    }

    /// The archiving state, with the archiver's counters.
    pub fn state(&self) -> PitrState {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        state.archive = self.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        state
    }

    /// Seals the open chunk now and returns the point everything is archived up to. Fails when the archiver is
    /// not running (no base yet, a gap being healed) or cannot store the chunk.
    pub async fn seal(&self) -> std::result::Result<Timestamp, String> {
        let not_running = || {
            let state = self.state();
            format!(
                "point-in-time archiving is not running{}",
                state.last_problem.map_or_else(String::new, |p| format!(": {p}"))
            )
        };
        if !self.state().archive.archiving {
            return Err(not_running());
        }
        let (reply, answer) = oneshot::channel();
        self.seals.send(reply).await.map_err(|_| not_running())?;
        answer.await.map_err(|_| not_running())?
    }

    fn update(&self, change: impl FnOnce(&mut PitrState)) {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn update_archive(&self, change: impl FnOnce(&mut ArchiveStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The task that keeps archiving going; run it with [`Supervisor::run`].
pub struct Supervisor {
    pitr: Arc<Pitr>,
    config: Config,
    settings: ArchiveSettings,
    runner: Arc<Runner>,
    requests: mpsc::Receiver<SealRequest>,
    cancel: CancellationToken,
}

impl Supervisor {
    /// Archives until cancelled: each turn resumes from the store, and a gap or a missing base starts a base.
    pub async fn run(mut self) {
        let mut retry = RETRY_AFTER;
        while !self.cancel.is_cancelled() {
            let wait = match self.turn().await {
                Ok(()) => {
                    retry = RETRY_AFTER;
                    Duration::ZERO
                }
                Err(e) => {
                    log::error!("point-in-time archiving: {e}; retrying in {}s", retry.as_secs());
                    self.pitr.update(|s| s.last_problem = Some(e.to_string()));
                    retry = (retry * 2).min(RETRY_MAX);
                    retry / 2
                }
            };
            self.pitr.update_archive(|s| s.archiving = false);
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One archiver run, from where the store's chain ends.
    async fn turn(&mut self) -> Result<()> {
        let store = crate::store::open(&self.config.storage)?;
        let chain = Chain::load(store.as_ref(), &self.settings.prefix).await?;
        let Some(base) = chain.bases.last().cloned() else {
            let client = crate::mongo::connect(&self.config.mongodb).await?;
            let server = crate::mongo::server_info(&client).await;
            crate::mongo::close(client).await;
            if server?.replica_set.is_none() {
                return Err(Error::Refused(
                    "the server is standalone, without an oplog to archive: point-in-time archiving needs a \
                     replica-set member (a one-member replica set will do); set [pitr] enabled = false"
                        .into(),
                ));
            }
            return self.base_backup("no base backup with an oplog slice yet", None).await;
        };
        let resume = match chain.chunks.iter().map(|c| c.to).max() {
            Some(to) if to >= base.start => Resume { from: to, inclusive: false },
            _ => Resume { from: base.start, inclusive: base.start_inclusive },
        };
        log::info!("point-in-time archiving from {} (base backup {})", describe(resume.from), base.id);
        let client = crate::mongo::connect(&self.config.mongodb).await?;
        self.pitr.update_archive(|s| s.archiving = true);
        let stop = archiver::run(
            &client,
            store.as_ref(),
            &self.settings,
            resume,
            &self.pitr.status,
            &mut self.requests,
            &self.cancel,
        )
        .await;
        self.pitr.update_archive(|s| s.archiving = false);
        crate::mongo::close(client).await;
        match stop {
            Stop::Cancelled => Ok(()),
            Stop::Failed(e) => Err(e),
            broken @ (Stop::Gap { .. } | Stop::NeedsBase(_)) => {
                self.pitr.update_archive(|s| s.gaps += 1);
                self.base_backup(&broken.to_string(), Some(store.describe())).await
            }
        }
    }

    /// Takes a base backup because of `why`, and waits for it. When the chain broke, `alert` names the store and
    /// every notification channel hears of it as a failed run.
    async fn base_backup(&self, why: &str, alert: Option<String>) -> Result<()> {
        let (running, _) = self.runner.start_or_attach("pitr");
        log::error!(backup_id = running.id.as_str(); "point-in-time archiving: {why}: base backup {} started", running.id);
        self.pitr.update(|s| s.last_problem = Some(format!("{why} (base backup {} started)", running.id)));
        if let Some(store) = alert {
            let broken = format!("point-in-time chain broken: {why}; base backup {} started", running.id);
            let report = RunReport::new(
                running.id.clone(),
                "pitr",
                store,
                running.started_at,
                &Err((Outcome::Failed, broken)),
                &running.progress,
            );
            self.runner.alert(&report).await;
        }
        let report = running.finished().await;
        match report.outcome {
            Outcome::Success => Ok(()),
            _ => Err(Error::Refused(format!(
                "base backup {} for point-in-time archiving did not complete: {}",
                report.id,
                report.error.unwrap_or_default()
            ))),
        }
    }
}

/// What the kick reports after sealing: the point restorable now, or why there is none.
pub async fn restorable_point(config: &Config, sealed: Timestamp) -> Result<(OplogTimestamp, String)> {
    let store = crate::store::open(&config.storage)?;
    let chain = Chain::load(store.as_ref(), &config.storage.prefix).await?;
    let newest = chain.windows().into_iter().next().ok_or_else(|| {
        Error::Refused("point-in-time archiving has no base backup yet: it is being taken, kick again later".into())
    })?;
    if newest.to < sealed {
        return Err(Error::Refused(format!(
            "the chain since base backup {} ends at {}, before the point just sealed ({}): there is a gap; a new \
             base backup is needed (run-now --full)",
            newest.base,
            describe(newest.to),
            describe(sealed)
        )));
    }
    let line = format!(
        "point-in-time archive sealed: restorable from {} to {} (base backup {}, no gap)",
        describe(newest.from),
        describe(newest.to),
        newest.base
    );
    Ok((newest.to.into(), line))
}
