//! Streams a collection's documents as raw BSON bytes, never decoding them.

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

/// Opens a natural-order cursor over `ns` (a `$natural` hint: no index, no sort, like mongodump).
pub async fn open_cursor(client: &Client, ns: &Namespace, batch_size: u32) -> Result<Cursor<RawDocumentBuf>> {
    client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.collection)
        .find(doc! {})
        .hint(Hint::Keys(doc! {"$natural": 1}))
        .batch_size(batch_size)
        .await
        .map_err(Error::mongo(format!("reading {ns}")))
}

/// The next batch of about [`BLOCK_TARGET_BYTES`] from `cursor`, or `None` when it is exhausted.
/// `what` names the source in errors.
pub async fn next_batch(cursor: &mut Cursor<RawDocumentBuf>, what: &str) -> Result<Option<DocumentBatch>> {
    let mut batch = DocumentBatch::default();
    while batch.bytes.len() < BLOCK_TARGET_BYTES
        && cursor.advance().await.map_err(Error::mongo(format!("reading {what}")))?
    {
        batch.bytes.extend_from_slice(cursor.current().as_bytes());
        batch.count += 1;
    }
    Ok((batch.count > 0).then_some(batch))
}
