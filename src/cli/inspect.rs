//! `inspect`: what an archive file holds, with every CRC checked. Like `verify`, exits 1 with one line per problem
//! (metadata that does not parse, a CRC mismatch, a truncated or malformed archive), 0 only when all is well.

use std::path::PathBuf;

use mongo_backup_agent::archive::{ArchiveItem, ArchiveReader, CollectionMetadata};
use mongo_backup_agent::compress;
use mongo_backup_agent::config::Config;
use mongo_backup_agent::crypt;
use mongo_backup_agent::error::{EXIT_FAILED, EXIT_OK, Error, Result};

use super::IdentityArg;

/// Flags of `inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archive file (plain, gzip or zstd; age-encrypted or not).
    file: PathBuf,
    #[command(flatten)]
    identity: IdentityArg,
}

/// `config` is only consulted for `[encryption] identity_file`: inspecting a file needs no config.
pub async fn run(config: impl FnOnce() -> Result<Config>, args: Args) -> Result<i32> {
    let action = format!("reading {}", args.file.display());
    let identities = args.identity.load(config().ok().as_ref())?;
    let file =
        tokio::fs::File::open(&args.file).await.map_err(|source| Error::Io { action: action.clone(), source })?;
    let (encrypted, file) =
        crypt::open(file, identities.as_ref(), &format!("archive {}", args.file.display()), None).await?;
    let (compression, plain) = compress::decoder(file).await.map_err(|source| Error::Io { action, source })?;
    let mut reader = ArchiveReader::open(plain).await?;
    let h = reader.header();
    let sealed = if encrypted { ", age-encrypted" } else { "" };
    println!("archive {} ({compression}{sealed})", args.file.display());
    println!(
        "header: version {}, server {}, tool {}, concurrent_collections {}",
        h.version, h.server_version, h.tool_version, h.concurrent_collections
    );
    let mut problems = 0;
    for e in reader.prelude() {
        match CollectionMetadata::parse(&e.namespace, &e.metadata, &e.kind) {
            Ok(m) => println!("  {} ({}, {} indexes)", e.namespace, m.kind.as_str(), m.indexes.len()),
            Err(err) => {
                println!("  {} (problem: metadata does not parse: {err})", e.namespace);
                problems += 1;
            }
        }
    }
    // The reader stops at the first damage (it cannot resynchronise), so that is the last line.
    loop {
        match reader.next().await {
            Ok(Some(ArchiveItem::CollectionEnd { stats, .. })) => println!(
                "{}: {} documents, {} bytes, CRC {:016x} ok",
                stats.namespace, stats.documents, stats.bytes, stats.crc
            ),
            Ok(Some(ArchiveItem::Document { .. })) => {}
            Ok(None) => break,
            Err(err) => {
                println!("problem: {err}");
                problems += 1;
                break;
            }
        }
    }
    if problems > 0 {
        eprintln!(
            "mongo-backup-agent: archive {} has problems: {problems}; do not restore it, use another backup",
            args.file.display()
        );
        return Ok(EXIT_FAILED);
    }
    println!("archive complete: every collection ended and every CRC matched");
    Ok(EXIT_OK)
}
