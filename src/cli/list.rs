//! `list`: the backups in the store, newest last, each with its retention class; incomplete attempts only with
//! `--all`.

use mongo_backup_agent::backup::{BackupEntry, Manifest, list_backups};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::error::{EXIT_OK, Result};
use mongo_backup_agent::oplog::chain::Chain;
use mongo_backup_agent::retention::PrunePlan;
use mongo_backup_agent::store;

use super::human_bytes;

/// Flags of `list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also show incomplete attempts (archives without a manifest).
    #[arg(long)]
    all: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<i32> {
    let store = store::open(&config.storage)?;
    let entries = list_backups(store.as_ref(), &config.storage.prefix).await?;
    let now = chrono::Utc::now();
    let plan = PrunePlan::from_entries(&entries, &config.retention, now, None);
    if !args.json {
        println!(
            "{:<24} {:<20} {:>10} {:>8} {:>12}  {:<32}  {:<16}  status",
            "id", "started (UTC)", "size", "secs", "documents", "retention", "key"
        );
    }
    for entry in entries.iter().filter(|e| args.all || e.is_complete()) {
        let class = plan.class_of(entry);
        let line = match &entry.manifest {
            Some(m) => {
                let secs = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
                let status = status(entry, m, now);
                if args.json {
                    serde_json::json!({
                        "id": m.id, "started_at": m.started_at, "finished_at": m.finished_at, "status": status,
                        "archive_bytes": m.archive_bytes, "duration_secs": secs, "documents": m.documents(),
                        "compression": m.compression, "retention": class, "untrusted": entry.untrusted,
                        "encryption": m.encryption,
                        "future_id": entry.id.is_from_future(now),
                    })
                    .to_string()
                } else {
                    format!(
                        "{:<24} {:<20} {:>10} {:>8.1} {:>12}  {:<32}  {:<16}  {}",
                        m.id.as_str(),
                        m.started_at.format("%Y-%m-%d %H:%M:%S"),
                        human_bytes(m.archive_bytes),
                        secs,
                        m.documents(),
                        class,
                        key(m),
                        status
                    )
                }
            }
            None => {
                let bytes: u64 = entry.objects.iter().map(|o| o.size).sum();
                if args.json {
                    serde_json::json!({"id": entry.id, "status": "incomplete", "archive_bytes": bytes, "retention": class}).to_string()
                } else {
                    format!(
                        "{:<24} {:<20} {:>10} {:>8} {:>12}  {:<32}  {:<16}  incomplete (no manifest)",
                        entry.id.as_str(),
                        entry.id.time().format("%Y-%m-%d %H:%M:%S"),
                        human_bytes(bytes),
                        "-",
                        "-",
                        class,
                        "-"
                    )
                }
            }
        };
        println!("{line}");
    }
    let chain = Chain::load(store.as_ref(), &config.storage.prefix).await?;
    if config.pitr.enabled || !chain.chunks.is_empty() {
        for line in chain.summary() {
            if args.json {
                println!("{}", serde_json::json!({ "pitr": line }));
            } else {
                println!("{line}");
            }
        }
    }
    Ok(EXIT_OK)
}

/// The key column: which identity opens the backup, by fingerprint ("a,b" when encrypted to several, any one
/// opens it), or "none" for a plain backup.
fn key(manifest: &Manifest) -> String {
    manifest.encryption.as_ref().map_or_else(|| "none".to_string(), |e| e.recipients.join(","))
}

/// The status column: the manifest's, "untrusted" when the verification after the backup failed, and a warning
/// when the id is dated more than an hour ahead of this host's clock (made by a clock running fast).
fn status(entry: &BackupEntry, manifest: &Manifest, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut status = match &entry.untrusted {
        Some(_) => "untrusted (failed verification)".to_string(),
        None => manifest.status.clone(),
    };
    if entry.id.is_from_future(now) {
        status.push_str(", id in the future: check the clock of the host that made it");
    }
    status
}
