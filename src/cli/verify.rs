//! `verify`: is a stored backup intact? Re-reads it and checks it against its manifest; `--deep` also restores it
//! into scratch databases and compares. Exit 0 when good, 1 with one line per problem when not.

use mongo_backup_agent::backup;
use mongo_backup_agent::config::{Config, MongoConfig};
use mongo_backup_agent::crypt::Identities;
use mongo_backup_agent::error::{EXIT_FAILED, EXIT_OK, Result};
use mongo_backup_agent::oplog::chain::Chain;
use mongo_backup_agent::store::ObjectStore;
use mongo_backup_agent::verify::{self, DeepOptions};
use mongo_backup_agent::{crypt, mongo, store};

use super::IdentityArg;

/// Flags of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id, or `latest`.
    #[arg(required_unless_present = "chain", conflicts_with = "chain")]
    id: Option<String>,
    /// Check the point-in-time chain instead: every oplog chunk read and checked (CRC-64, SHA-256, interval), no
    /// overlap, no gap.
    #[arg(long)]
    chain: bool,
    /// Also restore into scratch databases on `[verify] scratch_uri` (default `mongodb.uri`), compare counts and
    /// sampled documents, then drop them.
    #[arg(long)]
    deep: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Needed for --deep on an encrypted backup; without it an encrypted backup gets the checks of its stored
    /// bytes only (size and sha256), which is what the VM, holding no identity, can do.
    #[command(flatten)]
    identity: IdentityArg,
}

pub async fn run(config: &Config, args: Args) -> Result<i32> {
    let store = store::open(&config.storage)?;
    let prefix = &config.storage.prefix;
    let identities = args.identity.load(Some(config))?;
    let Some(id) = &args.id else { return verify_chain(store.as_ref(), prefix, identities.as_ref()).await };
    let manifest = backup::resolve(store.as_ref(), prefix, id).await?;
    // Asked to read the contents (--deep, or an identity given): a missing or wrong key is refused before anything.
    if args.deep || identities.is_some() {
        crypt::unlock(identities.as_ref(), &format!("backup {}", manifest.id), manifest.encryption.as_ref())?;
    }
    let report = verify::verify(store.as_ref(), prefix, &manifest, identities.as_ref()).await?;
    let mut problems = report.problems.clone();
    // Restoring an archive that already failed its checks proves nothing more.
    let deep = if args.deep && report.is_ok() {
        let uri = config.verify.scratch_uri.clone().unwrap_or_else(|| config.mongodb.uri.clone());
        let client = mongo::connect(&MongoConfig { uri, ..config.mongodb.clone() }).await?;
        let options = DeepOptions::from_config(config);
        let deep = verify::deep(store.as_ref(), prefix, &manifest, &client, options, identities.as_ref()).await;
        mongo::close(client).await;
        let deep = deep?;
        problems.extend(deep.problems.iter().cloned());
        Some(deep)
    } else {
        None
    };
    if args.json {
        println!("{}", serde_json::json!({"ok": problems.is_empty(), "report": report, "deep": deep}));
    } else {
        for problem in &problems {
            println!("{problem}");
        }
        if let Some(deep) = &deep {
            println!(
                "deep: scratch databases {} (dropped again), collection counts compared {}, documents compared {}",
                deep.scratch_databases.values().cloned().collect::<Vec<_>>().join(", "),
                deep.collections_compared,
                deep.documents_sampled
            );
        } else if args.deep {
            println!("deep: skipped, the archive failed the checks above");
        }
    }
    if !problems.is_empty() {
        eprintln!(
            "mongo-backup-agent: backup {} failed verification, problems: {}; restore an older backup, and check the \
             store for damage",
            manifest.id,
            problems.len()
        );
        return Ok(EXIT_FAILED);
    }
    if report.contents_checked {
        eprintln!(
            "backup {} verified: {} bytes, sha256 ok; namespaces {}, documents {}: all match the manifest",
            manifest.id, report.stored_bytes, report.namespaces_checked, report.documents
        );
    } else {
        eprintln!(
            "backup {} verified: {} bytes, sha256 ok; contents not read (encrypted: --identity FILE checks them too)",
            manifest.id, report.stored_bytes
        );
    }
    Ok(EXIT_OK)
}

/// `verify --chain`; encrypted chunks need `--identity`.
async fn verify_chain(store: &dyn ObjectStore, prefix: &str, identities: Option<&Identities>) -> Result<i32> {
    let chain = Chain::load(store, prefix).await?;
    let problems = chain.verify(store, identities).await;
    for problem in &problems {
        println!("{problem}");
    }
    if !problems.is_empty() {
        eprintln!(
            "mongo-backup-agent: the oplog chain failed verification, problems: {}; moments after a damaged chunk \
             or a gap restore only from a newer base",
            problems.len()
        );
        return Ok(EXIT_FAILED);
    }
    for line in chain.summary() {
        println!("{line}");
    }
    let bytes: u64 = chain.chunks.iter().map(|c| c.size).sum();
    eprintln!(
        "oplog chain verified: {} chunks, {bytes} bytes, CRC-64 and SHA-256 ok, no overlap, no gap",
        chain.chunks.len()
    );
    Ok(EXIT_OK)
}
