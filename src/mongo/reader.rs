//! Streams a collection's documents as raw BSON bytes, never decoding them.

use std::future::IntoFuture as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bson::{RawDocumentBuf, doc};
use mongodb::options::Hint;
use mongodb::{Client, Cursor};

use crate::archive::Namespace;
use crate::error::{Error, Result};

/// Documents gathered into one archive block: raw BSON back to back.
#[derive(Debug, Default)]
pub struct DocumentBatch {
    /// Concatenated documents.
    pub bytes: Vec<u8>,
    /// How many.
    pub count: u64,
}

/// Target size of one archive block; large enough to amortise headers, small enough to bound memory.
pub const BLOCK_TARGET_BYTES: usize = 4 << 20;

/// The server batch size for a collection of `size_bytes` in `documents`: at most `configured` documents and, going
/// by the average document, about one block's worth of bytes. The driver holds a whole server batch (up to 16 MiB)
/// while we copy it into blocks, so without this bound each of the parallel readers of a collection of large
/// documents would hold 16 MiB more than a block.
pub fn bounded_batch_size(configured: u32, size_bytes: u64, documents: u64) -> u32 {
    let average = size_bytes.checked_div(documents).unwrap_or(0).max(1);
    let by_bytes = (BLOCK_TARGET_BYTES as u64 / average).max(1);
    configured.min(u32::try_from(by_bytes).unwrap_or(u32::MAX))
}

/// Opens a natural-order cursor over `ns` (a `$natural` hint: no index, no sort, like mongodump). The `find` brings
/// the first batch, so it is bounded by the stall timeout like every later batch.
pub async fn open_cursor(client: &Client, ns: &Namespace, batch_size: u32) -> Result<Cursor<RawDocumentBuf>> {
    let collection = client.database(&ns.db).collection::<RawDocumentBuf>(&ns.collection);
    let find = collection.find(doc! {}).hint(Hint::Keys(doc! {"$natural": 1})).batch_size(batch_size);
    within_stall_limit(&format!("reading {ns}"), find.into_future()).await
}

/// Awaits one read, failing with [`Error::Stalled`] naming `what` after the stall timeout.
pub(crate) async fn within_stall_limit<T>(
    what: &str,
    read: impl std::future::Future<Output = mongodb::error::Result<T>>,
) -> Result<T> {
    let limit = Duration::from_millis(STALL_TIMEOUT_MS.load(Ordering::Relaxed));
    match tokio::time::timeout(limit, read).await {
        Ok(result) => result.map_err(Error::mongo(what)),
        Err(_) => Err(Error::Stalled { what: what.to_string(), after: limit }),
    }
}

/// How long a cursor may go without returning a document before the read fails, in milliseconds:
/// `backup.stall_timeout`, set by [`set_stall_timeout`] when a backup starts. Process-wide because the readers run
/// in spawned tasks that carry no per-backup context, and one process runs one backup at a time.
static STALL_TIMEOUT_MS: AtomicU64 = AtomicU64::new(10 * 60 * 1000);

/// Sets how long [`next_batch`] waits for a cursor to make progress (`backup.stall_timeout`).
pub fn set_stall_timeout(limit: Duration) {
    STALL_TIMEOUT_MS.store(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The next batch of about [`BLOCK_TARGET_BYTES`] from `cursor`, or `None` when it is exhausted.
/// `what` names the source in errors. A cursor that yields nothing for the stall timeout fails with
/// [`Error::Stalled`] naming `what`: the driver has no socket timeout, so a hung server would otherwise hang the
/// backup for good.
pub async fn next_batch(cursor: &mut Cursor<RawDocumentBuf>, what: &str) -> Result<Option<DocumentBatch>> {
    let what = format!("reading {what}");
    let mut batch = DocumentBatch { bytes: Vec::with_capacity(BLOCK_TARGET_BYTES), count: 0 };
    while batch.bytes.len() < BLOCK_TARGET_BYTES && within_stall_limit(&what, cursor.advance()).await? {
        let document = cursor.current().as_bytes();
        // The document that crosses the target grows the block by exactly its size, not to double the capacity:
        // queued blocks are most of the backup's memory.
        batch.bytes.reserve_exact(document.len());
        batch.bytes.extend_from_slice(document);
        batch.count += 1;
    }
    Ok((batch.count > 0).then_some(batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_batches_hold_about_one_block() {
        let mib = 1u64 << 20;
        // Small documents: the configured count is the bound.
        assert_eq!(bounded_batch_size(10_000, 250 * 1_000_000, 1_000_000), 10_000);
        // 4 KB documents: about a block's worth.
        assert_eq!(bounded_batch_size(10_000, 4096 * 1_000_000, 1_000_000), 1024);
        // Documents larger than a block: one at a time.
        assert_eq!(bounded_batch_size(10_000, 300 * 3 * mib, 300), 1);
        // No statistics (empty or new collection): the configured count.
        assert_eq!(bounded_batch_size(10_000, 0, 0), 10_000);
        assert_eq!(bounded_batch_size(10_000, 5 * mib, 0), 10_000);
    }
}
