//! What one backup attempt came to: the record the daemon keeps for `status` and hands to notifications and metrics.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BackupId, Manifest, Progress};

/// How a backup attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The manifest is stored: the backup exists.
    Success,
    /// It failed; no manifest was written.
    Failed,
    /// It was stopped (daemon shutdown); no manifest was written.
    Cancelled,
}

impl Outcome {
    /// The lowercase name used in JSON, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One finished backup attempt, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The backup id (its directory in the store, whether or not it completed).
    pub id: BackupId,
    /// Who asked for it: "ssh", "run-now", "schedule", "standalone".
    pub trigger: String,
    /// Host the agent ran on.
    pub host: String,
    /// Where it was stored (`ObjectStore::describe`).
    pub store: String,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// The error, one line, when it did not succeed.
    pub error: Option<String>,
    /// Plain archive bytes produced.
    pub bytes_in: u64,
    /// Compressed bytes stored (0 when it failed: what was staged is not a backup).
    pub bytes_out: u64,
    /// Documents read.
    pub documents: u64,
}

impl RunReport {
    /// The report of an attempt that ended with `result`, using `progress` for the counters of a failed one.
    pub fn new(
        id: BackupId,
        trigger: &str,
        store: String,
        started_at: DateTime<Utc>,
        result: &Result<Manifest, (Outcome, String)>,
        progress: &Progress,
    ) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let (outcome, error, bytes_in, bytes_out, documents) = match result {
            Ok(m) => (Outcome::Success, None, m.uncompressed_bytes, m.archive_bytes, m.documents()),
            Err((outcome, message)) => (
                *outcome,
                Some(message.clone()),
                progress.archive_bytes.load(std::sync::atomic::Ordering::Relaxed),
                0,
                progress.totals().0,
            ),
        };
        RunReport {
            id,
            trigger: trigger.to_string(),
            host,
            store,
            started_at,
            finished_at: Utc::now(),
            outcome,
            error,
            bytes_in,
            bytes_out,
            documents,
        }
    }

    /// Wall-clock seconds the attempt took.
    pub fn duration_secs(&self) -> f64 {
        (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }
}
