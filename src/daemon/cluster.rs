//! Replica-set mode in the daemon: this agent's heartbeat, its contention for the backup lease, and the requests it
//! posts and waits on. See [`crate::cluster`] for how the agents meet in the store.
//!
//! Every `poll_interval` the coordinator asks its own server where it stands, publishes its heartbeat, reads the
//! others', and, when backup requests are pending and nobody is backing up, tries for the lease (at once when it
//! ranks first among the live members, otherwise after its contention delay counted from when it saw the lock free)
//! and serves them all with one backup.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::doc;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::backup::Outcome;
use crate::cluster::requests::{self, Request, Served};
use crate::cluster::{BACKUP_LOCK, Heartbeat, Holder, Standing, heartbeat, lock_key, rank};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{ClusterView, Metrics};
use crate::store::ObjectStore;

/// What the archiving member's heartbeat says it does.
pub const ARCHIVING: &str = "archiving the oplog";

/// Polls in a row with no live member able to back up before a waiting kick gives up.
const NO_RUNNER_POLLS: u32 = 5;

/// What `status` shows of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This agent's member name.
    pub member: String,
    /// Every member's latest heartbeat, this one's included, best-ranked first.
    pub members: Vec<Heartbeat>,
    /// Whether each member's heartbeat is current, in the order of `members`.
    pub live: Vec<bool>,
    /// Backup requests not served yet.
    pub pending: usize,
    /// The last problem talking to the store or the server, one line.
    pub last_problem: Option<String>,
}

/// This agent's part in the cluster.
pub struct Coordinator {
    config: Arc<Config>,
    store: Arc<dyn ObjectStore>,
    member: String,
    runner: Arc<Runner>,
    metrics: Arc<Metrics>,
    view: Mutex<View>,
    /// The connection to this member's own server, kept between polls.
    client: tokio::sync::Mutex<Option<mongodb::Client>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("member", &self.member).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct View {
    standing: Standing,
    beats: Vec<Heartbeat>,
    /// What this agent does for the cluster now, published in its heartbeat.
    doing: BTreeSet<String>,
    pending: usize,
    last_problem: Option<String>,
    /// Since when this agent has seen each lock free while it wanted it: its contention delay runs from there.
    free_since: HashMap<&'static str, Instant>,
}

impl Coordinator {
    /// The coordinator for `config` (whose `[cluster]` is enabled).
    pub fn new(config: &Config, runner: Arc<Runner>, metrics: Arc<Metrics>) -> Result<Arc<Coordinator>> {
        let store = crate::store::open(&config.storage)?;
        let view = View {
            standing: Standing::unreachable("not asked yet"),
            beats: Vec::new(),
            doing: BTreeSet::new(),
            pending: 0,
            last_problem: None,
            free_since: HashMap::new(),
        };
        let member = crate::cluster::member_name(&config.cluster);
        let config = Arc::new(config.clone());
        let client = Default::default();
        Ok(Arc::new(Coordinator { config, store, member, runner, metrics, view: Mutex::new(view), client }))
    }

    /// This agent's member name.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Where the agents meet.
    pub fn store(&self) -> String {
        self.store.describe()
    }

    fn prefix(&self) -> &str {
        &self.config.storage.prefix
    }

    /// How often the agents beat and look.
    pub fn poll_interval(&self) -> Duration {
        self.config.cluster.poll_interval
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks what this agent does for the cluster (`doing = true`) or stopped doing, for its heartbeat.
    pub fn set_doing(&self, what: &str, doing: bool) {
        let mut view = self.view();
        if doing {
            view.doing.insert(what.to_string())
        } else {
            view.doing.remove(what)
        };
    }

    /// How many live members rank better than this one: its contention delays.
    pub fn position(&self) -> usize {
        let view = self.view();
        let now = Utc::now();
        let others: Vec<Standing> = view
            .beats
            .iter()
            .filter(|b| b.member != self.member && b.is_live(now))
            .map(|b| b.standing.clone())
            .collect();
        rank::position(&view.standing, &others)
    }

    /// Whether this agent's server can serve a backup or archiving now.
    pub fn eligible(&self) -> bool {
        self.view().standing.eligible()
    }

    /// The live member whose heartbeat says it does `what`, other than this one.
    pub fn doer(&self, what: &str) -> Option<String> {
        let now = Utc::now();
        let view = self.view();
        view.beats
            .iter()
            .find(|b| b.member != self.member && b.is_live(now) && b.doing.iter().any(|d| d.starts_with(what)))
            .map(|b| b.member.clone())
    }

    /// Whether this member may try for lock `name` now. The best-ranked live member may at once. The others wait
    /// their contention delay counted from when they first saw the lock free, so when a holder's lease runs out, the
    /// better member, which tries at every poll, takes it first.
    pub async fn may_contend(&self, name: &'static str) -> Result<bool> {
        let delay = heartbeat::contention_delay(self.position(), self.poll_interval());
        if delay.is_zero() {
            return Ok(true);
        }
        if self.store.lease_held(&lock_key(self.prefix(), name)).await? {
            self.stand_back(name);
            return Ok(false);
        }
        let since = *self.view().free_since.entry(name).or_insert_with(Instant::now);
        Ok(since.elapsed() >= delay)
    }

    /// Forgets that lock `name` was seen free: this member does not want it now, or someone holds it.
    pub fn stand_back(&self, name: &'static str) {
        self.view().free_since.remove(name);
    }

    /// What `status` shows.
    pub fn status(&self) -> ClusterStatus {
        let view = self.view();
        let now = Utc::now();
        let mut members = view.beats.clone();
        members.sort_by(|a, b| a.standing.compare(&b.standing).then_with(|| a.member.cmp(&b.member)));
        let live = members.iter().map(|b| b.is_live(now)).collect();
        ClusterStatus {
            member: self.member.clone(),
            members,
            live,
            pending: view.pending,
            last_problem: view.last_problem.clone(),
        }
    }

    /// Publishes heartbeats and serves pending requests every `poll_interval` until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.poll_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let problem = self.turn().await.err().map(|e| e.to_string());
            let mut view = self.view();
            if problem.is_some() && problem != view.last_problem {
                log::warn!("cluster: {}", problem.as_deref().unwrap_or_default());
            }
            view.last_problem = problem;
        }
    }

    /// One poll: stand, beat, look, and maybe contend.
    async fn turn(self: &Arc<Self>) -> Result<()> {
        let standing = self.observe().await;
        self.view().standing = standing.clone();
        self.beat(standing.clone()).await?;
        let beats = heartbeat::read_all(self.store.as_ref(), self.prefix()).await?;
        self.view().beats = beats;
        self.publish_metrics();
        // While a member backs up, nobody contends; once it is done, the contention delays run afresh, so the
        // best-ranked member also wins the requests that queued up meanwhile.
        if self.runner.running().is_some() || self.doer("backup").is_some() {
            self.stand_back(BACKUP_LOCK);
            return Ok(());
        }
        let pending = requests::pending(self.store.as_ref(), self.prefix()).await?;
        self.view().pending = pending.len();
        if pending.is_empty() || !standing.eligible() {
            self.stand_back(BACKUP_LOCK);
            return Ok(());
        }
        if !self.may_contend(BACKUP_LOCK).await? {
            return Ok(());
        }
        let key = lock_key(self.prefix(), BACKUP_LOCK);
        let Some(holder) = Holder::try_take(self.store.as_ref(), &key, self.config.cluster.lease_duration).await?
        else {
            return Ok(());
        };
        // Read again under the lease: what another holder served meanwhile is gone.
        let pending = requests::pending(self.store.as_ref(), self.prefix()).await?;
        if pending.is_empty() {
            holder.release().await;
            return Ok(());
        }
        let (running, _) = self.runner.start_fenced(&pending[0].trigger, Some(holder.clone()));
        let ids: Vec<&str> = pending.iter().map(|r| r.id.as_str()).collect();
        log::info!(backup_id = running.id.as_str(); "cluster: won the backup lease as {} ({}); backup {} serves requests {}", self.member, standing.role, running.id, ids.join(", "));
        let doing = format!("backup {}", running.id);
        self.set_doing(&doing, true);
        let this = self.clone();
        tokio::spawn(async move {
            let report = running.finished().await;
            this.set_doing(&doing, false);
            // A holder that lost the lease leaves the requests to the member that took it.
            if !holder.lost().is_cancelled() {
                let served = Served { member: this.member.clone(), report };
                if let Err(e) = requests::finish(this.store.as_ref(), this.prefix(), &pending, &served).await {
                    log::error!("cluster: cannot record the result of backup {}: {e}", running.id);
                }
            }
            holder.release().await;
        });
        Ok(())
    }

    /// What the heartbeats say, for the metrics: members live and silent, whether another member archives, and the
    /// newest success any member reports, so every agent's last-success series is the set's.
    fn publish_metrics(&self) {
        let archived_elsewhere = self.doer(ARCHIVING).is_some();
        let now = Utc::now();
        let view = self.view();
        let live = view.beats.iter().filter(|b| b.is_live(now)).count();
        self.metrics.set_cluster(ClusterView { live, silent: view.beats.len() - live, archived_elsewhere });
        if let Some(newest) = view.beats.iter().filter_map(|b| b.last_success).max() {
            self.metrics.set_last_success(newest);
        }
    }

    /// Where this agent's own server stands; an unreachable server makes the agent unfit.
    async fn observe(&self) -> Standing {
        let mut cached = self.client.lock().await;
        let asked = async {
            let client = match cached.as_ref() {
                Some(client) => client.clone(),
                None => cached.insert(crate::mongo::connect(&self.config.mongodb).await?).clone(),
            };
            let admin = client.database("admin");
            let hello = admin.run_command(doc! {"hello": 1}).await.map_err(|e| Error::Refused(e.to_string()))?;
            // Refused by servers that are not replica-set members, or by users without the privilege: lag unknown.
            let status = admin.run_command(doc! {"replSetGetStatus": 1}).await.ok();
            Ok::<_, Error>(rank::standing(&hello, status.as_ref(), self.config.cluster.priority))
        };
        let standing = match tokio::time::timeout(self.config.cluster.lease_duration, asked).await {
            Ok(Ok(standing)) => return standing,
            Ok(Err(e)) => Standing::unreachable(&e.to_string()),
            Err(_) => Standing::unreachable("no answer within the lease duration"),
        };
        // Connect afresh next time.
        *cached = None;
        standing
    }

    async fn beat(&self, standing: Standing) -> Result<()> {
        let beat = Heartbeat {
            member: self.member.clone(),
            standing,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            last_success: self.runner.last().filter(|r| r.outcome == Outcome::Success).map(|r| r.finished_at),
            doing: self.view().doing.iter().cloned().collect(),
            written_at: Utc::now(),
            every_ms: self.poll_interval().as_millis() as u64,
        };
        Ok(heartbeat::publish(self.store.as_ref(), self.prefix(), &beat).await?)
    }

    /// Posts a backup request from a kick on this member.
    pub async fn post(&self, request: &Request) -> Result<()> {
        Ok(requests::post(self.store.as_ref(), self.prefix(), request).await?)
    }

    /// Waits until request `id` is served, by whichever member. Fails when no live member can back up for
    /// [`NO_RUNNER_POLLS`] polls in a row (every member's server down, say), instead of waiting forever.
    pub async fn wait_served(&self, id: &str) -> Result<Served> {
        let mut without_runner = 0;
        loop {
            if let Some(served) = requests::result(self.store.as_ref(), self.prefix(), id).await? {
                return Ok(served);
            }
            let now = Utc::now();
            let someone_can = self.view().beats.iter().any(|b| b.is_live(now) && b.standing.eligible());
            without_runner = if someone_can || self.runner.running().is_some() { 0 } else { without_runner + 1 };
            if without_runner >= NO_RUNNER_POLLS {
                return Err(Error::Refused(format!(
                    "backup request {id} is still pending and no member can back up: every agent's server is \
                     unreachable or unfit (see `mongo-backup-agent status`); the request stays queued"
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }
}
