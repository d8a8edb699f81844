//! Oplog chunks: what continuous archiving stores between base backups.
//!
//! A chunk covers an interval of the oplog, `(from, to]`: it holds *every* entry of the archived namespaces whose
//! `ts` lies in it, and nothing else. Consecutive chunks meet exactly (`next.from == previous.to`), so a chain
//! from a base backup's window to a moment T proves that nothing in between is missing; a chunk can hold no
//! entries at all and still extend the chain (the server wrote only elsewhere).
//!
//! Stored as `<prefix>/oplog/<from>-<to>.bson[.zst|.gz]`, timestamps written `SECONDS.INCREMENT` with fixed widths
//! so that keys sort in time order. The object is the archive's compression around plain BSON: one header document,
//! then the entries in `ts` order. The header makes a chunk self-describing: its interval, the count, first and
//! last `ts` of its entries, and a CRC-64 and SHA-256 of the entries' bytes, checked on every read. Chunks are
//! written with `put_if_absent`, in one piece: one exists only once it is fully stored, and is never rewritten.

use bson::{Bson, Document, Timestamp, doc};
use sha2::{Digest, Sha256};

use crate::compress::Compression;
use crate::store::join_key;

/// Version of the chunk layout, in its header.
pub const CHUNK_FORMAT: i32 = 1;

/// Folder of the chunks under the store's prefix.
pub const CHUNK_DIR: &str = "oplog";

/// What a chunk covers and holds; the first document of its plain bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The chunk starts after this point: the previous chunk's `to`, or the base window's start.
    pub from: Timestamp,
    /// Whether the entry at `from` itself belongs to the chunk (a base window that opened at an open
    /// transaction's first entry).
    pub from_inclusive: bool,
    /// Every archived entry up to and including this point is in this chunk or an earlier one.
    pub to: Timestamp,
    /// Entries held.
    pub count: u64,
    /// `ts` of the first and last entries held, if any.
    pub first: Option<Timestamp>,
    /// See `first`.
    pub last: Option<Timestamp>,
    /// CRC-64 (ECMA-182, as `crc64fast` computes it) of the entries' bytes.
    pub crc64: u64,
    /// SHA-256 of the entries' bytes, lowercase hex.
    pub sha256: String,
}

/// Why chunk bytes cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Not a chunk of a format this agent reads.
    #[error("not an oplog chunk this agent reads: {0}")]
    Format(String),
    /// The bytes do not match what the header says.
    #[error("damaged: {0}")]
    Damaged(String),
}

/// A chunk found in the store, known from its key alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChunkRef {
    /// Full key.
    pub key: String,
    /// Interval start (exclusive), from the key.
    pub from: Timestamp,
    /// Interval end (inclusive), from the key.
    pub to: Timestamp,
    /// Stored bytes.
    pub size: u64,
}

/// Entries collected for the next chunk, with their running checksums.
#[derive(Default)]
pub struct ChunkBuilder {
    bytes: Vec<u8>,
    count: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    crc: crc64fast::Digest,
    sha: Sha256,
}

impl ChunkBuilder {
    /// Adds one entry (raw BSON) whose `ts` is `ts`; entries must come in `ts` order.
    pub fn push(&mut self, ts: Timestamp, entry: &[u8]) {
        self.bytes.extend_from_slice(entry);
        self.crc.write(entry);
        self.sha.update(entry);
        self.first.get_or_insert(ts);
        self.last = Some(ts);
        self.count += 1;
    }

    /// Bytes of the entries so far: what `chunk_max_bytes` bounds.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The plain bytes of the chunk covering `(from, to]` (or `[from, to]`), header first; the builder is spent.
    pub fn finish(self, from: Timestamp, from_inclusive: bool, to: Timestamp) -> (ChunkHeader, Vec<u8>) {
        let header = ChunkHeader {
            from,
            from_inclusive,
            to,
            count: self.count,
            first: self.first,
            last: self.last,
            crc64: self.crc.sum64(),
            sha256: hex::encode(self.sha.finalize()),
        };
        let mut plain = Vec::with_capacity(self.bytes.len() + 256);
        header.to_document().to_writer(&mut plain).expect("a header document encodes");
        plain.extend_from_slice(&self.bytes);
        (header, plain)
    }
}

impl ChunkHeader {
    fn to_document(&self) -> Document {
        let ts = |t: Option<Timestamp>| t.map_or(Bson::Null, Bson::Timestamp);
        doc! {
            "mba_oplog_chunk": CHUNK_FORMAT,
            "from": self.from,
            "from_inclusive": self.from_inclusive,
            "to": self.to,
            "count": self.count as i64,
            "first": ts(self.first),
            "last": ts(self.last),
            "crc64": self.crc64 as i64,
            "sha256": &self.sha256,
        }
    }

    fn from_document(d: &Document) -> Result<Self, ChunkError> {
        let bad = |what: &str| ChunkError::Format(format!("header lacks {what}"));
        match d.get_i32("mba_oplog_chunk") {
            Ok(CHUNK_FORMAT) => {}
            Ok(v) => {
                return Err(ChunkError::Format(format!("format {v}; this agent reads {CHUNK_FORMAT}: upgrade it")));
            }
            Err(_) => return Err(bad("mba_oplog_chunk")),
        }
        let ts = |key: &str| match d.get(key) {
            Some(Bson::Timestamp(t)) => Ok(Some(*t)),
            Some(Bson::Null) => Ok(None),
            _ => Err(bad(key)),
        };
        Ok(ChunkHeader {
            from: ts("from")?.ok_or_else(|| bad("from"))?,
            from_inclusive: d.get_bool("from_inclusive").map_err(|_| bad("from_inclusive"))?,
            to: ts("to")?.ok_or_else(|| bad("to"))?,
            count: d.get_i64("count").map_err(|_| bad("count"))? as u64,
            first: ts("first")?,
            last: ts("last")?,
            crc64: d.get_i64("crc64").map_err(|_| bad("crc64"))? as u64,
            sha256: d.get_str("sha256").map_err(|_| bad("sha256"))?.to_string(),
        })
    }
}

/// Reads the plain bytes of the chunk `chunk` names: the header, checked against the interval in its key, and the
/// entries checked against the header (count, order, interval, CRC-64, SHA-256). Nothing is returned from a chunk
/// that fails any check.
pub fn decode(plain: &[u8], chunk: &ChunkRef) -> Result<(ChunkHeader, Vec<Document>), ChunkError> {
    let mut rest = plain;
    let header_doc = next_document(&mut rest)?.ok_or_else(|| ChunkError::Format("empty".into()))?;
    let header = ChunkHeader::from_document(&header_doc)?;
    if (header.from, header.to) != (chunk.from, chunk.to) {
        return Err(ChunkError::Damaged(format!(
            "its header covers {}-{}, its name {}-{}",
            header.from, header.to, chunk.from, chunk.to
        )));
    }
    let (mut crc, mut sha) = (crc64fast::Digest::new(), Sha256::new());
    crc.write(rest);
    sha.update(rest);
    if crc.sum64() != header.crc64 || hex::encode(sha.finalize()) != header.sha256 {
        return Err(ChunkError::Damaged("its entries do not match the header's CRC-64 and SHA-256".into()));
    }
    let mut entries = Vec::new();
    let mut previous = None;
    while let Some(entry) = next_document(&mut rest)? {
        let ts = entry.get_timestamp("ts").map_err(|_| ChunkError::Damaged("an entry has no ts".into()))?;
        let below = if header.from_inclusive { ts < header.from } else { ts <= header.from };
        if below || ts > header.to || previous.is_some_and(|p| ts < p) {
            return Err(ChunkError::Damaged(format!("entry {ts} is out of order or outside the chunk's interval")));
        }
        previous = Some(ts);
        entries.push(entry);
    }
    let (first, last) = (entries.first(), entries.last());
    let ts_of = |e: Option<&Document>| e.and_then(|e| e.get_timestamp("ts").ok());
    if entries.len() as u64 != header.count || ts_of(first) != header.first || ts_of(last) != header.last {
        return Err(ChunkError::Damaged(format!(
            "it holds {} entries, the header says {}",
            entries.len(),
            header.count
        )));
    }
    Ok((header, entries))
}

fn next_document(rest: &mut &[u8]) -> Result<Option<Document>, ChunkError> {
    if rest.is_empty() {
        return Ok(None);
    }
    let len = rest.get(..4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let Some(len) = len.filter(|&l| l >= 5 && l <= rest.len()) else {
        return Err(ChunkError::Damaged("truncated BSON document".into()));
    };
    let document = Document::from_reader(&rest[..len]).map_err(|e| ChunkError::Damaged(e.to_string()))?;
    *rest = &rest[len..];
    Ok(Some(document))
}

/// `SECONDS.INCREMENT`, fixed width: sorts as the timestamps do.
fn key_ts(ts: Timestamp) -> String {
    format!("{:010}.{:010}", ts.time, ts.increment)
}

fn parse_key_ts(text: &str) -> Option<Timestamp> {
    let (time, increment) = text.split_once('.')?;
    Some(Timestamp { time: time.parse().ok()?, increment: increment.parse().ok()? })
}

/// File name suffix of a chunk for `compression`.
fn extension(compression: Compression) -> &'static str {
    match compression {
        Compression::Zstd => "bson.zst",
        Compression::Gzip => "bson.gz",
        Compression::None => "bson",
    }
}

/// The key of the chunk covering `(from, to]`.
pub fn chunk_key(prefix: &str, from: Timestamp, to: Timestamp, compression: Compression) -> String {
    join_key(prefix, &format!("{CHUNK_DIR}/{}-{}.{}", key_ts(from), key_ts(to), extension(compression)))
}

/// The folder listing that finds every chunk.
pub fn chunk_dir(prefix: &str) -> String {
    join_key(prefix, &format!("{CHUNK_DIR}/"))
}

/// A chunk from its key, or `None` for any other object.
pub fn parse_chunk_key(key: &str, size: u64) -> Option<ChunkRef> {
    let name = key.rsplit('/').next()?;
    let stem = name.split_once(".bson").map(|(stem, _)| stem)?;
    let (from, to) = stem.split_once('-')?;
    let (from, to) = (parse_key_ts(from)?, parse_key_ts(to)?);
    (from <= to).then(|| ChunkRef { key: key.to_string(), from, to, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    fn entry(t: Timestamp) -> Vec<u8> {
        let mut out = Vec::new();
        doc! {"ts": t, "op": "i", "ns": "a.b", "o": {"_id": t.increment as i64}}.to_writer(&mut out).unwrap();
        out
    }

    fn named(from: Timestamp, to: Timestamp) -> ChunkRef {
        ChunkRef { key: String::new(), from, to, size: 0 }
    }

    fn chunk(entries: &[Timestamp], from: Timestamp, to: Timestamp) -> Vec<u8> {
        let mut builder = ChunkBuilder::default();
        for t in entries {
            builder.push(*t, &entry(*t));
        }
        builder.finish(from, false, to).1
    }

    #[test]
    fn a_chunk_round_trips_with_its_header() {
        let plain = chunk(&[ts(10, 1), ts(10, 2), ts(11, 1)], ts(9, 9), ts(12, 0));
        let (header, entries) = decode(&plain, &named(ts(9, 9), ts(12, 0))).unwrap();
        assert_eq!((header.count, header.first, header.last), (3, Some(ts(10, 1)), Some(ts(11, 1))));
        assert_eq!((header.from, header.to), (ts(9, 9), ts(12, 0)));
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].get_timestamp("ts").unwrap(), ts(11, 1));
        let (empty, none) = decode(&chunk(&[], ts(1, 1), ts(2, 2)), &named(ts(1, 1), ts(2, 2))).unwrap();
        assert!(decode(&plain, &named(ts(9, 9), ts(12, 1))).is_err(), "a chunk under another name");
        assert_eq!((empty.count, empty.first, none.len()), (0, None, 0));
    }

    #[test]
    fn any_flipped_byte_or_cut_is_caught() {
        let plain = chunk(&[ts(10, 1), ts(10, 2)], ts(9, 9), ts(12, 0));
        for i in 0..plain.len() {
            let mut bad = plain.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, &named(ts(9, 9), ts(12, 0))).is_err(), "flip at {i} went unnoticed");
        }
        for cut in 1..plain.len() {
            assert!(decode(&plain[..cut], &named(ts(9, 9), ts(12, 0))).is_err(), "cut at {cut} went unnoticed");
        }
    }

    #[test]
    fn entries_outside_the_interval_are_refused() {
        let before = chunk(&[ts(9, 9)], ts(9, 9), ts(12, 0));
        assert!(matches!(decode(&before, &named(ts(9, 9), ts(12, 0))), Err(ChunkError::Damaged(_))));
        let after = chunk(&[ts(12, 1)], ts(9, 9), ts(12, 0));
        assert!(matches!(decode(&after, &named(ts(9, 9), ts(12, 0))), Err(ChunkError::Damaged(_))));
    }

    #[test]
    fn keys_sort_in_time_order_and_parse_back() {
        let a = chunk_key("p", ts(9, 10), ts(10, 2), Compression::Zstd);
        let b = chunk_key("p", ts(10, 2), ts(100, 1), Compression::Zstd);
        assert_eq!(a, "p/oplog/0000000009.0000000010-0000000010.0000000002.bson.zst");
        assert!(a < b);
        let parsed = parse_chunk_key(&b, 7).unwrap();
        assert_eq!((parsed.from, parsed.to, parsed.size), (ts(10, 2), ts(100, 1), 7));
        assert_eq!(parse_chunk_key("p/oplog/readme.txt", 1), None);
        assert_eq!(parse_chunk_key(&chunk_key("", ts(5, 0), ts(4, 0), Compression::None), 1), None);
    }
}
