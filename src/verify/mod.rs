//! Verify: proof that a stored backup is intact and restorable, not just present.
//!
//! [`verify()`] re-reads the stored archive once, streaming (memory is bounded whatever the size), and checks it
//! against its manifest: size, sha256, compression, the archive structure mongorestore enforces, and every
//! namespace's CRC and document count. [`deep()`] also restores it into scratch databases and compares. A damaged
//! backup is not an error of this module: it is a [`VerifyReport`] with [`Problem`]s, one per failed check, each
//! naming the collection and the check. Errors are left for what stopped the checking itself (store or server
//! unreachable).

mod archive;
mod deep;

use serde::Serialize;

pub use archive::verify;
pub use deep::{DeepOptions, DeepReport, deep, scratch_name};

use crate::backup::BackupId;

/// Which check a problem failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// The archive object's size differs from the manifest's `archive_bytes`.
    Size,
    /// The archive object's SHA-256 differs from the manifest's `archive_sha256`.
    Sha256,
    /// The archive is missing, undecodable, truncated or breaks the archive format.
    Archive,
    /// A namespace's CRC-64 differs between its documents, its EOF header and the manifest.
    Crc,
    /// A namespace's document count differs between the archive (or the restored copy) and the manifest.
    Documents,
    /// A namespace is in the manifest but not the archive, or the other way round.
    Namespaces,
    /// `--deep`: the restore into scratch databases failed.
    Restore,
    /// `--deep`: a sampled document differs between the archive and the restored copy.
    Sample,
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The namespace it concerns, when it concerns one.
    pub namespace: Option<String>,
    /// Which check failed.
    pub check: Check,
    /// What was found, with both values where there are two ("archive 0123…, manifest 4567…").
    pub detail: String,
}

impl Problem {
    /// A problem with the whole archive.
    pub fn archive(check: Check, detail: impl Into<String>) -> Self {
        Problem { namespace: None, check, detail: detail.into() }
    }

    /// A problem with one namespace.
    pub fn namespace(namespace: impl Into<String>, check: Check, detail: impl Into<String>) -> Self {
        Problem { namespace: Some(namespace.into()), check, detail: detail.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

/// The outcome of [`verify()`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The backup checked.
    pub id: BackupId,
    /// Key of the archive object read.
    pub archive_key: String,
    /// Bytes read from the store.
    pub stored_bytes: u64,
    /// Namespaces whose data was read to their end and matched the manifest.
    pub namespaces_checked: usize,
    /// Documents read from the archive.
    pub documents: u64,
    /// Whether the archive's contents were read (structure, CRCs, counts); false for an encrypted backup checked
    /// without its identity, where only the stored bytes' size and sha256 are.
    pub contents_checked: bool,
    /// Every failed check; empty means the backup is good.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}
