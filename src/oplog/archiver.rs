//! Continuous archiving: the oplog after a base backup, stored as chunks ([`super::chunk`]) that meet without a
//! hole.
//!
//! The archiver asks the server every `poll_interval` for its majority-committed last write (`hello`, which costs
//! the same on an oplog of any size) and, when it moved, reads the entries up to it in natural order. Only
//! majority-committed entries are ever read, so no chunk holds a write a failover could roll back, and after each
//! read the archiver knows exactly how far its chunks cover: up to that majority point, not just up to the last
//! entry it saw. A tailable cursor would need neither the poll nor the re-query, but it cannot say how far it has
//! seen when nothing arrives, and the test server's tailable cursors never return entries written after they opened.
//!
//! A chunk is sealed when it spans `chunk_span`, when its entries reach `chunk_max_bytes` (which bounds memory
//! whatever the write rate), when asked (the hourly kick), and at shutdown. Before each seal, the oplog's oldest
//! entry must still be at or before the chunk's start: the oplog is pruned oldest first, so then nothing the chunk
//! covers was pruned before it was read. Otherwise the chain has a gap, which the archiver reports instead of
//! storing a chunk that would silently skip entries.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use bson::{Timestamp, doc};
use chrono::{DateTime, Utc};
use mongodb::Client;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::capture::SliceFilter;
use super::chunk::{ChunkBuilder, chunk_key};
use super::slice::{oldest_entry, oplog, ordered_entry};
use super::window::{format_ts, majority};
use crate::archive::NamespaceFilter;
use crate::compress::{self, CompressionSettings};
use crate::crypt::{self, Recipients};
use crate::error::{Error, Result};
use crate::manifest::OplogTimestamp;
use crate::mongo::within_stall_limit;
use crate::store::{ObjectStore, StoreError};

/// How the archiver chunks and where it stores.
#[derive(Clone)]
pub struct ArchiveSettings {
    /// The store's key prefix.
    pub prefix: String,
    /// The archive's compression, applied to each chunk.
    pub compression: CompressionSettings,
    /// The namespaces archived: the same as the base backups'.
    pub filter: NamespaceFilter,
    /// Longest time a chunk stays open.
    pub span: Duration,
    /// Entry bytes at which a chunk is sealed early.
    pub max_bytes: usize,
    /// How often the server's majority point is read.
    pub poll: Duration,
    /// `[encryption] recipients`: each chunk is encrypted to them after compression, like the archives.
    pub recipients: Option<Recipients>,
    /// In a replica set, the archiving lease: each chunk is stored only if it is still held right before.
    pub fence: Option<std::sync::Arc<crate::cluster::Holder>>,
}

/// Where archiving starts: the end of the last stored chunk, or a base window's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The point after which entries are archived.
    pub from: Timestamp,
    /// Whether the entry at `from` is archived too (a base window opened at a transaction's first entry).
    pub inclusive: bool,
}

/// What archiving has done, for `status` and the metrics: the archiver updates it as it goes, and whoever runs it
/// (the daemon) sets `archiving` and counts gaps.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveStatus {
    /// Whether an archiver is running now.
    pub archiving: bool,
    /// Gaps found: times the chain broke and a new base had to start a new one.
    pub gaps: u64,
    /// The end of the newest stored chunk: everything up to it is archived.
    pub archived_to: Option<OplogTimestamp>,
    /// When that chunk was stored.
    pub sealed_at: Option<DateTime<Utc>>,
    /// Chunks stored by this process.
    pub chunks: u64,
    /// Bytes stored by this process (compressed).
    pub bytes: u64,
    /// The server's oplog window as last seen: its oldest entry (read before each seal) ...
    pub oplog_oldest: Option<OplogTimestamp>,
    /// ... and its newest majority-committed write (read at each poll).
    pub oplog_newest: Option<OplogTimestamp>,
}

impl ArchiveStatus {
    /// Seconds from the newest archived moment to `now`: the recovery point if the VM died now.
    pub fn lag_secs(&self, now: DateTime<Utc>) -> Option<u64> {
        self.archived_to.map(|t| (now.timestamp() - i64::from(t.t)).max(0) as u64)
    }

    /// Seconds of writes the server's oplog holds (newest minus oldest entry), as last seen.
    pub fn oplog_window_secs(&self) -> Option<u32> {
        Some(self.oplog_newest?.t.saturating_sub(self.oplog_oldest?.t))
    }
}

/// Why the archiver stopped.
#[derive(Debug)]
pub enum Stop {
    /// The oplog no longer holds the entries after `after`: its oldest entry is `oldest`. The chain is broken and
    /// only a new base backup starts a new one.
    Gap {
        /// The last point archived.
        after: Timestamp,
        /// The oplog's oldest entry now.
        oldest: Option<Timestamp>,
    },
    /// The chain cannot go on from here for another reason (a rename into the archived namespaces from outside
    /// them): only a new base backup starts a new one.
    NeedsBase(String),
    /// An error that a retry from the last stored chunk may get past (the server or the store unreachable).
    Failed(Error),
    /// Shut down; the open chunk was sealed first.
    Cancelled,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Gap { after, oldest } => write!(
                f,
                "the oplog rolled past the archiver: entries after {} are gone (its oldest entry is now {}), so the \
                 point-in-time chain has a gap there; a new base backup starts a new chain",
                format_ts(*after),
                oldest.map_or("none".into(), format_ts)
            ),
            Stop::NeedsBase(why) | Stop::Failed(Error::Refused(why)) => f.write_str(why),
            Stop::Failed(e) => write!(f, "{e}"),
            Stop::Cancelled => f.write_str("stopped"),
        }
    }
}

/// A request to seal the open chunk now; answered with the point everything is archived up to.
pub type SealRequest = oneshot::Sender<std::result::Result<Timestamp, String>>;

/// The archiver's open chunk and position.
struct Archiver<'a> {
    client: &'a Client,
    store: &'a dyn ObjectStore,
    settings: &'a ArchiveSettings,
    filter: SliceFilter<'a>,
    /// The open chunk starts after this point (or at it, when `inclusive`).
    from: Timestamp,
    inclusive: bool,
    /// Every entry up to this point has been read into the open chunk or an earlier one.
    covered: Timestamp,
    /// `ts` of the last entry read, for the order check.
    last: Option<Timestamp>,
    entries: ChunkBuilder,
    opened: Instant,
    status: &'a std::sync::Mutex<ArchiveStatus>,
}

/// Archives from `resume` until cancelled, a gap, or an error. `seals` asks for the open chunk to be sealed now.
pub async fn run(
    client: &Client,
    store: &dyn ObjectStore,
    settings: &ArchiveSettings,
    resume: Resume,
    status: &std::sync::Mutex<ArchiveStatus>,
    seals: &mut mpsc::Receiver<SealRequest>,
    cancel: &CancellationToken,
) -> Stop {
    // Continuous archiving lists nothing: no rename can catch a dump half-way.
    let listed = HashSet::new();
    let mut archiver = Archiver {
        client,
        store,
        settings,
        filter: SliceFilter::new(&settings.filter, &listed),
        from: resume.from,
        inclusive: resume.inclusive,
        covered: resume.from,
        last: None,
        entries: ChunkBuilder::default(),
        opened: Instant::now(),
        status,
    };
    match archiver.check_reaches_back().await {
        Ok(None) => {}
        Ok(Some(gap)) => return gap,
        Err(e) => return Stop::Failed(e),
    }
    let mut tick = tokio::time::interval(settings.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            () = cancel.cancelled() => return match archiver.seal().await {
                Ok(_) => Stop::Cancelled,
                Err(stop) => stop,
            },
            request = seals.recv() => match request {
                Some(reply) => {
                    let sealed = match archiver.read().await {
                        Ok(()) => archiver.seal().await,
                        Err(stop) => Err(stop),
                    };
                    let _ = reply.send(sealed.as_ref().map(|t| *t).map_err(ToString::to_string));
                    sealed.map(drop)
                }
                None => Ok(()),
            },
            _ = tick.tick() => archiver.step().await,
        };
        if let Err(stop) = step {
            return stop;
        }
    }
}

impl Archiver<'_> {
    /// The stored bytes of a chunk: compressed, then encrypted when recipients are set.
    async fn encode(&self, plain: &[u8], key: &str) -> Result<Vec<u8>> {
        let io = |source| Error::Io { action: format!("compressing oplog chunk {key}"), source };
        let compressed = compress::compress_bytes(&self.settings.compression, plain).await.map_err(io)?;
        let Some(recipients) = &self.settings.recipients else { return Ok(compressed) };
        let mut encrypted = Vec::with_capacity(compressed.len() + 1024);
        let mut writer = crypt::encrypting_writer(recipients, &mut encrypted, key).await?;
        writer.write_all(&compressed).await.map_err(io)?;
        writer.shutdown().await.map_err(io)?;
        drop(writer);
        Ok(encrypted)
    }

    fn update(&self, change: impl FnOnce(&mut ArchiveStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One poll: read what became majority-committed, and seal the chunk once it spans `chunk_span`.
    async fn step(&mut self) -> std::result::Result<(), Stop> {
        self.read().await?;
        // Sealed one poll early: an entry written just after the last seal is then stored within `chunk_span` plus
        // the seal's own time, not a span and a poll.
        if self.opened.elapsed() + self.settings.poll >= self.settings.span {
            self.seal().await?;
        }
        Ok(())
    }

    /// Reads the entries up to the server's majority point into the open chunk, sealing early at
    /// `chunk_max_bytes`.
    async fn read(&mut self) -> std::result::Result<(), Stop> {
        let point = majority(self.client).await.map_err(Stop::Failed)?;
        self.update(|s| s.oplog_newest = Some(point.into()));
        if point <= self.covered {
            return Ok(());
        }
        let lower = if self.inclusive && self.covered == self.from { "$gte" } else { "$gt" };
        let oplog = oplog(self.client);
        let find = oplog.find(doc! {"ts": {lower: self.covered, "$lte": point}});
        let mut cursor = within_stall_limit("reading the oplog", find.into_future()).await.map_err(Stop::Failed)?;
        while within_stall_limit("reading the oplog", cursor.advance()).await.map_err(Stop::Failed)? {
            let (ts, entry) = ordered_entry(cursor.current(), &mut self.last).map_err(Stop::Failed)?;
            let kept = self.filter.keep(entry).map_err(|e| Stop::NeedsBase(format!("continuous archiving: {e}")))?;
            let Some(kept) = kept else { continue };
            let mut bytes = Vec::new();
            kept.to_writer(&mut bytes)
                .map_err(|e| Stop::Failed(Error::Refused(format!("cannot encode an oplog entry: {e}"))))?;
            self.entries.push(ts, &bytes);
            if self.entries.len() >= self.settings.max_bytes {
                self.covered = ts;
                self.seal().await?;
            }
        }
        self.covered = point;
        Ok(())
    }

    /// `Some(gap)` when the oplog's oldest entry is after the open chunk's start.
    async fn check_reaches_back(&self) -> Result<Option<Stop>> {
        let oldest = oldest_entry(self.client).await?;
        self.update(|s| s.oplog_oldest = oldest.map(Into::into));
        let reaches = oldest.is_some_and(|o| o <= self.from);
        Ok((!reaches).then_some(Stop::Gap { after: self.from, oldest }))
    }

    /// Stores the open chunk, covering up to `covered`, and opens the next; returns the point archived up to. A
    /// chunk that would cover nothing new is not written.
    async fn seal(&mut self) -> std::result::Result<Timestamp, Stop> {
        if self.covered == self.from && self.entries.is_empty() {
            return Ok(self.from);
        }
        if let Some(gap) = self.check_reaches_back().await.map_err(Stop::Failed)? {
            return Err(gap);
        }
        let entries = std::mem::take(&mut self.entries);
        let (header, plain) = entries.finish(self.from, self.inclusive, self.covered);
        let key = chunk_key(&self.settings.prefix, header.from, header.to, self.settings.compression.compression);
        let stored = self.encode(&plain, &key).await.map_err(Stop::Failed)?;
        let size = stored.len() as u64;
        if let Some(holder) = &self.settings.fence {
            holder.admit().await.map_err(|e| Stop::Failed(e.into()))?;
        }
        match self.store.put_if_absent(&key, stored.into()).await {
            // Only a chunk of the same interval, holding the same entries, has the same key.
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(Stop::Failed(e.into())),
        }
        log::debug!("stored oplog chunk {key}: {} entries, {size} bytes", header.count);
        self.update(|status| {
            status.archived_to = Some(header.to.into());
            status.sealed_at = Some(Utc::now());
            status.chunks += 1;
            status.bytes += size;
        });
        self.from = self.covered;
        self.inclusive = false;
        self.opened = Instant::now();
        Ok(self.from)
    }
}
