//! Reading a backup's slice: the entries of its window in `ts` order, filtered for its namespaces, and the proof
//! that none is missing.
//!
//! The slice is read in the oplog's natural order, which is `ts` order on every server we know (a sort by `ts`
//! would need a blocking sort on mongod, whose oplog has no `ts` index); an entry out of order fails the backup
//! rather than being trusted. Once the slice is read, the oplog's oldest entry must still be at or before the
//! window's start: the oplog is pruned oldest first, so then nothing of the slice was pruned before it was read.

use std::collections::HashSet;
use std::future::IntoFuture;

use bson::{Document, RawDocument, RawDocumentBuf, Timestamp, doc};
use mongodb::{Client, Cursor};

use super::capture::SliceFilter;
use super::window::{WindowStart, format_ts};
use crate::archive::{Namespace, NamespaceFilter};
use crate::error::{Error, Result};
use crate::mongo::{BLOCK_TARGET_BYTES, DocumentBatch, bounded, within_stall_limit};

/// A slice being read.
pub struct Slice<'a> {
    cursor: Cursor<RawDocumentBuf>,
    filter: SliceFilter<'a>,
    last: Option<Timestamp>,
}

impl<'a> Slice<'a> {
    /// Opens the slice of `start..=end` for a backup of `filter`'s namespaces whose dump read `listed`.
    pub async fn open(
        client: &Client,
        start: WindowStart,
        end: Timestamp,
        filter: &'a NamespaceFilter,
        listed: &'a HashSet<Namespace>,
    ) -> Result<Slice<'a>> {
        let lower = if start.inclusive { "$gte" } else { "$gt" };
        let oplog = oplog(client);
        let find = oplog.find(doc! {"ts": {lower: start.ts, "$lte": end}});
        let cursor = within_stall_limit("reading the oplog slice", find.into_future()).await?;
        Ok(Slice { cursor, filter: SliceFilter::new(filter, listed), last: None })
    }

    /// The next block of kept entries, about [`BLOCK_TARGET_BYTES`], or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<DocumentBatch>> {
        let mut batch = DocumentBatch::default();
        while batch.bytes.len() < BLOCK_TARGET_BYTES
            && within_stall_limit("reading the oplog slice", self.cursor.advance()).await?
        {
            let (_, entry) = ordered_entry(self.cursor.current(), &mut self.last)?;
            let Some(kept) = self.filter.keep(entry).map_err(|e| Error::Refused(e.to_string()))? else { continue };
            kept.to_writer(&mut batch.bytes)
                .map_err(|e| Error::Refused(format!("cannot encode an oplog entry: {e}")))?;
            batch.count += 1;
        }
        Ok((batch.count > 0).then_some(batch))
    }

    /// Fails unless the slice read so far drops (or renames away) each of `vanished`: collections the dump listed
    /// that were gone when it read them. One gone without a trace in the slice would be restored as it was listed,
    /// although the source no longer had it: the server's catalog and its oplog disagreed about when it went.
    pub fn explain_vanished(&self, vanished: &[Namespace], end: Timestamp) -> Result<()> {
        match vanished.iter().find(|ns| !self.filter.drops(ns)) {
            None => Ok(()),
            Some(ns) => Err(Error::Refused(format!(
                "{ns} vanished while the backup read it, but the oplog up to {} neither drops nor renames it, so the \
                 backup cannot tell what the source held: run the backup again",
                format_ts(end)
            ))),
        }
    }
}

/// Parses an oplog entry read in natural order, and fails unless it comes after `last` (then moved to it): an
/// entry out of `ts` order means the read cannot be trusted to hold everything.
pub(crate) fn ordered_entry(raw: &RawDocument, last: &mut Option<Timestamp>) -> Result<(Timestamp, Document)> {
    let entry = Document::try_from(raw)
        .map_err(|e| Error::Refused(format!("the oplog holds an entry that is not valid BSON: {e}")))?;
    match entry.get_timestamp("ts").ok() {
        Some(ts) if Some(ts) >= *last => {
            *last = Some(ts);
            Ok((ts, entry))
        }
        ts => Err(Error::Refused(format!(
            "the oplog returned entry {} after {}: not in ts order, so the read cannot be trusted",
            ts.map_or("without ts".into(), format_ts),
            last.map_or("nothing".into(), format_ts)
        ))),
    }
}

/// Fails if the oplog no longer reaches back to `start`: entries of the slice were pruned before they were read.
/// Call after the slice is read. `dump_started` dates the message.
pub async fn check_not_rolled_over(
    client: &Client,
    start: WindowStart,
    dump_started: std::time::Instant,
) -> Result<()> {
    match oldest_entry(client).await? {
        Some(oldest) if oldest <= start.ts => Ok(()),
        oldest => Err(Error::Refused(format!(
            "the oplog rolled over during the backup: its oldest entry is now {}, after the window's start {}; the \
             dump took {}s, longer than the oplog holds writes: enlarge the oplog (replSetResizeOplog) or back up \
             less per run",
            oldest.map_or("gone".into(), format_ts),
            format_ts(start.ts),
            dump_started.elapsed().as_secs()
        ))),
    }
}

/// `ts` of the oplog's oldest entry: the oplog is pruned oldest first, so every entry after it is still there.
pub(crate) async fn oldest_entry(client: &Client) -> Result<Option<Timestamp>> {
    let oplog = oplog(client);
    let find = oplog.find_one(doc! {}).projection(doc! {"ts": 1});
    Ok(bounded("reading the oldest oplog entry", find).await?.and_then(|d| d.get_timestamp("ts").ok()))
}

pub(crate) fn oplog(client: &Client) -> mongodb::Collection<RawDocumentBuf> {
    client.database("local").collection("oplog.rs")
}
