//! `generate` (hidden): the man pages and shell completions the .deb ships, generated from this very CLI so they
//! can never describe flags the binary does not have. `packaging/build-deb.sh` runs it on the packaged binary.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Subcommand};
use clap_complete::Shell;
use mongo_backup_agent::error::{EXIT_OK, Error, Result};

use super::Cli;

const BIN_NAME: &str = "mongo-backup-agent";

/// Flags of `generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Write mongo-backup-agent.1 (with the list of subcommands) and one mongo-backup-agent-<sub>.1 per subcommand.
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// Write the completion script for one shell (bash: mongo-backup-agent.bash, zsh: _mongo-backup-agent, …).
    Completions {
        /// The shell to complete for.
        shell: Shell,
        /// Directory to write the script into (created if missing).
        dir: PathBuf,
    },
}

pub fn run(args: Args) -> Result<i32> {
    let written = match args.what {
        What::Man { dir } => {
            create(&dir)?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(io(&dir, "man pages"))?;
            dir
        }
        What::Completions { shell, dir } => {
            create(&dir)?;
            let mut cmd = without_hidden_subcommands(Cli::command());
            clap_complete::generate_to(shell, &mut cmd, BIN_NAME, &dir).map_err(io(&dir, "completions"))?
        }
    };
    eprintln!("wrote {}", written.display());
    Ok(EXIT_OK)
}

/// The CLI minus its hidden subcommands: clap_complete's bash generator would otherwise offer `generate` too.
fn without_hidden_subcommands(cmd: clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let mut out = clap::Command::new(BIN_NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .args(cmd.get_arguments().cloned())
        .subcommands(visible)
        .subcommand_required(cmd.is_subcommand_required_set());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    out
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir, "a directory"))
}

fn io(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let action = format!("cannot write {what} to {}", path.display());
    move |source| Error::Io { action, source }
}
