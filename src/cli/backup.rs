//! `backup`: one backup, in this process, with progress and a summary line.

use std::sync::Arc;

use mongo_backup_agent::backup::{self, BackupId, Progress};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::error::{EXIT_OK, Error, Result};
use mongo_backup_agent::mongo::NamespaceFilter;
use mongo_backup_agent::store;

use super::human_bytes;

/// Flags of `backup`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Only these namespaces (mongodump globs: db.*, *.coll, db.coll); adds to backup.include.
    #[arg(long = "include", value_name = "NS")]
    include: Vec<String>,
    /// Skip these namespaces; adds to backup.exclude.
    #[arg(long = "exclude", value_name = "NS")]
    exclude: Vec<String>,
    /// Print the manifest as JSON on stdout when done.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<i32> {
    let include: Vec<String> = config.backup.include.iter().chain(&args.include).cloned().collect();
    let exclude: Vec<String> = config.backup.exclude.iter().chain(&args.exclude).cloned().collect();
    let filter = NamespaceFilter::new(&include, &exclude).map_err(Error::Usage)?;
    let store = store::open(&config.storage)?;
    let progress = Arc::new(Progress::default());
    let display = super::progress::show(progress.clone());
    let started = std::time::Instant::now();
    let result = backup::run(config, BackupId::new(chrono::Utc::now()), &filter, store.as_ref(), &progress).await;
    display.abort();
    let manifest = result?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", manifest.to_json());
    }
    eprintln!(
        "backup {} complete: {} collections, {} documents, {} in, {} stored ({}), {:.1}s, {}/s",
        manifest.id,
        manifest.namespaces.iter().filter(|n| n.kind != "oplog").count(),
        manifest.documents(),
        human_bytes(manifest.uncompressed_bytes),
        human_bytes(manifest.archive_bytes),
        manifest.compression,
        secs,
        human_bytes((manifest.uncompressed_bytes as f64 / secs.max(0.001)) as u64),
    );
    Ok(EXIT_OK)
}
