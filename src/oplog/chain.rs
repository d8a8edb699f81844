//! Chains: base backups plus the oplog chunks after them, and the moments they can restore.
//!
//! A base backup is consistent as of its window's end; chunks that meet each other without a hole carry it
//! forward. So each base gives one restore window, from its end to as far as the chunks reach without a gap, and
//! a moment T is restorable when some base's window holds it. Where two chunks do not meet (the oplog rolled past
//! the archiver, or archiving stopped) nothing after the hole can be reached from an older base: that is a gap,
//! and only a newer base starts a new window.

use bson::{Document, Timestamp};
use tokio::io::AsyncReadExt;

use super::chunk::{ChunkRef, chunk_dir, decode, parse_chunk_key};
use super::window::format_ts;
use crate::backup::{BackupEntry, BackupId, list_backups};
use crate::compress;
use crate::crypt::{self, Identities};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::store::ObjectStore;

/// A base backup as point-in-time recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The backup.
    pub id: BackupId,
    /// Where its slice starts: archiving resumes here after it.
    pub start: Timestamp,
    /// Whether the entry at `start` belongs to the slice.
    pub start_inclusive: bool,
    /// The moment its data (with its slice) is consistent as of.
    pub end: Timestamp,
}

impl Base {
    /// The base a trusted manifest with an oplog slice describes.
    pub fn of(manifest: &Manifest) -> Option<Base> {
        let oplog = manifest.oplog.included.then_some(&manifest.oplog)?;
        let (start, end) = (oplog.start?, oplog.end?);
        let start_inclusive = oplog.start_inclusive;
        Some(Base { id: manifest.id.clone(), start: start.into(), start_inclusive, end: end.into() })
    }
}

/// One span of time a restore can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The base it starts from (the newest, where several reach the same span).
    pub base: BackupId,
    /// Earliest restorable moment: the base's end.
    pub from: Timestamp,
    /// Latest restorable moment: how far the chunks after the base reach without a gap.
    pub to: Timestamp,
}

/// What a store holds for point-in-time recovery.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// Trusted base backups with an oplog slice, oldest first.
    pub bases: Vec<Base>,
    /// Every chunk, sorted by interval.
    pub chunks: Vec<ChunkRef>,
}

/// What `restore --time` reads: a base, then chunks, each replayed after `after` up to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePath {
    /// The base backup restored first.
    pub base: BackupId,
    /// Its window's end: the chunks' entries up to it are already in the base.
    pub base_end: Timestamp,
    /// The chunks, in order, each with the point after which its entries are new (chunks may overlap).
    pub chunks: Vec<(ChunkRef, Timestamp)>,
    /// The moment restored to: entries after it are not applied.
    pub target: Timestamp,
}

impl Chain {
    /// Reads the chain from a store.
    pub async fn load(store: &dyn ObjectStore, prefix: &str) -> Result<Chain> {
        let backups = list_backups(store, prefix).await?;
        let bases = backups.iter().filter_map(BackupEntry::trusted).filter_map(Base::of).collect();
        let mut chunks: Vec<ChunkRef> =
            store.list(&chunk_dir(prefix)).await?.into_iter().filter_map(|o| parse_chunk_key(&o.key, o.size)).collect();
        chunks.sort_by_key(|c| (c.from, c.to));
        Ok(Chain { bases, chunks })
    }

    /// How far the chunks reach from `point` without a gap, and the chunks that get there (each with the point
    /// after which its entries are new).
    fn reach(&self, point: Timestamp) -> (Timestamp, Vec<(ChunkRef, Timestamp)>) {
        let mut reached = point;
        let mut used = Vec::new();
        for chunk in &self.chunks {
            if chunk.to <= reached {
                continue;
            }
            if chunk.from > reached {
                break;
            }
            used.push((chunk.clone(), reached));
            reached = chunk.to;
        }
        (reached, used)
    }

    /// The restore window of each base, newest base first.
    pub fn windows(&self) -> Vec<Window> {
        self.bases.iter().rev().map(|b| Window { base: b.id.clone(), from: b.end, to: self.reach(b.end).0 }).collect()
    }

    /// The windows merged where they overlap or touch, oldest first: what `list` and `status` show.
    pub fn spans(&self) -> Vec<Window> {
        let mut windows = self.windows();
        windows.sort_by_key(|w| w.from);
        let mut spans: Vec<Window> = Vec::new();
        for w in windows {
            match spans.last_mut() {
                Some(last) if w.from <= last.to => {
                    if w.to > last.to {
                        last.to = w.to;
                        last.base = w.base;
                    }
                }
                _ => spans.push(w),
            }
        }
        spans
    }

    /// Holes between chunks after the oldest base: `(last point reached, where the next chunk starts)`.
    pub fn gaps(&self) -> Vec<(Timestamp, Timestamp)> {
        let Some(oldest) = self.bases.first() else { return Vec::new() };
        let mut gaps = Vec::new();
        let mut reached: Option<Timestamp> = None;
        for chunk in self.chunks.iter().filter(|c| c.to > oldest.start) {
            match reached {
                Some(r) if chunk.from > r => {
                    gaps.push((r, chunk.from));
                    reached = Some(chunk.to);
                }
                Some(r) => reached = Some(r.max(chunk.to)),
                None => reached = Some(chunk.to),
            }
        }
        gaps
    }

    /// What `list` and `status` show: each restore window, then each gap, one line each.
    pub fn summary(&self) -> Vec<String> {
        let gaps = self.gaps();
        let mut lines: Vec<String> = self
            .spans()
            .iter()
            .map(|w| {
                let state = if gaps.iter().any(|(after, _)| *after == w.to) { "then a gap" } else { "no gaps" };
                format!("PITR {} → {}, {state} (newest base {})", describe(w.from), describe(w.to), w.base)
            })
            .collect();
        lines.extend(gaps.iter().map(|(after, next)| {
            format!("GAP after {}: nothing archived until {}", describe(*after), describe(*next))
        }));
        lines
    }

    /// Checks the whole chain: every chunk read (decrypted with `identities` when encrypted) and checked (header,
    /// CRC-64, SHA-256, interval), no two chunks overlapping, no gap after the oldest base. One line per problem; none means the chain is sound.
    pub async fn verify(&self, store: &dyn ObjectStore, identities: Option<&Identities>) -> Vec<String> {
        let mut problems = Vec::new();
        for chunk in &self.chunks {
            if let Err(e) = read_chunk(store, chunk, identities).await {
                problems.push(e.to_string());
            }
        }
        for pair in self.chunks.windows(2) {
            if pair[1].from < pair[0].to {
                problems.push(format!("oplog chunks {} and {} overlap", pair[0].key, pair[1].key));
            }
        }
        problems.extend(self.gaps().iter().map(|(after, next)| {
            format!("gap in the oplog chain after {}: nothing archived until {}", describe(*after), describe(*next))
        }));
        problems
    }

    /// The newest moment any base can be restored to, with its path.
    pub fn latest(&self) -> Option<RestorePath> {
        let newest = self.windows().into_iter().max_by_key(|w| (w.to, w.from))?;
        self.path_to(newest.to).ok()
    }

    /// The path to restore to `target`: the newest base whose window holds it. A target no window holds is
    /// refused, naming the windows there are.
    pub fn path_to(&self, target: Timestamp) -> Result<RestorePath> {
        for base in self.bases.iter().rev().filter(|b| b.end <= target) {
            let (reached, used) = self.reach(base.end);
            if reached >= target {
                let chunks = used.into_iter().filter(|(c, after)| *after < target && c.from < target).collect();
                return Ok(RestorePath { base: base.id.clone(), base_end: base.end, chunks, target });
            }
        }
        let spans = self.spans();
        let listed = if spans.is_empty() {
            "there is none: is [pitr] enabled, and has a base backup with an oplog slice completed?".to_string()
        } else {
            spans.iter().map(|w| format!("{} → {}", describe(w.from), describe(w.to))).collect::<Vec<_>>().join(", ")
        };
        Err(Error::Refused(format!("no restorable window holds {}; the windows are: {listed}", describe(target))))
    }
}

impl RestorePath {
    /// Stored bytes of the chunks the path reads.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunks.iter().map(|(c, _)| c.size).sum()
    }

    /// The entries to replay after the base, read one chunk at a time (decrypted with `identities` when the
    /// chunks are encrypted).
    pub fn entries<'a>(&self, store: &'a dyn ObjectStore, identities: Option<&'a Identities>) -> PathEntries<'a> {
        PathEntries {
            store,
            identities,
            chunks: self.chunks.clone().into_iter(),
            target: self.target,
            pending: Vec::new().into_iter(),
        }
    }
}

/// The entries a [`RestorePath`] replays after its base, in order: each chunk's entries after the point the
/// previous chunk reached, up to the target. One chunk is held in memory at a time, and each is checked whole
/// (header, CRC-64, SHA-256) before any of its entries is returned.
pub struct PathEntries<'a> {
    store: &'a dyn ObjectStore,
    identities: Option<&'a Identities>,
    chunks: std::vec::IntoIter<(ChunkRef, Timestamp)>,
    target: Timestamp,
    pending: std::vec::IntoIter<Document>,
}

impl PathEntries<'_> {
    /// The next entry, or `None` after the last one at or before the target.
    pub async fn next(&mut self) -> Result<Option<Document>> {
        loop {
            if let Some(entry) = self.pending.next() {
                return Ok(Some(entry));
            }
            let Some((chunk, after)) = self.chunks.next() else { return Ok(None) };
            let entries = read_chunk(self.store, &chunk, self.identities).await?;
            let target = self.target;
            let new = entries.into_iter().filter(|e| e.get_timestamp("ts").is_ok_and(|ts| ts > after && ts <= target));
            self.pending = new.collect::<Vec<_>>().into_iter();
        }
    }
}

/// Reads a stored chunk whole, decrypting it with `identities` when it is encrypted, and checks it ([`decode`]):
/// its entries, or an error naming the chunk.
pub async fn read_chunk(
    store: &dyn ObjectStore,
    chunk: &ChunkRef,
    identities: Option<&Identities>,
) -> Result<Vec<Document>> {
    let stored = store.get_bytes(&chunk.key).await?;
    let what = format!("oplog chunk {}", chunk.key);
    let (_, plain) = crypt::open(std::io::Cursor::new(stored), identities, &what, None).await?;
    let io = |source| Error::Io { action: format!("reading {what}"), source };
    let (_, mut reader) = compress::decoder(plain).await.map_err(io)?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).await.map_err(io)?;
    let (_, entries) = decode(&plain, chunk).map_err(|e| Error::Refused(format!("oplog chunk {}: {e}", chunk.key)))?;
    Ok(entries)
}

/// Parses a moment to restore to: `ts:SECONDS,INCREMENT` (an exact oplog position, as `status` and `list` print
/// them) or an RFC 3339 time, which includes every write of its second (oplog timestamps count whole seconds).
pub fn parse_point(text: &str) -> std::result::Result<Timestamp, String> {
    if let Some(rest) = text.strip_prefix("ts:") {
        let parsed = rest
            .split_once(',')
            .and_then(|(t, i)| Some(Timestamp { time: t.parse().ok()?, increment: i.parse().ok()? }));
        return parsed.ok_or_else(|| format!("--time {text:?}: expected ts:SECONDS,INCREMENT, e.g. ts:1796022986,7"));
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("--time {text:?}: {e}; expected an RFC 3339 time (2026-11-30T10:41:57Z) or ts:SECONDS,INCREMENT")
    })?;
    let time = u32::try_from(time.timestamp()).map_err(|_| format!("--time {text:?} is outside the oplog's range"))?;
    Ok(Timestamp { time, increment: u32::MAX })
}

/// A timestamp as operators read it: UTC time and the `t:i` form.
pub fn describe(ts: Timestamp) -> String {
    let time = chrono::DateTime::from_timestamp(i64::from(ts.time), 0)
        .map_or_else(|| "?".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    format!("{time} ({})", format_ts(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u32) -> Timestamp {
        Timestamp { time, increment: 0 }
    }

    fn chunk(from: u32, to: u32) -> ChunkRef {
        ChunkRef { key: format!("oplog/{from}-{to}"), from: ts(from), to: ts(to), size: 1 }
    }

    fn base(id: &str, start: u32, end: u32) -> Base {
        Base { id: BackupId::parse(id).unwrap(), start: ts(start), start_inclusive: false, end: ts(end) }
    }

    const OLD: &str = "20261130T000000Z-aaaaaa";
    const NEW: &str = "20261130T120000Z-bbbbbb";

    #[test]
    fn a_contiguous_chain_reaches_its_last_chunk() {
        let chain = Chain { bases: vec![base(OLD, 100, 110)], chunks: vec![chunk(100, 160), chunk(160, 220)] };
        assert_eq!(chain.windows(), vec![Window { base: BackupId::parse(OLD).unwrap(), from: ts(110), to: ts(220) }]);
        assert!(chain.gaps().is_empty());
        let path = chain.path_to(ts(170)).unwrap();
        assert_eq!(
            path.chunks.iter().map(|(c, after)| (c.from, *after)).collect::<Vec<_>>(),
            [(ts(100), ts(110)), (ts(160), ts(160))]
        );
        assert_eq!(chain.latest().unwrap().target, ts(220));
        // The base's own end is restorable without any chunk.
        assert!(chain.path_to(ts(110)).unwrap().chunks.is_empty());
    }

    #[test]
    fn a_gap_ends_a_window_and_only_a_newer_base_starts_another() {
        let chain = Chain {
            bases: vec![base(OLD, 100, 110), base(NEW, 300, 320)],
            chunks: vec![chunk(100, 160), chunk(200, 260), chunk(300, 360)],
        };
        assert_eq!(chain.gaps(), vec![(ts(160), ts(200)), (ts(260), ts(300))]);
        let spans = chain.spans();
        assert_eq!(spans.iter().map(|w| (w.from, w.to)).collect::<Vec<_>>(), [(ts(110), ts(160)), (ts(320), ts(360))]);
        assert_eq!(chain.path_to(ts(150)).unwrap().base, BackupId::parse(OLD).unwrap());
        assert_eq!(chain.path_to(ts(330)).unwrap().base, BackupId::parse(NEW).unwrap());
        let refused = chain.path_to(ts(250)).unwrap_err().to_string();
        assert!(refused.contains("no restorable window holds") && refused.contains("(250:0)"), "{refused}");
        assert!(refused.contains("(110:0) → ") && refused.contains("(360:0)"), "{refused}");
        assert!(chain.path_to(ts(50)).is_err() && chain.path_to(ts(361)).is_err());
    }

    #[test]
    fn points_parse_as_timestamps_or_whole_seconds() {
        assert_eq!(parse_point("ts:1796022986,7"), Ok(Timestamp { time: 1796022986, increment: 7 }));
        assert_eq!(parse_point("2026-11-30T07:16:26Z"), Ok(Timestamp { time: 1796022986, increment: u32::MAX }));
        assert_eq!(parse_point("2026-11-30T08:16:26+01:00").unwrap().time, 1796022986);
        for bad in ["ts:1", "ts:a,b", "yesterday", "1969-01-01T00:00:00Z"] {
            assert!(parse_point(bad).unwrap_err().contains("--time"), "{bad}");
        }
    }

    #[test]
    fn overlapping_chunks_replay_each_entry_once() {
        let chain = Chain { bases: vec![base(OLD, 100, 110)], chunks: vec![chunk(100, 160), chunk(150, 200)] };
        let path = chain.path_to(ts(190)).unwrap();
        assert_eq!(
            path.chunks.iter().map(|(c, after)| (c.from, *after)).collect::<Vec<_>>(),
            [(ts(100), ts(110)), (ts(150), ts(160))]
        );
        assert!(chain.gaps().is_empty());
    }
}
