//! `inspect`: what an archive file holds, with every CRC checked; exits non-zero on the first problem.

use std::path::PathBuf;

use mongo_backup_agent::archive::{ArchiveItem, ArchiveReader, CollectionMetadata};
use mongo_backup_agent::compress;
use mongo_backup_agent::error::{EXIT_OK, Error, Result};

/// Flags of `inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archive file (plain, gzip or zstd).
    file: PathBuf,
}

pub async fn run(args: Args) -> Result<i32> {
    let action = format!("reading {}", args.file.display());
    let file =
        tokio::fs::File::open(&args.file).await.map_err(|source| Error::Io { action: action.clone(), source })?;
    let (compression, plain) = compress::decoder(file).await.map_err(|source| Error::Io { action, source })?;
    let mut reader = ArchiveReader::open(plain).await?;
    let h = reader.header();
    println!("archive {} ({compression})", args.file.display());
    println!(
        "header: version {}, server {}, tool {}, concurrent_collections {}",
        h.version, h.server_version, h.tool_version, h.concurrent_collections
    );
    for e in reader.prelude() {
        match CollectionMetadata::parse(&e.namespace, &e.metadata, &e.kind) {
            Ok(m) => println!("  {} ({}, {} indexes)", e.namespace, m.kind.as_str(), m.indexes.len()),
            Err(err) => println!("  {} (metadata problem: {err})", e.namespace),
        }
    }
    while let Some(item) = reader.next().await? {
        if let ArchiveItem::CollectionEnd { stats, .. } = item {
            println!(
                "{}: {} documents, {} bytes, CRC {:016x} ok",
                stats.namespace, stats.documents, stats.bytes, stats.crc
            );
        }
    }
    println!("archive complete: every collection ended and every CRC matched");
    Ok(EXIT_OK)
}
