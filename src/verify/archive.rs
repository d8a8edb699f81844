//! The stored-archive checks of `verify`: one streaming pass that hashes the stored bytes while the archive reader
//! parses the decompressed stream, then a comparison of what was read with the manifest.

use std::collections::BTreeMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Check, Problem, VerifyReport};
use crate::archive::{ArchiveError, ArchiveItem, ArchiveReader, NamespaceStats};
use crate::backup::{Manifest, archive_key};
use crate::compress::{self, Compression};
use crate::crypt::{self, Identities};
use crate::error::{Error, Result};
use crate::store::{DigestingReader, ObjectStore, PutSummary, StoreError};

/// Bytes in flight between the store reader and the archive parser.
const PIPE_BYTES: usize = 1 << 20;

/// What parsing the decompressed archive found; parsing never fails as such, it records where it stopped.
struct Parsed {
    /// Compression detected from the stored bytes.
    compression: Option<Compression>,
    /// Namespaces the prelude announces, when the prelude could be read.
    prelude: Option<Vec<String>>,
    /// Namespaces read to their EOF, with the archive's own counts and CRCs.
    ended: Vec<NamespaceStats>,
    /// Documents read.
    documents: u64,
    /// Where reading stopped, if the archive did not end cleanly.
    failure: Option<ArchiveError>,
}

/// Re-reads backup `manifest.id` under `prefix` and checks it against its manifest. What the daemon runs after each
/// backup when `verify.after_backup` is set, and what `verify` runs first. An encrypted backup without
/// `identities` (the VM holds none) gets the checks of the stored bytes only: size and sha256.
pub async fn verify(
    store: &dyn ObjectStore,
    prefix: &str,
    manifest: &Manifest,
    identities: Option<&Identities>,
) -> Result<VerifyReport> {
    let key = archive_key(prefix, &manifest.id, manifest.compression);
    let mut report = VerifyReport {
        id: manifest.id.clone(),
        archive_key: key.clone(),
        stored_bytes: 0,
        namespaces_checked: 0,
        documents: 0,
        contents_checked: manifest.encryption.is_none() || identities.is_some(),
        problems: Vec::new(),
    };
    let stored = match store.get_stream(&key).await {
        Ok(stream) => stream,
        Err(StoreError::NotFound { .. }) => {
            let detail = format!("archive {key} is missing from {}", store.describe());
            report.problems.push(Problem::archive(Check::Archive, detail));
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    let (into_parser, parser_input) = tokio::io::duplex(PIPE_BYTES);
    let contents = report.contents_checked.then_some(parser_input);
    let parse = async {
        match contents {
            Some(input) => Some(parse(input, identities, manifest).await),
            None => None,
        }
    };
    let (summary, parsed) = tokio::join!(forward(stored, into_parser), parse);
    let summary = summary.map_err(|source| Error::Io {
        action: format!("reading archive {key} from {} for verification", store.describe()),
        source,
    })?;
    report.stored_bytes = summary.bytes;
    compare_stored(&mut report, manifest, &summary, parsed.as_ref().and_then(|p| p.compression));
    if let Some(parsed) = parsed {
        report.documents = parsed.documents;
        compare_parsed(&mut report, manifest, parsed);
    }
    Ok(report)
}

/// Copies the stored bytes to the parser while hashing them. If the parser stops early (a damaged archive), the
/// rest is still read and hashed, so the sha256 check always covers the whole object.
async fn forward(stored: impl AsyncRead + Unpin, mut parser: tokio::io::DuplexStream) -> std::io::Result<PutSummary> {
    let mut input = DigestingReader::new(stored);
    let mut buf = vec![0u8; 256 << 10];
    let mut parser_listening = true;
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if parser_listening && parser.write_all(&buf[..n]).await.is_err() {
            parser_listening = false;
        }
    }
    drop(parser);
    Ok(input.summary())
}

async fn parse(input: tokio::io::DuplexStream, identities: Option<&Identities>, manifest: &Manifest) -> Parsed {
    let mut parsed = Parsed { compression: None, prelude: None, ended: Vec::new(), documents: 0, failure: None };
    let what = format!("backup {}", manifest.id);
    let input = match crypt::open(input, identities, &what, manifest.encryption.as_ref()).await {
        Ok((_, input)) => input,
        Err(e) => {
            parsed.failure = Some(ArchiveError::Io(std::io::Error::other(e)));
            return parsed;
        }
    };
    let (compression, plain) = match compress::decoder(input).await {
        Ok(found) => found,
        Err(e) => {
            parsed.failure = Some(ArchiveError::Io(e));
            return parsed;
        }
    };
    parsed.compression = Some(compression);
    let mut reader = match ArchiveReader::open(plain).await {
        Ok(reader) => reader,
        Err(e) => {
            parsed.failure = Some(e);
            return parsed;
        }
    };
    parsed.prelude = Some(reader.prelude().iter().map(|e| e.namespace.to_string()).collect());
    loop {
        match reader.next().await {
            Ok(Some(ArchiveItem::Document { .. })) => parsed.documents += 1,
            Ok(Some(ArchiveItem::CollectionEnd { stats, .. })) => parsed.ended.push(stats),
            Ok(None) => return parsed,
            Err(e) => {
                parsed.failure = Some(e);
                return parsed;
            }
        }
    }
}

fn compare_stored(report: &mut VerifyReport, manifest: &Manifest, stored: &PutSummary, found: Option<Compression>) {
    if stored.bytes != manifest.archive_bytes {
        let detail = format!("size mismatch (stored {} bytes, manifest {})", stored.bytes, manifest.archive_bytes);
        report.problems.push(Problem::archive(Check::Size, detail));
    }
    if stored.sha256 != manifest.archive_sha256 {
        let detail = format!("sha256 mismatch (stored {}, manifest {})", stored.sha256, manifest.archive_sha256);
        report.problems.push(Problem::archive(Check::Sha256, detail));
    }
    if let Some(found) = found.filter(|found| *found != manifest.compression) {
        let detail = format!("compression mismatch (stored archive looks {found}, manifest {})", manifest.compression);
        report.problems.push(Problem::archive(Check::Archive, detail));
    }
}

fn compare_parsed(report: &mut VerifyReport, manifest: &Manifest, parsed: Parsed) {
    let records: BTreeMap<&str, _> = manifest.namespaces.iter().map(|r| (r.namespace.as_str(), r)).collect();
    if let Some(prelude) = &parsed.prelude {
        for name in records.keys().filter(|name| !prelude.iter().any(|p| p == *name)) {
            report.problems.push(Problem::namespace(
                *name,
                Check::Namespaces,
                "in the manifest but not in the archive",
            ));
        }
        for name in prelude.iter().filter(|name| !records.contains_key(name.as_str())) {
            report.problems.push(Problem::namespace(name, Check::Namespaces, "in the archive but not in the manifest"));
        }
    }
    for stats in &parsed.ended {
        let name = stats.namespace.to_string();
        let Some(record) = records.get(name.as_str()) else { continue };
        let mut good = true;
        if u64::from_str_radix(&record.crc, 16).ok() != Some(stats.crc) {
            let detail = format!("CRC mismatch (archive {:016x}, manifest {})", stats.crc, record.crc);
            report.problems.push(Problem::namespace(&name, Check::Crc, detail));
            good = false;
        }
        if record.documents != stats.documents {
            let detail =
                format!("document count mismatch (archive {}, manifest {})", stats.documents, record.documents);
            report.problems.push(Problem::namespace(&name, Check::Documents, detail));
            good = false;
        }
        report.namespaces_checked += usize::from(good);
    }
    if let Some(failure) = parsed.failure {
        report.problems.push(describe_failure(failure, manifest.compression));
    }
}

/// Turns the reader's error into a problem that names the collection and the check where it can.
fn describe_failure(failure: ArchiveError, compression: Compression) -> Problem {
    match failure {
        ArchiveError::CrcMismatch { namespace, expected, actual } => Problem::namespace(
            namespace,
            Check::Crc,
            format!("CRC mismatch (documents give {actual:016x}, archive EOF header {expected:016x}): data damaged"),
        ),
        ArchiveError::Truncated { context, offset } => Problem::archive(
            Check::Archive,
            format!("archive truncated at byte {offset} of the plain archive, inside {context}"),
        ),
        ArchiveError::Io(e) => {
            Problem::archive(Check::Archive, format!("cannot decompress the stored {compression} archive: {e}"))
        }
        other => Problem::archive(Check::Archive, other.to_string()),
    }
}
