//! Why an archive could not be read or written, in words that say where and what to do.

/// Everything that can be wrong with an archive. Each message names the namespace or byte offset involved.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The stream does not start with the archive magic number.
    #[error(
        "not a mongodump archive: first bytes are {found:#010x}, expected {expected:#010x} (is it compressed with something other than gzip/zstd, or not an archive at all?)",
        expected = super::MAGIC
    )]
    BadMagic {
        /// The four bytes found instead.
        found: u32,
    },
    /// The stream ended somewhere other than a block boundary.
    #[error("archive is truncated: it ends inside {context} at byte {offset}; the upload or copy was incomplete")]
    Truncated {
        /// What was being read when the data ran out.
        context: String,
        /// Byte offset of the end of the data.
        offset: u64,
    },
    /// A document length outside what MongoDB allows, or a document without its trailing NUL.
    #[error("archive is corrupt at byte {offset}: {problem}")]
    Corrupt {
        /// Byte offset where the problem starts.
        offset: u64,
        /// What is wrong there.
        problem: String,
    },
    /// A collection's documents do not match the checksum in its EOF header.
    #[error(
        "CRC mismatch for {namespace}: archive says {expected:#018x}, documents give {actual:#018x}; the archive is damaged"
    )]
    CrcMismatch {
        /// The collection.
        namespace: String,
        /// CRC stored in the archive.
        expected: u64,
        /// CRC computed over the documents read.
        actual: u64,
    },
    /// A collection's metadata (options, indexes) is not valid Extended JSON.
    #[error("bad metadata for {namespace}: {problem}")]
    BadMetadata {
        /// The collection.
        namespace: String,
        /// What the parser said.
        problem: String,
    },
    /// The archive breaks a structural rule mongorestore relies on.
    #[error("invalid archive structure: {0}")]
    Structure(String),
    /// Reading or writing the underlying stream failed.
    #[error("archive I/O failed: {0}")]
    Io(#[from] std::io::Error),
}
