//! `prune`: apply `[retention]` to the store now; `--dry-run` shows the plan and deletes nothing.

use mongo_backup_agent::config::Config;
use mongo_backup_agent::error::{EXIT_OK, Result};
use mongo_backup_agent::{retention, store};

use super::human_bytes;

/// Flags of `prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print what would be kept and deleted, and delete nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Print the plan (with `--dry-run`) or the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<i32> {
    let store = store::open(&config.storage)?;
    let plan =
        retention::plan(store.as_ref(), &config.storage.prefix, &config.retention, chrono::Utc::now(), None).await?;
    if args.dry_run {
        if args.json {
            println!("{}", serde_json::json!({"dry_run": true, "plan": plan}));
        } else {
            print!("{plan}");
            eprintln!("dry run: nothing was deleted");
        }
        return Ok(EXIT_OK);
    }
    if !args.json {
        print!("{plan}");
    }
    let report = retention::execute(store.as_ref(), plan).await?;
    if args.json {
        println!("{}", serde_json::json!({"dry_run": false, "report": report}));
    } else {
        eprintln!(
            "prune complete: {} backups and {} incomplete attempts deleted ({} objects), {} freed",
            report.plan.forget.len(),
            report.plan.incomplete.len(),
            report.deleted_objects,
            human_bytes(report.freed_bytes)
        );
    }
    Ok(EXIT_OK)
}
