//! The archive's prelude: the header document and one entry per collection, written before any data.

use bson::{Bson, Document, RawDocument, doc};

use super::{ArchiveError, FORMAT_VERSION};

/// A database + collection pair; the archive's unit of interleaving.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Namespace {
    /// Database name; empty for the oplog entry.
    pub db: String,
    /// Collection name.
    pub collection: String,
}

impl Namespace {
    /// Builds a namespace from its parts.
    pub fn new(db: impl Into<String>, collection: impl Into<String>) -> Self {
        Namespace { db: db.into(), collection: collection.into() }
    }

    /// The pseudo-namespace mongodump uses for the oplog slice taken during the dump.
    pub fn oplog() -> Self {
        Namespace::new("", "oplog")
    }

    /// Whether this is the archive's oplog pseudo-namespace.
    pub fn is_oplog(&self) -> bool {
        self.db.is_empty() && self.collection == "oplog"
    }

    /// Parses `db.collection` (the collection part may itself contain dots).
    pub fn parse(full: &str) -> Option<Self> {
        let (db, collection) = full.split_once('.')?;
        (!db.is_empty() && !collection.is_empty()).then(|| Namespace::new(db, collection))
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_oplog() { f.write_str("oplog") } else { write!(f, "{}.{}", self.db, self.collection) }
    }
}

/// The archive header document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// How many collections the writer interleaves at most; mongorestore sizes its demultiplexer by it.
    pub concurrent_collections: i32,
    /// Archive format version, "0.1".
    pub version: String,
    /// Version of the server that was dumped.
    pub server_version: String,
    /// Version of the tool that wrote the archive.
    pub tool_version: String,
}

impl ArchiveHeader {
    /// A header for an archive written by this agent.
    pub fn new(concurrent_collections: i32, server_version: &str) -> Self {
        ArchiveHeader {
            concurrent_collections,
            version: FORMAT_VERSION.to_string(),
            server_version: server_version.to_string(),
            tool_version: format!("mongo-backup-agent {}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub(super) fn to_document(&self) -> Document {
        doc! {
            "concurrent_collections": self.concurrent_collections,
            "version": &self.version,
            "server_version": &self.server_version,
            "tool_version": &self.tool_version,
        }
    }

    pub(super) fn from_document(doc: &Document) -> Result<Self, ArchiveError> {
        let bad = |what: &str| ArchiveError::Structure(format!("archive header: {what}"));
        let concurrent_collections = integer(doc.get("concurrent_collections"))
            .ok_or_else(|| bad("concurrent_collections is missing or not a number"))?;
        let version = doc.get_str("version").map_err(|_| bad("version is missing"))?.to_string();
        if version != FORMAT_VERSION {
            return Err(bad(&format!("unsupported archive version {version:?}, expected {FORMAT_VERSION:?}")));
        }
        Ok(ArchiveHeader {
            concurrent_collections: i32::try_from(concurrent_collections)
                .map_err(|_| bad("concurrent_collections out of range"))?,
            version,
            server_version: doc.get_str("server_version").unwrap_or_default().to_string(),
            tool_version: doc.get_str("tool_version").unwrap_or_default().to_string(),
        })
    }
}

/// One collection announced in the prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreludeEntry {
    /// Which collection.
    pub namespace: Namespace,
    /// The metadata string exactly as stored: canonical Extended JSON (see [`super::CollectionMetadata`]).
    pub metadata: String,
    /// The collection type string ("collection", "view", "timeseries"); empty in archives from old mongodumps.
    pub kind: String,
}

impl PreludeEntry {
    /// The namespace this entry's documents travel under in the blocks. mongodump 100.x announces a time-series
    /// collection `db.coll` in the prelude but sends its buckets as `db.system.buckets.coll`, except from servers
    /// 8.3 and newer, whose time-series collections have no separate bucket collection (mongo-tools
    /// `common/archive/demultiplexer.go`). `server_version` is the archive header's: the dumped server's.
    pub fn data_namespace(&self, server_version: &str) -> Namespace {
        if self.kind == "timeseries" && !has_viewless_timeseries(server_version) {
            Namespace::new(&self.namespace.db, format!("{TIMESERIES_BUCKETS_PREFIX}{}", self.namespace.collection))
        } else {
            self.namespace.clone()
        }
    }

    pub(super) fn to_document(&self) -> Document {
        doc! {
            "db": &self.namespace.db,
            "collection": &self.namespace.collection,
            "metadata": &self.metadata,
            "size": 0_i32,
            "type": &self.kind,
        }
    }

    pub(super) fn from_document(doc: &Document) -> Result<Self, ArchiveError> {
        let field = |key: &str| {
            doc.get_str(key).map(str::to_string).map_err(|_| {
                ArchiveError::Structure(format!("prelude collection entry has no string field {key:?}: {doc}"))
            })
        };
        Ok(PreludeEntry {
            namespace: Namespace::new(field("db")?, field("collection")?),
            metadata: doc.get_str("metadata").unwrap_or_default().to_string(),
            kind: doc.get_str("type").unwrap_or_default().to_string(),
        })
    }
}

/// Where a time-series collection's buckets live on servers before 8.3: `db.system.buckets.<name>`.
pub const TIMESERIES_BUCKETS_PREFIX: &str = "system.buckets.";

/// Whether a server of this version keeps time-series buckets under the collection's own name (8.3+); a version
/// that does not parse counts as older, as in mongo-tools.
fn has_viewless_timeseries(server_version: &str) -> bool {
    let mut parts = server_version.split(['.', '-', '+']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (8, 3),
        _ => false,
    }
}

/// The header in front of every block of documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlockHeader {
    pub namespace: Namespace,
    pub eof: bool,
    pub crc: u64,
}

impl BlockHeader {
    pub fn to_document(&self) -> Document {
        doc! {
            "db": &self.namespace.db,
            "collection": &self.namespace.collection,
            "EOF": self.eof,
            // Stored bit-for-bit as a signed int64, as Go's int64(crc) does.
            "CRC": self.crc as i64,
        }
    }

    /// Applies mongorestore's rules: only db/collection/EOF/CRC, EOF a bool, CRC an int64.
    pub fn from_raw(raw: &RawDocument, offset: u64) -> Result<Self, ArchiveError> {
        let bad = |problem: String| ArchiveError::Corrupt { offset, problem };
        let doc = Document::try_from(raw).map_err(|e| bad(format!("unreadable block header: {e}")))?;
        let (mut db, mut collection, mut eof, mut crc) = (None, None, None, None);
        for (key, value) in &doc {
            match (key.as_str(), value) {
                ("db", Bson::String(s)) => db = Some(s.clone()),
                ("collection", Bson::String(s)) => collection = Some(s.clone()),
                ("EOF", Bson::Boolean(b)) => eof = Some(*b),
                ("CRC", Bson::Int64(c)) => crc = Some(*c as u64),
                _ => return Err(bad(format!("unexpected field {key:?} = {value} in block header {doc}"))),
            }
        }
        match (db, collection) {
            (Some(db), Some(collection)) => Ok(BlockHeader {
                namespace: Namespace::new(db, collection),
                eof: eof.unwrap_or(false),
                crc: crc.unwrap_or(0),
            }),
            _ => Err(bad(format!("block header without db and collection: {doc}"))),
        }
    }
}

fn integer(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}
