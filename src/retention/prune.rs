//! `prune`: the retention policy turned into a plan (what stays, what goes and why), then carried out so that a
//! half-deleted backup never looks complete.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::policy::{self, Decision};
use crate::backup::{BackupEntry, BackupId, MANIFEST_NAME, list_backups};
use crate::config::RetentionConfig;
use crate::error::Result;
use crate::oplog::chain::{Chain, describe};
use crate::oplog::chunk::ChunkRef;
use crate::store::ObjectStore;

/// A backup directory the plan deletes, with every object in it (the manifest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Doomed {
    /// The backup (or attempt).
    pub id: BackupId,
    /// Object keys, manifest first, so deleting in this order never leaves a manifest without its archive.
    pub keys: Vec<String>,
    /// Bytes these objects take.
    pub bytes: u64,
}

/// A backup directory without a usable manifest that the plan leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftAlone {
    /// The attempt.
    pub id: BackupId,
    /// Why it stays ("may still be uploading", "manifest unreadable").
    pub reason: String,
}

/// A leftover of a write a crash interrupted (the filesystem store's `.name.partial-*`), past `incomplete_grace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partial {
    /// Its key.
    pub key: String,
    /// Bytes it takes.
    pub bytes: u64,
}

/// What prune will do, decided before anything is deleted; `prune --dry-run` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    /// Every trusted complete backup with the policy's verdict, oldest first by the start time its manifest records.
    pub decisions: Vec<Decision>,
    /// Complete backups the policy lets go.
    pub forget: Vec<Doomed>,
    /// Incomplete attempts (no manifest) older than `incomplete_grace`.
    pub incomplete: Vec<Doomed>,
    /// Backups that failed the verification after them, older than `incomplete_grace`: failed attempts, kept only
    /// that long for a look.
    pub untrusted: Vec<Doomed>,
    /// Partial files of interrupted writes older than `incomplete_grace`.
    pub partials: Vec<Partial>,
    /// Incomplete or untrusted attempts that stay: too young, or holding a manifest this agent cannot read.
    pub left_alone: Vec<LeftAlone>,
    /// Oplog chunks of point-in-time archiving that end before the window of the oldest base the plan keeps: no
    /// restore can use them any more. None while no kept base has an oplog window.
    pub chunks: Vec<ChunkRef>,
}

/// What [`execute`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The plan that was carried out.
    pub plan: PrunePlan,
    /// Objects deleted.
    pub deleted_objects: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl PrunePlan {
    /// Plans over backup directories already listed (`list_backups`), judging incomplete attempts' age at `now`.
    /// `current` is the backup whose prune this is, if any: kept whatever the policy says.
    pub fn from_entries(
        entries: &[BackupEntry],
        policy: &RetentionConfig,
        now: DateTime<Utc>,
        current: Option<&BackupId>,
    ) -> Self {
        let trusted: Vec<(BackupId, DateTime<Utc>)> =
            entries.iter().filter(|e| e.trusted().is_some()).map(|e| (e.id.clone(), e.time())).collect();
        let decisions = policy::apply(policy, &trusted, current);
        let by_id: HashMap<&BackupId, &BackupEntry> = entries.iter().map(|e| (&e.id, e)).collect();
        let doomed = |entry: &BackupEntry| {
            let mut keys: Vec<String> = entry.objects.iter().map(|o| o.key.clone()).collect();
            keys.sort_by_key(|k| !is_manifest(k));
            Doomed { id: entry.id.clone(), keys, bytes: entry.objects.iter().map(|o| o.size).sum() }
        };
        let forget =
            decisions.iter().filter(|d| !d.keep()).filter_map(|d| by_id.get(&d.id).copied()).map(doomed).collect();
        let grace = chrono::Duration::from_std(policy.incomplete_grace).unwrap_or(chrono::Duration::MAX);
        let mut incomplete = Vec::new();
        let mut untrusted = Vec::new();
        let mut left_alone = Vec::new();
        for entry in entries.iter().filter(|e| e.trusted().is_none()) {
            // An unparsable manifest may be a newer agent's: never treat another version's backup as debris.
            if !entry.is_complete() && entry.objects.iter().any(|o| is_manifest(&o.key)) {
                let reason = "its manifest cannot be read by this agent (newer version or damaged); remove it by hand \
                              if it is debris"
                    .to_string();
                left_alone.push(LeftAlone { id: entry.id.clone(), reason });
                continue;
            }
            let touched = entry.objects.iter().map(|o| o.last_modified).max().unwrap_or_default();
            let age = now - touched.max(entry.id.time());
            let grace_text = humantime::format_duration(policy.incomplete_grace);
            match (age > grace, &entry.untrusted) {
                (true, None) => incomplete.push(doomed(entry)),
                (true, Some(_)) => untrusted.push(doomed(entry)),
                (false, None) => {
                    let reason = format!(
                        "no manifest, {} old: may still be uploading; deleted once older than {grace_text}",
                        whole_seconds(age)
                    );
                    left_alone.push(LeftAlone { id: entry.id.clone(), reason });
                }
                (false, Some(why)) => {
                    let reason = format!("not trusted, {why}; deleted once older than {grace_text}");
                    left_alone.push(LeftAlone { id: entry.id.clone(), reason });
                }
            }
        }
        PrunePlan { decisions, forget, incomplete, untrusted, partials: Vec::new(), left_alone, chunks: Vec::new() }
    }

    /// The retention class of a listed backup for `list`: the rules keeping it ("hourly,daily"), "prune" when the
    /// policy lets it go, "incomplete" or "untrusted" for an attempt prune leaves alone and "prune" for one it
    /// deletes.
    pub fn class_of(&self, entry: &BackupEntry) -> String {
        // Decisions come oldest first by (time, id): a year of hourly backups lists without a quadratic scan.
        let key = (entry.time(), &entry.id);
        if let Ok(found) = self.decisions.binary_search_by(|d| (d.time, &d.id).cmp(&key)) {
            self.decisions[found].class()
        } else if self.incomplete.iter().chain(&self.untrusted).any(|d| d.id == entry.id) {
            "prune".to_string()
        } else if entry.untrusted.is_some() {
            "untrusted".to_string()
        } else {
            "incomplete".to_string()
        }
    }

    /// Bytes the plan frees.
    pub fn bytes(&self) -> u64 {
        self.doomed().map(|d| d.bytes).sum::<u64>()
            + self.partials.iter().map(|p| p.bytes).sum::<u64>()
            + self.chunks.iter().map(|c| c.size).sum::<u64>()
    }

    /// Whether there is anything to delete.
    pub fn is_empty(&self) -> bool {
        self.doomed().next().is_none() && self.partials.is_empty() && self.chunks.is_empty()
    }

    /// Chooses the chunks of `chain` that no base the plan keeps needs: those ending before the oldest kept base's
    /// window starts (at its start, when the window does not include its start entry).
    fn choose_chunks(&mut self, chain: &Chain) {
        let kept: Vec<&BackupId> = self.decisions.iter().filter(|d| d.keep()).map(|d| &d.id).collect();
        let oldest = chain.bases.iter().filter(|b| kept.contains(&&b.id)).min_by_key(|b| b.start);
        let Some(oldest) = oldest else { return };
        let needed = |c: &ChunkRef| c.to > oldest.start || (c.to == oldest.start && oldest.start_inclusive);
        self.chunks = chain.chunks.iter().filter(|c| !needed(c)).cloned().collect();
    }

    /// Every backup directory the plan deletes.
    fn doomed(&self) -> impl Iterator<Item = &Doomed> {
        self.forget.iter().chain(&self.incomplete).chain(&self.untrusted)
    }
}

/// Whether `key` is a backup's manifest.
fn is_manifest(key: &str) -> bool {
    key.rsplit('/').next() == Some(MANIFEST_NAME)
}

/// An age for people: whole seconds ("3h 12m 5s"), not nanoseconds.
fn whole_seconds(age: chrono::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(age.num_seconds().max(0) as u64))
}

impl std::fmt::Display for PrunePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |b: u64| indicatif::HumanBytes(b).to_string();
        for decision in self.decisions.iter().rev().filter(|d| d.keep()) {
            writeln!(f, "keep    {}  ({})", decision.id, decision.class())?;
        }
        for doomed in self.forget.iter().rev() {
            writeln!(f, "delete  {}  {} (no retention rule keeps it)", doomed.id, size(doomed.bytes))?;
        }
        for doomed in self.incomplete.iter().rev() {
            writeln!(f, "delete  {}  {} (incomplete attempt past the grace period)", doomed.id, size(doomed.bytes))?;
        }
        for doomed in self.untrusted.iter().rev() {
            writeln!(f, "delete  {}  {} (failed verification, past the grace period)", doomed.id, size(doomed.bytes))?;
        }
        for partial in &self.partials {
            writeln!(f, "delete  {}  {} (partial file of an interrupted write)", partial.key, size(partial.bytes))?;
        }
        if let (Some(first), Some(last)) = (self.chunks.first(), self.chunks.last()) {
            let bytes = size(self.chunks.iter().map(|c| c.size).sum());
            writeln!(
                f,
                "delete  {} oplog chunks {} … {}  {bytes} (before the window of the oldest base kept)",
                self.chunks.len(),
                describe(first.from),
                describe(last.to)
            )?;
        }
        for left in self.left_alone.iter().rev() {
            writeln!(f, "leave   {}  ({})", left.id, left.reason)?;
        }
        write!(
            f,
            "summary: {} kept, {} deleted, {} incomplete deleted, {} left alone",
            self.decisions.iter().filter(|d| d.keep()).count(),
            self.forget.len(),
            self.incomplete.len(),
            self.left_alone.len(),
        )?;
        if !self.untrusted.is_empty() {
            write!(f, ", {} untrusted deleted", self.untrusted.len())?;
        }
        if !self.partials.is_empty() {
            write!(f, ", {} partial files deleted", self.partials.len())?;
        }
        if !self.chunks.is_empty() {
            write!(f, ", {} oplog chunks before the oldest kept base deleted", self.chunks.len())?;
        }
        writeln!(f, ", {} freed", size(self.bytes()))
    }
}

/// Lists the store and plans a prune of the backups under `prefix`; deletes nothing. `current` is the backup just
/// made when the daemon prunes after it: never deleted by this plan.
pub async fn plan(
    store: &dyn ObjectStore,
    prefix: &str,
    policy: &RetentionConfig,
    now: DateTime<Utc>,
    current: Option<&BackupId>,
) -> Result<PrunePlan> {
    let entries = list_backups(store, prefix).await?;
    let mut plan = PrunePlan::from_entries(&entries, policy, now, current);
    let grace = chrono::Duration::from_std(policy.incomplete_grace).unwrap_or(chrono::Duration::MAX);
    plan.partials = store
        .list_partial(&crate::store::join_key(prefix, ""))
        .await?
        .into_iter()
        .filter(|o| now - o.last_modified > grace)
        .map(|o| Partial { key: o.key, bytes: o.size })
        .collect();
    plan.choose_chunks(&Chain::load(store, prefix).await?);
    Ok(plan)
}

/// Carries out `plan`: for each backup, the manifest first and then the archive, so an interrupted prune leaves at
/// worst an incomplete attempt (which a later prune removes), never a manifest pointing at nothing. Stops at the
/// first failure; running prune again resumes, as deleting a missing object is not an error.
pub async fn execute(store: &dyn ObjectStore, plan: PrunePlan) -> Result<PruneReport> {
    let mut deleted_objects = 0;
    for doomed in plan.doomed() {
        for key in &doomed.keys {
            store.delete(key).await?;
            deleted_objects += 1;
        }
        log::info!("prune: deleted backup {} ({} bytes)", doomed.id, doomed.bytes);
    }
    for partial in &plan.partials {
        store.delete(&partial.key).await?;
        deleted_objects += 1;
        log::info!("prune: deleted {}, a partial file of an interrupted write ({} bytes)", partial.key, partial.bytes);
    }
    // Oldest first: an interrupted prune leaves the chain's tail, never a hole in the middle.
    for chunk in &plan.chunks {
        store.delete(&chunk.key).await?;
        deleted_objects += 1;
    }
    if !plan.chunks.is_empty() {
        log::info!("prune: deleted {} oplog chunks before the oldest kept base", plan.chunks.len());
    }
    let freed_bytes = plan.bytes();
    Ok(PruneReport { plan, deleted_objects, freed_bytes })
}

/// Plans and executes in one go: what the daemon calls after each successful backup (`current`) when
/// `retention.prune_after_backup` is set.
pub async fn prune(
    store: &dyn ObjectStore,
    prefix: &str,
    policy: &RetentionConfig,
    now: DateTime<Utc>,
    current: Option<&BackupId>,
) -> Result<PruneReport> {
    execute(store, plan(store, prefix, policy, now, current).await?).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::ObjectInfo;

    fn entry(id: &str, complete: bool, modified: &str) -> BackupEntry {
        let id = BackupId::parse(id).unwrap();
        let object = |name: &str, size| ObjectInfo {
            key: format!("p/{id}/{name}"),
            size,
            last_modified: modified.parse().unwrap(),
        };
        let mut objects = vec![object("archive.zst", 1000)];
        if complete {
            objects.push(object(MANIFEST_NAME, 10));
        }
        BackupEntry { id, manifest: None, untrusted: None, objects }
    }

    #[test]
    fn incomplete_attempts_go_after_the_grace_only() {
        let now: DateTime<Utc> = "2026-05-02T12:00:00Z".parse().unwrap();
        let entries = [
            entry("20260501T100000Z-aaaaaa", false, "2026-05-01T10:30:00Z"), // 25.5 h old: deleted
            entry("20260501T100000Z-bbbbbb", false, "2026-05-02T11:00:00Z"), // old id, written 1 h ago: stays
            entry("20260502T110000Z-cccccc", false, "2026-05-02T11:10:00Z"), // young: stays
        ];
        let policy = RetentionConfig { incomplete_grace: Duration::from_secs(24 * 3600), ..Default::default() };
        let plan = PrunePlan::from_entries(&entries, &policy, now, None);
        assert_eq!(plan.incomplete.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["20260501T100000Z-aaaaaa"]);
        assert_eq!(plan.left_alone.len(), 2);
        assert!(plan.left_alone[0].reason.contains("may still be uploading"), "{}", plan.left_alone[0].reason);
        assert_eq!(plan.bytes(), 1000);
        assert_eq!(plan.class_of(&entries[0]), "prune");
        assert_eq!(plan.class_of(&entries[2]), "incomplete");
    }

    #[test]
    fn an_unreadable_manifest_is_never_debris() {
        let now: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        // Has a manifest object but `manifest: None` (what list_backups gives for a manifest it cannot parse).
        let entries = [entry("20260501T100000Z-aaaaaa", true, "2026-05-01T10:30:00Z")];
        let plan = PrunePlan::from_entries(&entries, &RetentionConfig::default(), now, None);
        assert!(plan.is_empty(), "{plan}");
        assert!(plan.left_alone[0].reason.contains("cannot be read"), "{plan}");
    }

    #[test]
    fn forgotten_backups_lose_their_manifest_first() {
        let complete = |id: &str| {
            let mut e = entry(id, true, "2026-05-01T10:30:00Z");
            e.objects.reverse();
            e.manifest = Some(manifest(&e.id));
            e
        };
        let entries = [complete("20260501T100000Z-aaaaaa"), complete("20260501T110000Z-bbbbbb")];
        let policy = keep_last_only();
        let plan = PrunePlan::from_entries(&entries, &policy, "2026-05-01T12:00:00Z".parse().unwrap(), None);
        assert_eq!(plan.forget.len(), 1);
        let doomed = &plan.forget[0];
        assert_eq!(doomed.id, entries[0].id);
        assert_eq!(doomed.keys, ["p/20260501T100000Z-aaaaaa/manifest.json", "p/20260501T100000Z-aaaaaa/archive.zst"]);
        assert_eq!(doomed.bytes, 1010);
        assert_eq!(plan.class_of(&entries[0]), "prune");
        assert_eq!(plan.class_of(&entries[1]), "last");
        let text = plan.to_string();
        assert!(text.contains("keep    20260501T110000Z-bbbbbb  (last)"), "{text}");
        assert!(text.contains("delete  20260501T100000Z-aaaaaa"), "{text}");
        assert!(
            text.ends_with("summary: 1 kept, 1 deleted, 0 incomplete deleted, 0 left alone, 1010 B freed\n"),
            "{text}"
        );
    }

    #[test]
    fn chunks_go_only_once_no_kept_base_needs_them() {
        let ts = |time: u32| bson::Timestamp { time, increment: 0 };
        let base = |id: &str, start: u32, inclusive: bool| crate::oplog::chain::Base {
            id: BackupId::parse(id).unwrap(),
            start: ts(start),
            start_inclusive: inclusive,
            end: ts(start + 5),
        };
        let chunk =
            |from: u32, to: u32| ChunkRef { key: format!("p/oplog/{from}-{to}"), from: ts(from), to: ts(to), size: 10 };
        let (old, new) = ("20260501T100000Z-aaaaaa", "20260501T110000Z-bbbbbb");
        let entries =
            [entry(old, true, "2026-05-01T10:30:00Z"), entry(new, true, "2026-05-01T11:30:00Z")].map(|mut e| {
                e.manifest = Some(manifest(&e.id));
                e
            });
        let policy = keep_last_only();
        let mut plan = PrunePlan::from_entries(&entries, &policy, "2026-05-01T12:00:00Z".parse().unwrap(), None);
        let chunks = vec![chunk(100, 160), chunk(160, 200), chunk(200, 260), chunk(260, 300)];
        // Only the new base (window from 200) is kept: chunks up to 200 go, the one starting at 200 stays.
        let chain = Chain { bases: vec![base(old, 100, false), base(new, 200, false)], chunks: chunks.clone() };
        plan.choose_chunks(&chain);
        assert_eq!(plan.chunks, chunks[..2]);
        assert!(plan.to_string().contains("2 oplog chunks before the oldest kept base deleted"), "{plan}");
        // A window that includes its start entry needs the chunk ending exactly there.
        plan.choose_chunks(&Chain { bases: vec![base(new, 200, true)], chunks: chunks.clone() });
        assert_eq!(plan.chunks, chunks[..1]);
        // No kept base with an oplog window: nothing is known to be unneeded, nothing goes.
        plan.chunks.clear();
        plan.choose_chunks(&Chain { bases: vec![base(old, 100, false)], chunks });
        assert!(plan.chunks.is_empty());
    }

    /// A policy keeping the newest backup and nothing else.
    fn keep_last_only() -> RetentionConfig {
        RetentionConfig {
            keep_last: 1,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            ..Default::default()
        }
    }

    fn manifest(id: &BackupId) -> crate::backup::Manifest {
        crate::backup::Manifest {
            manifest_version: crate::backup::MANIFEST_VERSION,
            id: id.clone(),
            status: "complete".into(),
            started_at: id.time(),
            finished_at: id.time(),
            agent_version: "test".into(),
            host: "test".into(),
            server_version: "4.4.0".into(),
            replica_set: None,
            oplog: crate::backup::OplogInfo {
                included: false,
                start: None,
                start_inclusive: false,
                end: None,
                note: None,
            },
            compression: crate::compress::Compression::Zstd,
            archive: "archive.zst".into(),
            archive_bytes: 1000,
            uncompressed_bytes: 1000,
            archive_sha256: String::new(),
            encryption: None,
            namespaces: Vec::new(),
            dropped_during_backup: Vec::new(),
        }
    }
}
