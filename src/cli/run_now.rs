//! `run-now`: ask the daemon for a backup now and follow it to the end; `--standalone` backs up in-process.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use mongo_backup_agent::backup::{Outcome, RunReport};
use mongo_backup_agent::config::{Config, DEFAULT_SOCKET};
use mongo_backup_agent::daemon::client::DaemonClient;
use mongo_backup_agent::daemon::protocol::{Event, Request};
use mongo_backup_agent::error::{EXIT_FAILED, EXIT_OK, Result};

use super::human_bytes;

/// Flags of `run-now`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the daemon's events as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// A full (base) backup even when point-in-time archiving is on (then a plain run-now seals the open oplog
    /// chunk and reports the newest restorable moment).
    #[arg(long)]
    full: bool,
    /// Back up in this process instead of asking the daemon (when it is not running).
    #[arg(long, conflicts_with = "socket")]
    standalone: bool,
    /// Control socket [default: [daemon] socket from the config, else /run/mongo-backup-agent/control.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

pub async fn run(config_path: &Path, args: Args) -> Result<i32> {
    if args.standalone {
        return super::backup::run(&Config::load(config_path)?, super::backup::Args::default()).await;
    }
    let socket = args.socket.unwrap_or_else(|| socket_from(config_path));
    let style = if args.json {
        Style::Json
    } else if std::io::stderr().is_terminal() {
        Style::Terminal
    } else {
        Style::Lines
    };
    follow_backup(&socket, "run-now", args.full, style).await
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A spinner with the live summary.
    Terminal,
    /// A line when the phase changes: for logs, cron mails and the SSH kick.
    Lines,
    /// Every event as a JSON line on stdout.
    Json,
}

/// The control socket of the config at `config_path`, or the default one when the config cannot be read (the
/// SSH trigger user may not read the service's config, and needs only the socket).
pub fn socket_from(config_path: &Path) -> PathBuf {
    match Config::load(config_path) {
        Ok(config) => config.daemon.socket,
        Err(e) => {
            log::debug!("using the default control socket: {e}");
            PathBuf::from(DEFAULT_SOCKET)
        }
    }
}

/// Asks the daemon at `socket` for a backup, shows its progress, and returns 0 when it succeeded.
pub async fn follow_backup(socket: &Path, trigger: &str, full: bool, style: Style) -> Result<i32> {
    let mut client = DaemonClient::send(socket, Request::RunNow { trigger: trigger.to_string(), full }).await?;
    let spinner = (style == Style::Terminal).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or(ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut phase = String::new();
    let mut waiting_for = "the backup started".to_string();
    loop {
        let event = client.next(&waiting_for).await?;
        if style == Style::Json {
            println!("{}", serde_json::to_string(&event).unwrap_or_default());
        }
        match event {
            Event::Started { id, attached, trigger } => {
                waiting_for = format!("backup {id} finished");
                let line = if attached {
                    format!("backup {id} was already running (started by {trigger}): waiting for its result")
                } else {
                    format!("backup {id} started")
                };
                match &spinner {
                    // Above the spinner, not through it.
                    Some(bar) => bar.println(line),
                    None if style == Style::Lines => eprintln!("{line}"),
                    None => {}
                }
            }
            Event::Waiting { request, summary } => {
                waiting_for = format!("backup request {request} served");
                match &spinner {
                    Some(bar) => bar.println(summary),
                    None if style == Style::Lines => eprintln!("{summary}"),
                    None => {}
                }
            }
            Event::Progress { phase: now, summary, .. } => match &spinner {
                Some(bar) => bar.set_message(summary),
                None if style == Style::Lines && now != phase => {
                    eprintln!("{summary}");
                    phase = now;
                }
                None => {}
            },
            Event::Finished { report } => {
                if let Some(bar) = spinner {
                    bar.finish_and_clear();
                }
                if style != Style::Json {
                    print_result(&report);
                }
                return Ok(if report.outcome == Outcome::Success { EXIT_OK } else { EXIT_FAILED });
            }
            Event::Sealed { summary, .. } => {
                if style != Style::Json {
                    println!("{summary}");
                }
                return Ok(EXIT_OK);
            }
            Event::Status(_) | Event::Error { .. } => {}
        }
    }
}

fn print_result(report: &RunReport) {
    match &report.error {
        None => println!(
            "backup {} complete: {} documents, {} in, {} stored, {:.1}s",
            report.id,
            report.documents,
            human_bytes(report.bytes_in),
            human_bytes(report.bytes_out),
            report.duration_secs()
        ),
        Some(error) => eprintln!("mongo-backup-agent: backup {} {}: {error}", report.id, report.outcome.as_str()),
    }
}
