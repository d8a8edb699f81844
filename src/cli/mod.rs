//! Command-line verbs, one file each; `main` dispatches with one `match`.

mod backup;
mod check;
mod export;
mod generate;
mod inspect;
mod list;
mod progress;
mod prune;
mod restore;
mod run_now;
mod serve;
mod status;
mod trigger;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::crypt::{self, Identities};
use mongo_backup_agent::error::{EXIT_USAGE, Error, Result};

/// MongoDB backups as mongodump-compatible archives, streamed to Azure Blob or a directory.
#[derive(Debug, Parser)]
#[command(name = "mongo-backup-agent", version, about)]
pub struct Cli {
    /// Config file [default: $MONGO_BACKUP_AGENT_CONFIG or /etc/mongo-backup-agent/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one backup in this process and store it.
    Backup(backup::Args),
    /// Restore a stored backup, or any archive file, into MongoDB.
    Restore(restore::Args),
    /// List the backups in the store.
    List(list::Args),
    /// Check a stored backup against its manifest (sha256, structure, CRCs, counts); --deep also restores it.
    Verify(verify::Args),
    /// Write a stored backup as a standalone archive file stock mongorestore reads.
    Export(export::Args),
    /// Delete the backups `[retention]` does not keep, and stale incomplete attempts.
    Prune(prune::Args),
    /// Print an archive file's prelude, namespaces, document counts and CRC results.
    Inspect(inspect::Args),
    /// Validate the config and check MongoDB and the store are reachable and writable.
    Check,
    /// Run the agent daemon (what the systemd unit starts).
    Serve,
    /// Ask the daemon to back up now and follow the backup to its end; exit 0 when it succeeded.
    RunNow(run_now::Args),
    /// Show the daemon's state, last result and recent runs.
    Status(status::Args),
    /// The SSH forced command: runs what SSH_ORIGINAL_COMMAND asks if it is "run-now" or "status", refuses the rest.
    Trigger,
    /// Write man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(generate::Args),
}

/// Parses the command line, runs the command, prints any error once, and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // The trigger runs under sshd, outside the service: its refusals belong in the system journal, not only
    // on the SSH client's screen.
    let prefer_journal = matches!(cli.command, Command::Trigger);
    mongo_backup_agent::logging::init(level, prefer_journal);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mongo-backup-agent: cannot start the async runtime: {e}");
            return EXIT_USAGE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mongo-backup-agent: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let config_path = Config::resolve_path(cli.config.as_deref());
    let config = || Config::load(&config_path).map_err(Error::from);
    match cli.command {
        Command::Backup(args) => backup::run(&config()?, args).await,
        Command::Restore(args) => restore::run(config, args).await,
        Command::List(args) => list::run(&config()?, args).await,
        Command::Verify(args) => verify::run(&config()?, args).await,
        Command::Export(args) => export::run(&config()?, args).await,
        Command::Prune(args) => prune::run(&config()?, args).await,
        Command::Inspect(args) => inspect::run(config, args).await,
        Command::Check => check::run(&config_path, &config()?).await,
        Command::Serve => serve::run(&config_path).await,
        Command::RunNow(args) => run_now::run(&config_path, args).await,
        Command::Status(args) => status::run(&config_path, args).await,
        Command::Trigger => trigger::run(&config_path).await,
        Command::Generate(args) => generate::run(args),
    }
}

/// `--identity FILE`, shared by the verbs that read an archive's contents (restore, export, inspect, verify).
#[derive(Debug, clap::Args)]
pub struct IdentityArg {
    /// age identity file (AGE-SECRET-KEY-1…) opening an encrypted backup [default: [encryption] identity_file, then
    /// the secret age-identity]. Only the path is given here, never the key.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
}

impl IdentityArg {
    /// The identities from the flag, else from `config`'s `[encryption] identity_file`, else the secret's other
    /// sources; `None` when there are none (fine for plain backups).
    pub fn load(&self, config: Option<&Config>) -> Result<Option<Identities>> {
        let configured = config.and_then(|c| c.encryption.identity_file.as_deref());
        Ok(crypt::load_identities(self.identity.as_deref(), configured)?)
    }
}

/// Formats a byte count for people.
pub fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
