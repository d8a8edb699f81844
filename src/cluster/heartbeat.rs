//! Heartbeats: each agent's small status object in the store, which the others rank themselves against and which
//! `status` shows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Standing, lock_key, read_objects};
use crate::store::{ObjectStore, StoreError};

/// Where heartbeats live under the cluster's directory.
const MEMBERS: &str = "members/";

/// What one agent last said about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its member name.
    pub member: String,
    /// Its server's role and lag, and the score it contends with.
    pub standing: Standing,
    /// Its agent version.
    pub agent_version: String,
    /// When the last backup this agent ran succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// What it is doing now for the cluster ("backup <id>", "archiving the oplog"), if anything.
    pub doing: Vec<String>,
    /// When it wrote this.
    pub written_at: DateTime<Utc>,
    /// How often it writes one, so readers know when it is overdue.
    pub every_ms: u64,
}

impl Heartbeat {
    /// Whether the agent is alive: its heartbeat is no more than three intervals (and two seconds of clock skew)
    /// old.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        let allowance = chrono::Duration::milliseconds((self.every_ms * 3) as i64 + 2000);
        now - self.written_at <= allowance
    }
}

/// Stores this agent's heartbeat, replacing its previous one.
pub async fn publish(store: &dyn ObjectStore, prefix: &str, beat: &Heartbeat) -> Result<(), StoreError> {
    let body = serde_json::to_vec(beat).expect("a heartbeat serializes");
    store.put_bytes(&lock_key(prefix, &format!("{MEMBERS}{}.json", beat.member)), body).await
}

/// Every agent's latest heartbeat; ones that cannot be parsed are skipped with a warning.
pub async fn read_all(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<Heartbeat>, StoreError> {
    let beats = read_objects(store, &lock_key(prefix, MEMBERS), "heartbeat").await?;
    Ok(beats.into_iter().map(|(_, beat)| beat).collect())
}

/// How long a member waits before contending: one step per better-ranked live member.
pub fn contention_delay(position: usize, poll_interval: Duration) -> Duration {
    poll_interval * 2 * position as u32
}
