//! `restore`: a stored backup (`ID` or `latest`) or an archive file (`--archive`) back into MongoDB.

use std::path::PathBuf;

use mongo_backup_agent::backup;
use mongo_backup_agent::config::{Config, MongoConfig};
use mongo_backup_agent::crypt;
use mongo_backup_agent::error::{EXIT_OK, Error, Result};
use mongo_backup_agent::mongo::{self, NamespaceFilter};
use mongo_backup_agent::oplog::ReplayReport;
use mongo_backup_agent::oplog::chain::{Chain, describe, parse_point};
use mongo_backup_agent::restore::{self, Rename, RestoreOptions};
use mongo_backup_agent::store::{self, ByteStream};

use super::{IdentityArg, human_bytes};

/// Flags of `restore`, modelled on mongorestore's.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id, or `latest`, from the configured store. With point-in-time archiving, `latest` is the newest
    /// archived oplog entry.
    #[arg(required_unless_present_any = ["archive", "time"], conflicts_with_all = ["archive", "time"])]
    id: Option<String>,
    /// Restore to this moment: RFC 3339 (every write of that second) or ts:SECONDS,INCREMENT. Uses the newest base
    /// backup whose window ends before it, then the archived oplog up to it.
    #[arg(long, value_name = "TIME", conflicts_with = "archive")]
    time: Option<String>,
    /// Restore this archive file instead (ours or stock mongodump's; plain, gzip or zstd).
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
    /// Target server [default: mongodb.uri from the config]. The password comes from the usual secret sources.
    #[arg(long, value_name = "URI")]
    to: Option<String>,
    /// Only restore namespaces matching (as named in the archive).
    #[arg(long = "nsInclude", value_name = "NS")]
    ns_include: Vec<String>,
    /// Skip namespaces matching.
    #[arg(long = "nsExclude", value_name = "NS")]
    ns_exclude: Vec<String>,
    /// Rename from (with $var$ wildcards); pairs with --nsTo in order.
    #[arg(long = "nsFrom", value_name = "NS")]
    ns_from: Vec<String>,
    /// Rename to.
    #[arg(long = "nsTo", value_name = "NS")]
    ns_to: Vec<String>,
    /// Replace existing target collections. The archive is restored into staging collections first and they
    /// replace the targets only once the whole archive has been read and checked: a damaged archive changes nothing.
    #[arg(long)]
    drop: bool,
    /// Restore even if the oplog slice runs commands replay does not know: each one skipped is listed at the end.
    #[arg(long = "oplog-skip-unknown")]
    oplog_skip_unknown: bool,
    /// Also restore the archive's users and custom roles (overwriting same-named ones, passwords included). A full
    /// restore (no --nsInclude/--nsExclude/--nsFrom) does this anyway.
    #[arg(long = "with-users-and-roles")]
    with_users_and_roles: bool,
    /// Print what would be done and change nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    #[command(flatten)]
    identity: IdentityArg,
}

pub async fn run(config: impl FnOnce() -> Result<Config>, args: Args) -> Result<i32> {
    if args.ns_from.len() != args.ns_to.len() {
        return Err(Error::Usage("--nsFrom and --nsTo must be given the same number of times".into()));
    }
    let renames = args
        .ns_from
        .iter()
        .zip(&args.ns_to)
        .map(|(from, to)| Rename::new(from, to))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    let filter = NamespaceFilter::new(&args.ns_include, &args.ns_exclude).map_err(Error::Usage)?;
    // Users and roles roll back passwords and bring deleted users back: only on purpose, or as part of a full restore.
    let full = args.ns_include.is_empty() && args.ns_exclude.is_empty() && renames.is_empty();
    // A file restore with --to needs no config at all: useful on a workstation.
    let config = match (&args.archive, &args.to) {
        (Some(_), Some(_)) => config().unwrap_or_default(),
        _ => config()?,
    };
    let identities = args.identity.load(Some(&config))?;
    let store = match &args.archive {
        Some(_) => None,
        None => Some(store::open(&config.storage)?),
    };
    let prefix = &config.storage.prefix;
    // Point in time: `--time`, or `latest` when archived oplog reaches past the newest base.
    let path = match (&store, &args.time, args.id.as_deref()) {
        (Some(store), Some(time), _) => {
            let point = parse_point(time).map_err(Error::Usage)?;
            Some(Chain::load(store.as_ref(), prefix).await?.path_to(point)?)
        }
        (Some(store), None, Some("latest")) => Chain::load(store.as_ref(), prefix).await?.latest(),
        _ => None,
    };
    // Opened, and decrypted as far as the age header, before connecting: a missing or wrong key writes nothing.
    let input: ByteStream = match (&args.archive, &store, &path, &args.id) {
        (Some(path), _, _, _) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|source| Error::Io { action: format!("opening archive {}", path.display()), source })?;
            crypt::open(file, identities.as_ref(), &format!("archive {}", path.display()), None).await?.1
        }
        (None, Some(store), Some(path), _) => {
            let manifest = backup::resolve(store.as_ref(), prefix, path.base.as_str()).await?;
            let input = backup::open_archive(store.as_ref(), prefix, &manifest, identities.as_ref()).await?;
            eprintln!(
                "restoring to {}: base backup {} ({} documents, consistent as of {}), then {} oplog chunks ({})",
                describe(path.target),
                manifest.id,
                manifest.documents(),
                describe(path.base_end),
                path.chunks.len(),
                human_bytes(path.chunk_bytes())
            );
            input
        }
        (None, Some(store), None, Some(id)) => {
            let manifest = backup::resolve(store.as_ref(), prefix, id).await?;
            let input = backup::open_archive(store.as_ref(), prefix, &manifest, identities.as_ref()).await?;
            eprintln!("restoring backup {} ({} documents)", manifest.id, manifest.documents());
            input
        }
        _ => return Err(Error::Usage("give a backup id, `latest`, --time TIME or --archive FILE".into())),
    };
    let target = MongoConfig { uri: args.to.clone().unwrap_or(config.mongodb.uri.clone()), ..config.mongodb.clone() };
    let client = mongo::connect(&target).await?;
    let options = RestoreOptions {
        filter,
        renames,
        drop: args.drop,
        dry_run: args.dry_run,
        replay_oplog: true,
        oplog_skip_unknown: args.oplog_skip_unknown,
        users_and_roles: args.with_users_and_roles || full,
        parallel: config.restore.parallel_inserts,
        batch_size: config.restore.batch_size,
    };
    let started = std::time::Instant::now();
    let continuation =
        store.as_deref().zip(path.as_ref()).map(|(store, path)| path.entries(store, identities.as_ref()));
    let restored = restore::restore_to_point(input, &client, &options, continuation).await;
    mongo::close(client).await;
    let report = restored?;
    if args.dry_run {
        print!("{}", report.plan);
        eprintln!("dry run: nothing was changed");
        return Ok(EXIT_OK);
    }
    for (ns, n) in &report.inserted {
        eprintln!("restored {n} documents into {ns}");
    }
    print_replay(&report.replay);
    for ns in &report.replaced {
        eprintln!("replaced {ns} with its restored copy (--drop)");
    }
    eprintln!(
        "restore complete: {} documents, {} oplog operations replayed, {} users/roles, {:.1}s",
        report.documents(),
        report.replay.applied,
        report.users_and_roles,
        started.elapsed().as_secs_f64()
    );
    Ok(EXIT_OK)
}

/// What replay deliberately left out, so a restore never hides it behind its exit status.
fn print_replay(replay: &ReplayReport) {
    for txn in &replay.open_transactions {
        let kind = if txn.prepared { "prepared" } else { "unprepared" };
        eprintln!(
            "not applied: {kind} transaction started at ts {}:{} ({} operations) had not committed by the end of the \
             slice",
            txn.first.time, txn.first.increment, txn.operations
        );
    }
    for build in &replay.open_index_builds {
        eprintln!("not built: index build on {build} had not committed by the end of the slice");
    }
    if replay.outside_backup > 0 {
        eprintln!("not applied: {} oplog operations on namespaces outside the backup", replay.outside_backup);
    }
    for command in &replay.skipped_commands {
        eprintln!("skipped (--oplog-skip-unknown): {command}");
    }
}
