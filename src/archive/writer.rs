//! Writes archives that stock mongorestore reads: prelude first, then interleaved blocks, one EOF per collection.

use bson::Document;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::prelude::BlockHeader;
use super::{ArchiveError, ArchiveHeader, Crc64Digest, MAGIC, Namespace, PreludeEntry, TERMINATOR};

/// What was written for one collection; goes into the manifest and is checked again by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceStats {
    /// The collection (or the oplog).
    pub namespace: Namespace,
    /// Documents written.
    pub documents: u64,
    /// Bytes of BSON written (documents only).
    pub bytes: u64,
    /// CRC-64/XZ over the documents, as stored in the archive.
    pub crc: u64,
}

struct Slot {
    stats: NamespaceStats,
    /// The name its block headers carry: the buckets of a time-series collection, else the collection.
    data_namespace: Namespace,
    digest: Crc64Digest,
    ended: bool,
}

/// Streams an archive into `out`. Documents arrive as concatenated raw BSON, never decoded.
pub struct ArchiveWriter<W> {
    out: W,
    slots: Vec<Slot>,
    bytes_written: u64,
}

impl<W: AsyncWrite + Unpin> ArchiveWriter<W> {
    /// Writes the magic and the prelude. Collections are later referred to by their index in `prelude`.
    pub async fn begin(out: W, header: &ArchiveHeader, prelude: &[PreludeEntry]) -> Result<Self, ArchiveError> {
        let mut writer = ArchiveWriter {
            out,
            slots: prelude
                .iter()
                .map(|entry| Slot {
                    stats: NamespaceStats { namespace: entry.namespace.clone(), documents: 0, bytes: 0, crc: 0 },
                    data_namespace: entry.data_namespace(&header.server_version),
                    digest: Crc64Digest::new(),
                    ended: false,
                })
                .collect(),
            bytes_written: 0,
        };
        writer.write_raw(&MAGIC.to_le_bytes()).await?;
        writer.write_document(&header.to_document()).await?;
        for entry in prelude {
            writer.write_document(&entry.to_document()).await?;
        }
        writer.write_raw(&TERMINATOR.to_le_bytes()).await?;
        Ok(writer)
    }

    /// Writes one block: `documents` holds `count` complete BSON documents back to back.
    pub async fn write_block(&mut self, ns: usize, documents: &[u8], count: u64) -> Result<(), ArchiveError> {
        if documents.is_empty() {
            return Ok(());
        }
        let slot = self.open_slot(ns)?;
        slot.digest.write(documents);
        slot.stats.documents += count;
        slot.stats.bytes += documents.len() as u64;
        let header = BlockHeader { namespace: slot.data_namespace.clone(), eof: false, crc: 0 };
        self.write_document(&header.to_document()).await?;
        self.write_raw(documents).await?;
        self.write_raw(&TERMINATOR.to_le_bytes()).await
    }

    /// Closes a collection with its EOF header carrying the CRC. Every prelude entry must be ended exactly once.
    pub async fn end_collection(&mut self, ns: usize) -> Result<(), ArchiveError> {
        let slot = self.open_slot(ns)?;
        slot.ended = true;
        slot.stats.crc = std::mem::take(&mut slot.digest).sum64();
        let header = BlockHeader { namespace: slot.data_namespace.clone(), eof: true, crc: slot.stats.crc };
        self.write_document(&header.to_document()).await?;
        self.write_raw(&TERMINATOR.to_le_bytes()).await
    }

    /// Total archive bytes written so far (uncompressed).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Flushes and hands back the output with per-collection statistics; fails if a collection was never ended,
    /// because mongorestore would wait for it forever.
    pub async fn finish(mut self) -> Result<(W, Vec<NamespaceStats>), ArchiveError> {
        if let Some(open) = self.slots.iter().find(|s| !s.ended) {
            return Err(ArchiveError::Structure(format!("{} was never ended", open.stats.namespace)));
        }
        self.out.flush().await?;
        Ok((self.out, self.slots.into_iter().map(|s| s.stats).collect()))
    }

    fn open_slot(&mut self, ns: usize) -> Result<&mut Slot, ArchiveError> {
        match self.slots.get_mut(ns) {
            Some(slot) if !slot.ended => Ok(slot),
            Some(slot) => Err(ArchiveError::Structure(format!("{} was already ended", slot.stats.namespace))),
            None => Err(ArchiveError::Structure(format!("namespace index {ns} is not in the prelude"))),
        }
    }

    async fn write_document(&mut self, doc: &Document) -> Result<(), ArchiveError> {
        let mut bytes = Vec::with_capacity(128);
        doc.to_writer(&mut bytes).map_err(|e| ArchiveError::Structure(format!("cannot encode {doc}: {e}")))?;
        self.write_raw(&bytes).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.out.write_all(bytes).await?;
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }
}
