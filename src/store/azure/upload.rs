//! Streaming upload of an archive of unknown length: read a block, stage it with its MD5 (the service verifies it),
//! keep a bounded number of blocks in flight, and commit the block list (with the archive's sha256 as metadata)
//! only after the input ended cleanly. A failed or dropped upload leaves only uncommitted blocks, which Azure
//! discards on its own.
//!
//! Blocks start at `block_size_kib` and grow in proportion to what has been uploaded so far, so a blob never needs
//! more than Azure's 50,000 blocks: the plan is sized for [`PLANNED_TOTAL`] (4 TiB, twice the 2 TB the product
//! promises). Memory is about block size × (blocks in flight + 1); as blocks grow, fewer fly at once, so it stays
//! near `upload_buffer_mib` until a single block is bigger than that.

use std::collections::HashMap;
use std::sync::Arc;

use azure_core::http::{RequestContent, XmlFormat};
use azure_storage_blob::BlockBlobClient;
use azure_storage_blob::models::{
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions, BlockLookupList,
};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::Inner;
use crate::config::azure::MAX_BLOCK_BYTES;
use crate::store::{ByteStream, DigestingReader, ObjectMeta, PutSummary, StoreError};

/// Azure's limit on blocks in one blob.
pub const MAX_BLOCKS: u64 = 50_000;
/// The archive size the growth plan guarantees to fit in [`MAX_BLOCKS`] blocks.
pub const PLANNED_TOTAL: u64 = 4 << 40;
/// Blocks kept in reserve below the limit, for safety.
const RESERVE_BLOCKS: u64 = 1_000;

/// How big the next block is, given how much has been uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    start: u64,
    /// Block size becomes `uploaded / divisor` once that exceeds `start`: each block adds 1/divisor to the total,
    /// a geometric growth whose rate is the largest that still fits [`PLANNED_TOTAL`].
    divisor: u64,
}

impl BlockPlan {
    /// The plan for a first block of `start` bytes.
    pub fn new(start: u64) -> Self {
        let start = start.clamp(1, MAX_BLOCK_BYTES);
        let fits = |divisor| BlockPlan { start, divisor }.blocks_for(PLANNED_TOTAL) <= MAX_BLOCKS - RESERVE_BLOCKS;
        // Bigger divisors grow later (smaller blocks, more of them); find the biggest that still fits.
        let (mut low, mut high) = (1u64, MAX_BLOCKS);
        while low < high {
            let mid = (low + high).div_ceil(2);
            if fits(mid) { low = mid } else { high = mid - 1 }
        }
        BlockPlan { start, divisor: low }
    }

    /// Size of the block that starts after `uploaded` bytes.
    pub fn block_size(&self, uploaded: u64) -> u64 {
        let proportional = uploaded.div_ceil(self.divisor);
        // Multiples of the first size keep allocations uniform.
        let size = proportional.max(self.start).div_ceil(self.start).saturating_mul(self.start);
        size.min(MAX_BLOCK_BYTES.max(self.start))
    }

    /// Blocks needed for `total` bytes (stops counting past the limit).
    pub fn blocks_for(&self, total: u64) -> u64 {
        let (mut done, mut blocks) = (0u64, 0u64);
        while done < total && blocks <= MAX_BLOCKS {
            done = done.saturating_add(self.block_size(done));
            blocks += 1;
        }
        blocks
    }
}

/// Reads up to `size` bytes: fewer only at the end of the stream.
async fn read_block<R: AsyncRead + Unpin>(input: &mut R, size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let room = size - buf.len();
        let n = input.read_buf(&mut (&mut buf).limit(room)).await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Blob metadata names must be C# identifiers: `backup-id` becomes `backup_id`.
fn blob_metadata(meta: &ObjectMeta) -> Result<HashMap<String, String>, StoreError> {
    let mut out = HashMap::new();
    for (name, value) in meta {
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let valid_value = value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        if !valid_name || !valid_value {
            return Err(StoreError::Backend(format!(
                "metadata {name}={value:?} cannot be stored on an Azure blob (names are identifiers, values ASCII)"
            )));
        }
        out.insert(name, value.trim().to_string());
    }
    Ok(out)
}

/// Block ids must all have the same length; a random per-upload nonce keeps two uploads of one key apart.
fn block_id(nonce: u64, index: usize) -> Vec<u8> {
    format!("{nonce:016x}-{index:07}").into_bytes()
}

async fn stage(
    inner: Arc<Inner>,
    blob: Arc<BlockBlobClient>,
    key: Arc<str>,
    id: Vec<u8>,
    data: Bytes,
) -> Result<(), StoreError> {
    let for_hash = data.clone();
    let md5 = tokio::task::spawn_blocking(move || {
        use md5::Digest;
        md5::Md5::digest(&for_hash).to_vec()
    })
    .await
    .map_err(|e| StoreError::Backend(format!("hashing a block of {key} failed: {e}")))?;
    let options = BlockBlobClientStageBlockOptions { transactional_content_md5: Some(md5), ..Default::default() };
    blob.stage_block(&id, data.len() as u64, data.into(), Some(options))
        .await
        .map_err(|e| inner.whereabouts.failure("write", &key, e))?;
    Ok(())
}

fn joined(result: Result<Result<(), StoreError>, tokio::task::JoinError>, key: &str) -> Result<(), StoreError> {
    result.map_err(|e| StoreError::Backend(format!("a block upload task of {key} died: {e}")))?
}

pub(super) async fn put_stream(
    inner: &Arc<Inner>,
    key: &str,
    body: ByteStream,
    meta: &ObjectMeta,
) -> Result<PutSummary, StoreError> {
    let mut metadata = blob_metadata(meta)?;
    let blob = Arc::new(inner.blob(key)?.block_blob_client());
    let key_arc: Arc<str> = Arc::from(key);
    let tuning = &inner.tuning;
    let mut input = DigestingReader::new(body);
    let nonce = rand::random::<u64>();
    // Dropping the set (error or cancelled future) aborts the uploads still in flight; nothing is committed.
    let mut in_flight: JoinSet<Result<(), StoreError>> = JoinSet::new();
    let mut ids: Vec<Vec<u8>> = Vec::new();
    loop {
        let size = tuning.plan.block_size(input.bytes());
        let block = read_block(&mut input, size as usize)
            .await
            .map_err(|source| StoreError::Input { key: key.to_string(), source })?;
        if block.is_empty() {
            break;
        }
        if ids.len() as u64 >= MAX_BLOCKS {
            return Err(StoreError::Backend(format!(
                "{key} is larger than {} GiB, more than one Azure blob can hold with storage.block_size_kib = {}; \
                 raise storage.block_size_kib",
                input.bytes() >> 30,
                tuning.plan.start / 1024
            )));
        }
        let last = (block.len() as u64) < size;
        while in_flight.len() >= tuning.blocks_in_flight(size) {
            let done = in_flight.join_next().await.expect("set is not empty");
            joined(done, key)?;
        }
        while let Some(done) = in_flight.try_join_next() {
            joined(done, key)?;
        }
        let id = block_id(nonce, ids.len());
        ids.push(id.clone());
        in_flight.spawn(stage(inner.clone(), blob.clone(), key_arc.clone(), id, block));
        if last {
            break;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        joined(done, key)?;
    }
    let summary = input.summary();
    metadata.insert("sha256".into(), summary.sha256.clone());
    metadata.insert("size".into(), summary.bytes.to_string());
    let list = BlockLookupList { latest: Some(ids), ..Default::default() };
    let content: RequestContent<BlockLookupList, XmlFormat> =
        list.try_into().map_err(|e| inner.whereabouts.failure("write", key, e))?;
    let options = BlockBlobClientCommitBlockListOptions {
        metadata: Some(metadata),
        blob_content_type: Some("application/octet-stream".into()),
        ..Default::default()
    };
    blob.commit_block_list(content, Some(options)).await.map_err(|e| inner.whereabouts.failure("write", key, e))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn two_terabytes_fit_whatever_the_first_block() {
        for start in [1024, 64 * 1024, MIB, 4 * MIB, 8 * MIB, 100 * MIB, MAX_BLOCK_BYTES] {
            let plan = BlockPlan::new(start);
            let blocks = plan.blocks_for(2_000_000_000_000);
            assert!(blocks <= MAX_BLOCKS, "start {start}: 2 TB needs {blocks} blocks");
            assert!(plan.blocks_for(PLANNED_TOTAL) <= MAX_BLOCKS, "start {start}: 4 TiB does not fit");
        }
    }

    #[test]
    fn blocks_stay_at_the_first_size_for_ordinary_archives_and_grow_monotonically() {
        let plan = BlockPlan::new(8 * MIB);
        assert_eq!(plan.block_size(5 << 30), 8 * MIB, "a 5 GiB archive uses only first-size blocks");
        let mut last = 0;
        let mut uploaded = 0;
        while uploaded < PLANNED_TOTAL {
            let size = plan.block_size(uploaded);
            assert!(size >= last && size <= MAX_BLOCK_BYTES);
            last = size;
            uploaded += size;
        }
        assert!(last < 1 << 30, "the last block of 4 TiB is {last} bytes");
    }

    #[test]
    fn a_tiny_first_block_grows_past_fifty_thousand_first_size_blocks() {
        let plan = BlockPlan::new(1024);
        let total = 64 * MIB; // 65,536 first-size blocks
        let blocks = plan.blocks_for(total);
        assert!(blocks < 50_000, "{blocks}");
    }

    #[test]
    fn metadata_names_become_identifiers() {
        let meta: ObjectMeta = [("backup-id".to_string(), "2024-01-01T00-00-00Z".to_string())].into();
        assert_eq!(blob_metadata(&meta).unwrap()["backup_id"], "2024-01-01T00-00-00Z");
        let bad: ObjectMeta = [("x".to_string(), "é".to_string())].into();
        assert!(blob_metadata(&bad).is_err());
        assert_eq!(block_id(1, 49_999).len(), block_id(u64::MAX, 0).len());
    }
}
