//! Backup requests and their results, in the store: how a kick on any member reaches the member that wins the
//! lease, and how its result gets back.
//!
//! A request is posted once (`put_if_absent`: a scheduled run, which every member posts under the same id, exists
//! once). The lease holder serves every request pending when its backup starts, writes each one's result, and
//! then deletes the request. A request whose runner died stays pending, so the next holder serves it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{lock_key, read_objects};
use crate::backup::RunReport;
use crate::store::{ObjectStore, StoreError};

const REQUESTS: &str = "requests/";
const RESULTS: &str = "results/";

/// How long results are kept for members still waiting on them.
const RESULTS_KEPT: chrono::Duration = chrono::Duration::hours(24);

/// A backup someone asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique id; also its key.
    pub id: String,
    /// Who asked: "ssh", "run-now", "schedule", "pitr".
    pub trigger: String,
    /// The member it was posted on.
    pub by: String,
    /// When.
    pub posted_at: DateTime<Utc>,
}

impl Request {
    /// A request from a kick on `member`.
    pub fn kick(trigger: &str, member: &str) -> Request {
        let now = Utc::now();
        let id = format!("{}-{member}-{:08x}", now.format("%Y%m%dT%H%M%S%.3fZ"), rand::random::<u32>());
        Request { id, trigger: trigger.to_string(), by: member.to_string(), posted_at: now }
    }

    /// The request of the scheduled run at `fire`: the same id on every member, so it is served once.
    pub fn scheduled(fire: DateTime<Utc>, member: &str) -> Request {
        let id = format!("{}-schedule", fire.format("%Y%m%dT%H%M%SZ"));
        Request { id, trigger: "schedule".into(), by: member.to_string(), posted_at: Utc::now() }
    }
}

/// How a request was served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// The member that ran the backup.
    pub member: String,
    /// The backup's report.
    pub report: RunReport,
}

fn request_key(prefix: &str, id: &str) -> String {
    lock_key(prefix, &format!("{REQUESTS}{id}.json"))
}

fn result_key(prefix: &str, id: &str) -> String {
    lock_key(prefix, &format!("{RESULTS}{id}.json"))
}

/// Posts `request`; one already there under its id (a scheduled run another member posted) is fine, and so is one
/// already served (a member whose schedule fired late must not run it again).
pub async fn post(store: &dyn ObjectStore, prefix: &str, request: &Request) -> Result<(), StoreError> {
    if result(store, prefix, &request.id).await?.is_some() {
        return Ok(());
    }
    let body = serde_json::to_vec(request).expect("a request serializes");
    match store.put_if_absent(&request_key(prefix, &request.id), body.into()).await {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Requests not served yet, oldest first.
pub async fn pending(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<Request>, StoreError> {
    let mut found = Vec::new();
    for (key, request) in read_objects::<Request>(store, &lock_key(prefix, REQUESTS), "backup request").await? {
        // Served, but its runner died before deleting it.
        if result(store, prefix, &request.id).await?.is_some() {
            store.delete(&key).await?;
            continue;
        }
        found.push(request);
    }
    found.sort_by_key(|r| r.posted_at);
    Ok(found)
}

/// Records how `requests` were served, then removes them from the pending ones and results older than a day.
pub async fn finish(
    store: &dyn ObjectStore,
    prefix: &str,
    requests: &[Request],
    served: &Served,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec(served).expect("a result serializes");
    for request in requests {
        match store.put_if_absent(&result_key(prefix, &request.id), body.clone().into()).await {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        store.delete(&request_key(prefix, &request.id)).await?;
    }
    let now = Utc::now();
    for old in store.list(&lock_key(prefix, RESULTS)).await? {
        if now - old.last_modified > RESULTS_KEPT {
            store.delete(&old.key).await?;
        }
    }
    Ok(())
}

/// How request `id` was served, once it was.
pub async fn result(store: &dyn ObjectStore, prefix: &str, id: &str) -> Result<Option<Served>, StoreError> {
    match store.get_bytes(&result_key(prefix, id)).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Backend(format!("result of backup request {id} is unreadable: {e}"))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::backup::{BackupId, Progress};
    use crate::store::FilesystemStore;

    fn report(id: &BackupId) -> RunReport {
        let now = Utc::now();
        RunReport::new(
            id.clone(),
            "schedule",
            "test".into(),
            now,
            &Err((crate::backup::Outcome::Failed, "x".into())),
            &Progress::default(),
        )
    }

    #[tokio::test]
    async fn a_scheduled_run_is_one_request_served_once_whoever_posts_it_and_when() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::new(dir.path());
        let fire = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        for member in ["m1", "m2", "m3"] {
            post(&store, "p", &Request::scheduled(fire, member)).await.unwrap();
        }
        let kick = Request::kick("ssh", "m2");
        post(&store, "p", &kick).await.unwrap();
        let waiting = pending(&store, "p").await.unwrap();
        assert_eq!(waiting.iter().map(|r| r.trigger.as_str()).collect::<Vec<_>>(), ["schedule", "ssh"]);

        let id = BackupId::new(Utc::now());
        let served = Served { member: "m1".into(), report: report(&id) };
        finish(&store, "p", &waiting, &served).await.unwrap();
        assert!(pending(&store, "p").await.unwrap().is_empty());
        assert_eq!(result(&store, "p", &kick.id).await.unwrap(), Some(served.clone()));
        // A member whose schedule fired late posts the same run again: it is not run twice.
        post(&store, "p", &Request::scheduled(fire, "m3")).await.unwrap();
        assert!(pending(&store, "p").await.unwrap().is_empty());
        assert_eq!(result(&store, "p", &waiting[0].id).await.unwrap().map(|s| s.member), Some("m1".into()));
    }
}
