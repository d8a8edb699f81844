//! What the archive fuzz targets share: reading a whole archive from memory the way restore reads it.

use futures::executor::block_on;
use std::collections::HashMap;

use mongo_backup_agent::archive::{ArchiveError, ArchiveItem, ArchiveReader, Crc64Digest};

/// Reads every item of the archive in `bytes`, stopping at the first error. A slice never returns `Pending`,
/// so a plain executor drives the async reader without a runtime per input.
pub fn read_archive(bytes: &[u8]) -> Result<Vec<ArchiveItem>, ArchiveError> {
    block_on(async {
        let mut reader = ArchiveReader::open(bytes).await?;
        let mut items = Vec::new();
        while let Some(item) = reader.next().await? {
            items.push(item);
        }
        Ok(items)
    })
}

/// Checks what must hold for any archive the reader accepted: each collection's reported documents, bytes and CRC
/// are those of the documents it yielded, and every yielded document is valid BSON.
pub fn check_consistent(items: &[ArchiveItem]) {
    let mut seen: HashMap<usize, (u64, u64, Crc64Digest)> = HashMap::new();
    for item in items {
        match item {
            ArchiveItem::Document { ns, document } => {
                bson::RawDocument::from_bytes(document).expect("a yielded document is valid BSON");
                let entry = seen.entry(*ns).or_default();
                entry.0 += 1;
                entry.1 += document.len() as u64;
                entry.2.write(document);
            }
            ArchiveItem::CollectionEnd { ns, stats } => {
                let (documents, bytes, digest) = seen.remove(ns).unwrap_or_default();
                assert_eq!((stats.documents, stats.bytes), (documents, bytes), "stats of {}", stats.namespace);
                assert_eq!(stats.crc, digest.sum64(), "CRC of {}", stats.namespace);
            }
        }
    }
}
