//! The mongodump archive format: what lets `mongorestore --archive` read our backups and lets us read theirs.
//!
//! Layout (all little-endian, "DOC" = one BSON document), as mongo-tools' `common/archive` writes it:
//!
//! ```text
//! magic 0x8199E26D
//! DOC header {concurrent_collections, version "0.1", server_version, tool_version}
//! DOC per collection {db, collection, metadata (canonical Extended JSON), size, type}
//! FF FF FF FF                                  end of prelude
//! blocks, collections may interleave:
//!   DOC {db, collection, EOF:false, CRC:0}  documents…  FF FF FF FF
//! once per collection:
//!   DOC {db, collection, EOF:true, CRC}     FF FF FF FF
//! ```
//!
//! The CRC is CRC-64/XZ (Go's `crc64.ECMA` table) over the collection's concatenated documents. A time-series
//! collection's blocks name its bucket collection, `db.system.buckets.coll`, while the prelude and everything else
//! name `db.coll` ([`PreludeEntry::data_namespace`]).

mod error;
mod filter;
mod metadata;
mod prelude;
mod reader;
mod writer;

pub use error::ArchiveError;
pub use filter::NamespaceFilter;
pub use metadata::{CollectionKind, CollectionMetadata};
pub use prelude::{ArchiveHeader, Namespace, PreludeEntry, TIMESERIES_BUCKETS_PREFIX};
pub use reader::{ArchiveItem, ArchiveReader};
pub use writer::{ArchiveWriter, NamespaceStats};

/// First four bytes of every archive; how `inspect` and restore tell an archive from garbage.
pub const MAGIC: u32 = 0x8199_E26D;

/// Ends the prelude and every block of documents.
pub const TERMINATOR: u32 = 0xFFFF_FFFF;

/// The largest document mongorestore accepts (MongoDB's 16 MiB BSON limit); longer lengths mean corruption.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024 * 1024;

/// The smallest valid BSON document: a length and the trailing NUL.
pub const MIN_DOCUMENT_LEN: usize = 5;

/// The archive version every mongodump since 3.0 writes.
pub const FORMAT_VERSION: &str = "0.1";

/// A running CRC-64/XZ over one collection's documents: the checksum mongodump stores in each collection's EOF
/// header. Every archive byte goes through it on the one writer task (and the restore reader), so it uses carry-less
/// multiplication where the CPU has it; table-driven CRC was a tenth of a backup's CPU time (README, Performance).
pub type Crc64Digest = crc64fast::Digest;

#[cfg(test)]
mod tests;
