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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Runner;
use super::cluster::{ARCHIVING, Coordinator};
use crate::backup::{BackupId, Outcome, Progress, RunReport};
use crate::cluster::requests::Request;
use crate::cluster::{Holder, PITR_LOCK, lock_key};
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
        cluster: Option<Arc<Coordinator>>,
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
            fence: None,
        };
        let (seals, requests) = mpsc::channel(16);
        let pitr = Arc::new(Pitr { seals, state: Arc::default(), status });
        let supervisor =
            Supervisor { pitr: pitr.clone(), config: config.clone(), settings, runner, cluster, requests, cancel };
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

    /// Whether this process archives now.
    pub fn archiving(&self) -> bool {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).archiving
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

/// Whether the supervisor archives this turn.
enum Turn {
    /// No replica set: always.
    Alone,
    /// Under the archiving lease.
    Holding(Arc<Holder>),
    /// Another member archives, or this one waits its contention delay.
    StandBy,
}

/// The task that keeps archiving going; run it with [`Supervisor::run`].
pub struct Supervisor {
    pitr: Arc<Pitr>,
    config: Config,
    settings: ArchiveSettings,
    runner: Arc<Runner>,
    /// In a replica set: archiving runs only on the member holding the archiving lease.
    cluster: Option<Arc<Coordinator>>,
    requests: mpsc::Receiver<SealRequest>,
    cancel: CancellationToken,
}

impl Supervisor {
    /// Archives until cancelled: each turn resumes from the store, and a gap or a missing base starts a base. In
    /// a replica set, a turn runs only under the archiving lease, which another member takes when this one dies.
    pub async fn run(mut self) {
        let mut retry = RETRY_AFTER;
        while !self.cancel.is_cancelled() {
            let turn = match self.contend().await {
                Ok(Turn::Alone) => Some(self.turn().await),
                Ok(Turn::Holding(holder)) => Some(self.turn_under(holder).await),
                Ok(Turn::StandBy) => None,
                Err(e) => Some(Err(e)),
            };
            let wait = match turn {
                None => self.cluster.as_ref().map_or(RETRY_AFTER, |c| c.poll_interval()),
                Some(Ok(())) => {
                    retry = RETRY_AFTER;
                    Duration::ZERO
                }
                Some(Err(e)) => {
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

    /// Whether this member may archive now: always alone; in a replica set, once it holds the archiving lease.
    async fn contend(&mut self) -> Result<Turn> {
        let Some(cluster) = self.cluster.clone() else { return Ok(Turn::Alone) };
        if let Some(archiver) = cluster.doer(ARCHIVING) {
            cluster.stand_back(PITR_LOCK);
            self.pitr.update(|s| s.last_problem = Some(format!("standing by: member {archiver} archives the oplog")));
            return Ok(Turn::StandBy);
        }
        if !cluster.eligible() || !cluster.may_contend(PITR_LOCK).await? {
            return Ok(Turn::StandBy);
        }
        let store = crate::store::open(&self.config.storage)?;
        let key = lock_key(&self.settings.prefix, PITR_LOCK);
        let holder = Holder::try_take(store.as_ref(), &key, self.config.cluster.lease_duration).await?;
        Ok(match holder {
            Some(holder) => {
                log::info!("cluster: won the archiving lease as member {}", cluster.member());
                Turn::Holding(holder)
            }
            None => Turn::StandBy,
        })
    }

    /// One turn, under `holder` in a replica set: the turn stops when the lease is lost, and chunks are stored
    /// only while it is held.
    async fn turn_under(&mut self, holder: Arc<Holder>) -> Result<()> {
        let cluster = self.cluster.clone().expect("a holder only in a replica set");
        cluster.set_doing(ARCHIVING, true);
        self.settings.fence = Some(holder.clone());
        let whole = std::mem::replace(&mut self.cancel, CancellationToken::new());
        let (lost, this_turn) = (holder.lost(), self.cancel.clone());
        let watch = tokio::spawn({
            let whole = whole.clone();
            async move {
                tokio::select! {
                    () = lost.cancelled() => {}
                    () = whole.cancelled() => {}
                }
                this_turn.cancel();
            }
        });
        let result = self.turn().await;
        watch.abort();
        self.cancel = whole;
        self.settings.fence = None;
        cluster.set_doing(ARCHIVING, false);
        holder.release().await;
        cluster.stand_back(PITR_LOCK);
        if holder.lost().is_cancelled() {
            return Err(Error::Refused("lost the archiving lease to another member; standing by".into()));
        }
        result
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

    /// Takes a base backup because of `why`, and waits for it; in a replica set, asks the member that wins the
    /// backup lease for it. When the chain broke, `alert` names the store and every notification channel hears of
    /// it as a failed run.
    async fn base_backup(&self, why: &str, alert: Option<String>) -> Result<()> {
        let report = match &self.cluster {
            None => {
                let (running, _) = self.runner.start_or_attach("pitr");
                let started = format!("base backup {} started", running.id);
                self.base_backup_started(why, &started, alert, &running.progress).await;
                running.finished().await
            }
            Some(cluster) => {
                let request = Request::kick("pitr", cluster.member());
                cluster.post(&request).await?;
                let started = format!("base backup requested from the best-ranked member ({})", request.id);
                self.base_backup_started(why, &started, alert, &Progress::default()).await;
                cluster.wait_served(&request.id).await?.report
            }
        };
        match report.outcome {
            Outcome::Success => Ok(()),
            _ => Err(Error::Refused(format!(
                "base backup {} for point-in-time archiving did not complete: {}",
                report.id,
                report.error.unwrap_or_default()
            ))),
        }
    }

    /// Says why a base backup was `started`, and alerts when the chain broke.
    async fn base_backup_started(&self, why: &str, started: &str, alert: Option<String>, progress: &Progress) {
        log::error!("point-in-time archiving: {why}: {started}");
        self.pitr.update(|s| s.last_problem = Some(format!("{why} ({started})")));
        if let Some(store) = alert {
            let broken = format!("point-in-time chain broken: {why}; {started}");
            let now = chrono::Utc::now();
            let report =
                RunReport::new(BackupId::new(now), "pitr", store, now, &Err((Outcome::Failed, broken)), progress);
            self.runner.alert(&report).await;
        }
    }
}

/// The kick on a replica-set member that is not archiving: the point its own server has majority-committed now,
/// once the archiving member's chain reaches it (it seals at least every `chunk_span`). Fails after a span, a
/// lease and a few polls without it: no member is archiving.
pub async fn await_archived(config: &Config, cluster: &Coordinator) -> std::result::Result<Timestamp, String> {
    let point = async {
        let client = crate::mongo::connect(&config.mongodb).await?;
        let point = crate::oplog::window::majority(&client).await;
        crate::mongo::close(client).await;
        point
    };
    let point = point.await.map_err(|e| e.to_string())?;
    let patience = config.pitr.chunk_span + config.cluster.lease_duration + cluster.poll_interval() * 3;
    let deadline = Instant::now() + patience;
    let store = crate::store::open(&config.storage).map_err(|e| e.to_string())?;
    loop {
        let chain = Chain::load(store.as_ref(), &config.storage.prefix).await.map_err(|e| e.to_string())?;
        if chain.windows().first().is_some_and(|w| w.to >= point) {
            return Ok(point);
        }
        if Instant::now() >= deadline {
            let archiver = cluster.doer(ARCHIVING).map_or_else(|| "no member".to_string(), |m| format!("member {m}"));
            return Err(format!(
                "the oplog chain did not reach {} within {}s ({archiver} archives it); check `status` on the members",
                describe(point),
                patience.as_secs()
            ));
        }
        tokio::time::sleep(cluster.poll_interval()).await;
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
