//! The manifest: written last, it is what makes a backup exist. Schema documented in the README.

mod id;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::compress::Compression;

pub use id::BackupId;

/// Version of the manifest schema; bumped on incompatible changes so old agents refuse new manifests clearly.
pub const MANIFEST_VERSION: u32 = 1;

/// File name of the manifest inside a backup's directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// A completed backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version, [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The backup id (also its directory name).
    pub id: BackupId,
    /// Always "complete": a manifest is only written once the archive is fully stored.
    pub status: String,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When the archive was fully stored.
    pub finished_at: DateTime<Utc>,
    /// Version of the agent that wrote it.
    pub agent_version: String,
    /// Host the agent ran on.
    pub host: String,
    /// MongoDB server version.
    pub server_version: String,
    /// Replica set name, if the server is a member.
    pub replica_set: Option<String>,
    /// The oplog slice included, or why none was.
    pub oplog: OplogInfo,
    /// Archive compression.
    pub compression: Compression,
    /// Archive object name, relative to the backup's directory.
    pub archive: String,
    /// Bytes stored (compressed).
    pub archive_bytes: u64,
    /// Bytes of the plain archive.
    pub uncompressed_bytes: u64,
    /// SHA-256 of the stored archive object (as stored: of the encrypted bytes when encrypted).
    pub archive_sha256: String,
    /// Set when the stored archive is encrypted: the format and the fingerprints of the keys that open it. Absent
    /// in plain backups, so manifests written before encryption existed still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::crypt::Encryption>,
    /// One entry per collection, view and the oplog, with what the archive holds for it.
    pub namespaces: Vec<NamespaceRecord>,
    /// Collections dropped while the backup read them: the archive holds what was read, and the oplog slice
    /// drops them again on restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_during_backup: Vec<String>,
}

/// The oplog slice of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OplogInfo {
    /// Whether the archive has an oplog namespace.
    pub included: bool,
    /// Where the slice starts: the majority-committed last write before the dump (exclusive) or the first entry of
    /// the oldest open transaction (inclusive).
    pub start: Option<OplogTimestamp>,
    /// Whether the entry at `start` belongs to the slice (the window opened at an open transaction's first entry);
    /// archiving after this backup resumes from there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_inclusive: bool,
    /// Last `ts` copied: the restored data equals the source as of this moment.
    pub end: Option<OplogTimestamp>,
    /// Why no oplog was taken, when it was not ("standalone server", "disabled by backup.oplog = off").
    pub note: Option<String>,
}

/// A BSON timestamp in JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OplogTimestamp {
    /// Seconds since the epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

impl From<bson::Timestamp> for OplogTimestamp {
    fn from(ts: bson::Timestamp) -> Self {
        OplogTimestamp { t: ts.time, i: ts.increment }
    }
}

impl From<OplogTimestamp> for bson::Timestamp {
    fn from(ts: OplogTimestamp) -> Self {
        bson::Timestamp { time: ts.t, increment: ts.i }
    }
}

/// What the archive holds for one namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRecord {
    /// `db.collection`, or `oplog`.
    pub namespace: String,
    /// "collection", "view", "timeseries", "users", "roles" or "oplog".
    pub kind: String,
    /// Documents.
    pub documents: u64,
    /// BSON bytes.
    pub bytes: u64,
    /// CRC-64/XZ as 16 hex digits, as in the archive's EOF header.
    pub crc: String,
}

impl Manifest {
    /// Parses a manifest, refusing newer schema versions with a message saying to upgrade.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let probe: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let version = probe.get("manifest_version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version > u64::from(MANIFEST_VERSION) {
            return Err(format!(
                "manifest version {version} is newer than this agent understands ({MANIFEST_VERSION}); upgrade it"
            ));
        }
        serde_json::from_value(probe).map_err(|e| format!("invalid manifest: {e}"))
    }

    /// Pretty JSON, as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }

    /// Total documents over all collections (the oplog excluded).
    pub fn documents(&self) -> u64 {
        self.namespaces.iter().filter(|n| n.kind != "oplog").map(|n| n.documents).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as agents before encryption wrote it (no `encryption` key).
    const PLAIN: &str = r#"{"manifest_version": 1, "id": "20261123T140000Z-1a2b3c", "status": "complete",
        "started_at": "2026-11-23T14:00:00.123Z", "finished_at": "2026-11-23T14:03:10.456Z", "agent_version": "0.1.0",
        "host": "vm", "server_version": "4.4.29", "replica_set": null,
        "oplog": {"included": false, "start": null, "end": null, "note": "standalone server: no oplog"},
        "compression": "zstd", "archive": "archive.zst", "archive_bytes": 10, "uncompressed_bytes": 20,
        "archive_sha256": "00", "namespaces": []}"#;

    #[test]
    fn manifests_without_encryption_still_load_and_plain_ones_do_not_grow_the_key() {
        let plain = Manifest::parse(PLAIN.as_bytes()).unwrap();
        assert_eq!(plain.encryption, None);
        assert!(!plain.to_json().contains("encryption"));
        let mut sealed = plain.clone();
        sealed.encryption =
            Some(crate::crypt::Encryption { format: "age".into(), recipients: vec!["73438210c856055d".into()] });
        let json = sealed.to_json();
        assert!(json.contains("\"recipients\": [\n      \"73438210c856055d\""), "{json}");
        assert_eq!(Manifest::parse(json.as_bytes()).unwrap(), sealed);
    }
}
