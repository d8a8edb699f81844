//! Replica-set mode: an agent on every member, exactly one of them backing up or archiving at a time.
//!
//! The agents never talk to each other; they meet in the store, under `<prefix>/.locks/`:
//!
//! - `backup` and `pitr`: lock objects. Whoever holds the lease on one runs backups or archives the oplog
//!   ([`Holder`]). Azure: a blob lease (15–60 s, renewed by its holder, so a dead agent's lease runs out); filesystem:
//!   an `flock`.
//! - `members/<member>.json`: each agent's [`Heartbeat`]: its member's role and lag, what it is doing, its last
//!   success. Ranking ([`rank`]) reads them: the best live member tries for a free lock at every poll, the others
//!   wait one contention delay per better-ranked live member from when they see it free, so the best normally wins,
//!   and any one wins when the others are gone.
//! - `requests/<id>.json` and `results/<id>.json`: backup requests (a kick on any member, a scheduled run, a base
//!   backup for archiving) and their outcomes ([`requests`]). The lease holder serves every pending request with
//!   one backup; the member that was kicked waits for the result and returns its exit status.
//!
//! **Fencing.** A holder that cannot renew its lease (partition, long pause) stops: before a manifest or an oplog
//! chunk is stored, [`Holder::admit`] renews the lease, and the write happens only if that succeeded, so an agent
//! that lost its lease to another writes nothing more. What is left is a pause longer than the lease between that
//! renewal and the write's request reaching the store; `docs/scaling.md` discusses it.

pub mod heartbeat;
pub mod rank;
pub mod requests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use heartbeat::Heartbeat;
pub use rank::{Role, Standing};

use crate::store::{Lease, ObjectStore, StoreError, join_key};

/// The lock object whose holder runs backups.
pub const BACKUP_LOCK: &str = "backup";
/// The lock object whose holder archives the oplog.
pub const PITR_LOCK: &str = "pitr";

/// The key of `name` under the cluster's directory in the store.
pub fn lock_key(prefix: &str, name: &str) -> String {
    join_key(prefix, &format!(".locks/{name}"))
}

/// This agent's member name: `[cluster] member`, else the host name.
pub fn member_name(config: &crate::config::ClusterConfig) -> String {
    config.member.clone().unwrap_or_else(|| {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let safe: String =
            host.chars().map(|c| if crate::config::ClusterConfig::member_char(c) { c } else { '-' }).collect();
        if safe.is_empty() { "member".into() } else { safe }
    })
}

/// Every JSON object under `dir` that parses as `T`, with its key. One being replaced or deleted while listed is
/// skipped, and so is one this agent cannot read (a newer agent's format), with a warning naming `what`.
async fn read_objects<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    dir: &str,
    what: &str,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut found = Vec::new();
    for object in store.list(dir).await? {
        let bytes = match store.get_bytes(&object.key).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<T>(&bytes) {
            Ok(value) => found.push((object.key, value)),
            Err(e) => log::warn!("ignoring {what} {}: not one this agent can read ({e})", object.key),
        }
    }
    Ok(found)
}

/// A lease held on a lock object and kept alive in the background until released or lost.
pub struct Holder {
    lease: Arc<dyn Lease>,
    key: String,
    duration: Duration,
    /// Cancelled once the lease is gone (renewal refused, or not renewed within its duration).
    lost: CancellationToken,
    /// Until when the last successful renewal keeps the lease ours, by this process's clock.
    valid_until: Arc<Mutex<Instant>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder").field("key", &self.key).field("lost", &self.lost.is_cancelled()).finish()
    }
}

impl Holder {
    /// Takes the lease on `key` for `duration` if it is free, and starts renewing it every third of `duration`.
    pub async fn try_take(
        store: &dyn ObjectStore,
        key: &str,
        duration: Duration,
    ) -> Result<Option<Arc<Holder>>, StoreError> {
        let asked = Instant::now();
        let Some(lease) = store.try_lease(key, duration).await? else { return Ok(None) };
        let lease: Arc<dyn Lease> = Arc::from(lease);
        let lost = CancellationToken::new();
        let valid_until = Arc::new(Mutex::new(asked + duration));
        let renewal =
            tokio::spawn(keep_renewed(lease.clone(), key.to_string(), duration, lost.clone(), valid_until.clone()));
        Ok(Some(Arc::new(Holder { lease, key: key.to_string(), duration, lost, valid_until, renewal })))
    }

    /// Cancelled when the lease is lost: whatever runs under it must stop without writing more.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The fence before a write that must come from the lease's holder only (a manifest, an oplog chunk): renews the
    /// lease now and succeeds only if it is still ours.
    pub async fn admit(&self) -> Result<(), StoreError> {
        let refused = || StoreError::LeaseLost { store: "the store".into(), key: self.key.clone() };
        if self.lost.is_cancelled() {
            return Err(refused());
        }
        let asked = Instant::now();
        match tokio::time::timeout(self.duration / 3, self.lease.renew()).await {
            Ok(Ok(())) => {
                *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = asked + self.duration;
                Ok(())
            }
            Ok(Err(e)) => {
                self.lost.cancel();
                Err(e)
            }
            Err(_) => {
                self.lost.cancel();
                Err(StoreError::Backend(format!(
                    "renewing the lease on {} took longer than {:?}; stopping rather than writing without it",
                    self.key,
                    self.duration / 3
                )))
            }
        }
    }

    /// Gives the lease up so the next holder need not wait for it to expire.
    pub async fn release(&self) {
        self.renewal.abort();
        if let Err(e) = self.lease.release().await {
            log::warn!("cannot release the lease on {}: {e}; it expires by itself", self.key);
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Renews every third of the lease, and declares it lost when a renewal is refused or none succeeded in time.
async fn keep_renewed(
    lease: Arc<dyn Lease>,
    key: String,
    duration: Duration,
    lost: CancellationToken,
    valid_until: Arc<Mutex<Instant>>,
) {
    let every = duration / 3;
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        let renewed = tokio::time::timeout(every, lease.renew()).await;
        let until = *valid_until.lock().unwrap_or_else(|e| e.into_inner());
        match renewed {
            Ok(Ok(())) => *valid_until.lock().unwrap_or_else(|e| e.into_inner()) = asked + duration,
            Ok(Err(StoreError::LeaseLost { .. })) => {
                log::error!("lost the lease on {key}: another agent holds it now; stopping what ran under it");
                lost.cancel();
                return;
            }
            Ok(Err(e)) if Instant::now() + every >= until => {
                log::error!("cannot renew the lease on {key} before it runs out ({e}); stopping what ran under it");
                lost.cancel();
                return;
            }
            Err(_) if Instant::now() + every >= until => {
                log::error!("renewing the lease on {key} timed out and it runs out; stopping what ran under it");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => log::warn!("renewing the lease on {key} failed, retrying: {e}"),
            Err(_) => log::warn!("renewing the lease on {key} timed out, retrying"),
        }
    }
}
