//! Reads an archive as a stream, enforcing every rule mongorestore enforces, so a bad archive fails here, loudly,
//! instead of hanging or half-restoring.

use std::collections::HashMap;

use bson::{Document, RawDocument};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::prelude::BlockHeader;
use super::{
    ArchiveError, ArchiveHeader, Crc64Digest, MAGIC, MAX_DOCUMENT_LEN, MIN_DOCUMENT_LEN, Namespace, NamespaceStats,
    PreludeEntry, TERMINATOR,
};

/// One step through the archive body.
#[derive(Debug)]
pub enum ArchiveItem {
    /// One raw BSON document of the prelude entry at index `ns`.
    Document {
        /// Index into [`ArchiveReader::prelude`].
        ns: usize,
        /// The document bytes, exactly as stored.
        document: Vec<u8>,
    },
    /// The collection at index `ns` ended and its CRC matched.
    CollectionEnd {
        /// Index into [`ArchiveReader::prelude`].
        ns: usize,
        /// Documents, bytes and CRC read for it.
        stats: NamespaceStats,
    },
}

struct NsState {
    digest: Crc64Digest,
    documents: u64,
    bytes: u64,
    open: bool,
    ended: bool,
}

/// A streaming archive reader: memory use is one document, whatever the archive size.
pub struct ArchiveReader<R> {
    input: R,
    offset: u64,
    header: ArchiveHeader,
    prelude: Vec<PreludeEntry>,
    index: HashMap<Namespace, usize>,
    states: Vec<NsState>,
    open_count: usize,
    /// Set while inside a block of documents of that collection.
    current: Option<usize>,
    done: bool,
}

/// Result of reading a 32-bit length: a value, or a clean end of stream.
enum Word {
    Value(u32),
    EndOfStream,
}

impl<R: AsyncRead + Unpin> ArchiveReader<R> {
    /// Reads and checks the magic, header and prelude.
    pub async fn open(mut input: R) -> Result<Self, ArchiveError> {
        let mut offset = 0;
        let magic = match read_word(&mut input, &mut offset, "the magic number").await? {
            Word::Value(v) => v,
            Word::EndOfStream => {
                return Err(ArchiveError::Truncated { context: "the magic number (empty input)".into(), offset });
            }
        };
        if magic != MAGIC {
            return Err(ArchiveError::BadMagic { found: magic });
        }
        let mut reader = ArchiveReader {
            input,
            offset,
            header: ArchiveHeader::new(0, ""),
            prelude: Vec::new(),
            index: HashMap::new(),
            states: Vec::new(),
            open_count: 0,
            current: None,
            done: false,
        };
        let header = reader.read_control_document("the archive header").await?;
        reader.header = ArchiveHeader::from_document(&header)?;
        loop {
            let at = reader.offset;
            let entry = match reader.read_length("the prelude").await? {
                TERMINATOR => break,
                len => {
                    let raw = reader.read_document_body(len, "a prelude entry").await?;
                    PreludeEntry::from_document(&to_document(&raw, at)?)?
                }
            };
            // Blocks are looked up by the name they travel under (the buckets of a time-series collection).
            let data_namespace = entry.data_namespace(&reader.header.server_version);
            if reader.index.insert(data_namespace, reader.prelude.len()).is_some() {
                return Err(ArchiveError::Structure(format!("{} appears twice in the prelude", entry.namespace)));
            }
            reader.prelude.push(entry);
            reader.states.push(NsState {
                digest: Crc64Digest::new(),
                documents: 0,
                bytes: 0,
                open: false,
                ended: false,
            });
        }
        Ok(reader)
    }

    /// The archive header.
    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// The collections the archive announces, in prelude order.
    pub fn prelude(&self) -> &[PreludeEntry] {
        &self.prelude
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next document or collection end; `None` once the archive ended cleanly with every collection closed.
    pub async fn next(&mut self) -> Result<Option<ArchiveItem>, ArchiveError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(ns) = self.current {
                let context = format!("a block of {}", self.prelude[ns].namespace);
                match self.read_length(&context).await? {
                    TERMINATOR => self.current = None,
                    len => {
                        let document = self.read_document_body(len, &context).await?;
                        let state = &mut self.states[ns];
                        state.digest.write(&document);
                        state.documents += 1;
                        state.bytes += document.len() as u64;
                        return Ok(Some(ArchiveItem::Document { ns, document }));
                    }
                }
                continue;
            }
            let at = self.offset;
            let len = match read_word(&mut self.input, &mut self.offset, "a block header").await? {
                Word::EndOfStream => return self.end_of_stream().map(|()| None),
                Word::Value(TERMINATOR) => {
                    return Err(ArchiveError::Corrupt {
                        offset: at,
                        problem: "two terminators in a row (an empty block header)".into(),
                    });
                }
                Word::Value(len) => len,
            };
            let raw = self.read_document_body(len, "a block header").await?;
            let header = BlockHeader::from_raw(RawDocument::from_bytes(&raw).map_err(|e| corrupt(at, e))?, at)?;
            let ns = *self.index.get(&header.namespace).ok_or_else(|| {
                ArchiveError::Structure(format!("block for {} which the prelude does not announce", header.namespace))
            })?;
            if self.states[ns].ended {
                return Err(ArchiveError::Structure(format!("data for {} after its EOF", header.namespace)));
            }
            if header.eof {
                return self.end_collection(ns, header.crc).await.map(Some);
            }
            self.start_block(ns)?;
        }
    }

    fn start_block(&mut self, ns: usize) -> Result<(), ArchiveError> {
        let namespace = &self.prelude[ns].namespace;
        if namespace.is_oplog()
            && let Some(pending) = self.unfinished_collections().find(|p| !p.is_oplog())
        {
            return Err(ArchiveError::Structure(format!(
                "oplog data before {pending} ended; the oplog must come after every collection"
            )));
        }
        if !self.states[ns].open {
            self.states[ns].open = true;
            self.open_count += 1;
            let limit = self.header.concurrent_collections;
            if limit > 0 && self.open_count > limit as usize {
                return Err(ArchiveError::Structure(format!(
                    "{} collections are open at once but the header allows {limit} (mongorestore would deadlock)",
                    self.open_count
                )));
            }
        }
        self.current = Some(ns);
        Ok(())
    }

    async fn end_collection(&mut self, ns: usize, expected: u64) -> Result<ArchiveItem, ArchiveError> {
        let state = &mut self.states[ns];
        let actual = std::mem::take(&mut state.digest).sum64();
        state.ended = true;
        if state.open {
            state.open = false;
            self.open_count -= 1;
        }
        let namespace = self.prelude[ns].namespace.clone();
        if actual != expected {
            return Err(ArchiveError::CrcMismatch { namespace: namespace.to_string(), expected, actual });
        }
        let stats = NamespaceStats { namespace, documents: state.documents, bytes: state.bytes, crc: actual };
        let at = self.offset;
        let context = format!("the EOF block of {}", stats.namespace);
        if self.read_length(&context).await? != TERMINATOR {
            return Err(ArchiveError::Corrupt { offset: at, problem: format!("documents after {context}") });
        }
        Ok(ArchiveItem::CollectionEnd { ns, stats })
    }

    fn end_of_stream(&mut self) -> Result<(), ArchiveError> {
        if let Some(pending) = self.unfinished_collections().next() {
            return Err(ArchiveError::Truncated {
                context: format!("the data of {pending}, which never got its EOF block"),
                offset: self.offset,
            });
        }
        self.done = true;
        Ok(())
    }

    fn unfinished_collections(&self) -> impl Iterator<Item = &Namespace> {
        self.states.iter().zip(&self.prelude).filter(|(s, _)| !s.ended).map(|(_, e)| &e.namespace)
    }

    async fn read_length(&mut self, context: &str) -> Result<u32, ArchiveError> {
        match read_word(&mut self.input, &mut self.offset, context).await? {
            Word::Value(v) => Ok(v),
            Word::EndOfStream => Err(ArchiveError::Truncated { context: context.to_string(), offset: self.offset }),
        }
    }

    /// Reads the rest of a document whose length word was just read. The length is checked before any
    /// allocation, so a corrupt length can never make us allocate gigabytes.
    async fn read_document_body(&mut self, len: u32, context: &str) -> Result<Vec<u8>, ArchiveError> {
        let start = self.offset - 4;
        let len = len as usize;
        if !(MIN_DOCUMENT_LEN..=MAX_DOCUMENT_LEN).contains(&len) {
            return Err(ArchiveError::Corrupt {
                offset: start,
                problem: format!(
                    "document length {len} in {context} is outside {MIN_DOCUMENT_LEN}..={MAX_DOCUMENT_LEN} bytes"
                ),
            });
        }
        let mut document = vec![0; len];
        document[..4].copy_from_slice(&(len as u32).to_le_bytes());
        if let Err(e) = self.input.read_exact(&mut document[4..]).await {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ArchiveError::Truncated { context: context.to_string(), offset: start }
            } else {
                ArchiveError::Io(e)
            });
        }
        self.offset += (len - 4) as u64;
        if document[len - 1] != 0 {
            return Err(ArchiveError::Corrupt {
                offset: start,
                problem: format!("document in {context} does not end with a NUL byte"),
            });
        }
        Ok(document)
    }

    async fn read_control_document(&mut self, context: &str) -> Result<Document, ArchiveError> {
        let at = self.offset;
        let len = self.read_length(context).await?;
        let raw = self.read_document_body(len, context).await?;
        to_document(&raw, at)
    }
}

fn to_document(raw: &[u8], offset: u64) -> Result<Document, ArchiveError> {
    let raw = RawDocument::from_bytes(raw).map_err(|e| corrupt(offset, e))?;
    Document::try_from(raw).map_err(|e| corrupt(offset, e))
}

fn corrupt(offset: u64, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt { offset, problem: format!("invalid BSON: {e}") }
}

/// Reads a little-endian u32, telling a clean end of stream (no byte) from a truncated word.
async fn read_word<R: AsyncRead + Unpin>(input: &mut R, offset: &mut u64, context: &str) -> Result<Word, ArchiveError> {
    let mut buf = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = input.read(&mut buf[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(Word::EndOfStream);
            }
            return Err(ArchiveError::Truncated { context: context.to_string(), offset: *offset + filled as u64 });
        }
        filled += n;
    }
    *offset += 4;
    Ok(Word::Value(u32::from_le_bytes(buf)))
}
