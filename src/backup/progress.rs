//! Live progress of a backup, shared between the pipeline (which updates it) and whoever displays it
//! (terminal bars, log lines, the daemon's systemd STATUS and control socket).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::archive::Namespace;

/// Progress of one collection.
#[derive(Debug)]
pub struct CollectionProgress {
    /// Which collection.
    pub namespace: Namespace,
    /// Expected documents (an estimate; 0 when unknown).
    pub expected: u64,
    /// Documents read so far.
    pub documents: AtomicU64,
    /// BSON bytes read so far.
    pub bytes: AtomicU64,
    /// Finished.
    pub done: AtomicBool,
}

/// Progress of a whole backup; cheap to update from many tasks.
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<String>,
    collections: Mutex<Vec<std::sync::Arc<CollectionProgress>>>,
    /// Archive bytes produced (uncompressed).
    pub archive_bytes: AtomicU64,
}

impl Progress {
    /// Sets the phase shown to the user ("connecting", "dumping", "oplog", "uploading manifest").
    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap() = phase.into();
    }

    /// The current phase.
    pub fn phase(&self) -> String {
        self.phase.lock().unwrap().clone()
    }

    /// Registers a collection and returns its counters.
    pub fn track(&self, namespace: Namespace, expected: u64) -> std::sync::Arc<CollectionProgress> {
        let entry = std::sync::Arc::new(CollectionProgress {
            namespace,
            expected,
            documents: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            done: AtomicBool::new(false),
        });
        self.collections.lock().unwrap().push(entry.clone());
        entry
    }

    /// A snapshot of every collection's counters.
    pub fn collections(&self) -> Vec<std::sync::Arc<CollectionProgress>> {
        self.collections.lock().unwrap().clone()
    }

    /// Documents and bytes read so far over all collections.
    pub fn totals(&self) -> (u64, u64) {
        self.collections()
            .iter()
            .fold((0, 0), |(d, b), c| (d + c.documents.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed)))
    }

    /// One line for status displays: the phase, and the busiest unfinished collection with its percentage.
    pub fn summary(&self) -> String {
        let active: Vec<_> = self.collections().into_iter().filter(|c| !c.done.load(Ordering::Relaxed)).collect();
        let (documents, _) = self.totals();
        match active.iter().max_by_key(|c| c.bytes.load(Ordering::Relaxed)) {
            Some(c) if c.expected > 0 => {
                let pct = (c.documents.load(Ordering::Relaxed) * 100 / c.expected).min(100);
                format!("{} {} {pct}% ({documents} documents)", self.phase(), c.namespace)
            }
            Some(c) => format!("{} {} ({documents} documents)", self.phase(), c.namespace),
            None => format!("{} ({documents} documents)", self.phase()),
        }
    }
}
