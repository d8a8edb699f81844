//! `trigger`: the SSH forced command (`restrict,command="/usr/bin/mongo-backup-agent trigger" ssh-ed25519 …`).
//!
//! The client's text (`SSH_ORIGINAL_COMMAND`) is compared with a fixed list and never reaches a shell: empty or
//! `run-now` backs up and waits (the exit status is the backup's; with point-in-time archiving on, it seals the open
//! oplog chunk and the status says whether a restorable point exists now), `run-now --full` takes a full backup
//! in any case, `status` prints the status, anything else is refused with exit 2 and logged with the client's
//! address.

use std::path::Path;

use mongo_backup_agent::error::{EXIT_USAGE, Result};

use super::run_now::{Style, follow_backup, socket_from};

pub async fn run(config_path: &Path) -> Result<i32> {
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    let peer = std::env::var("SSH_CONNECTION").ok();
    let peer = peer.as_deref().and_then(|c| c.split_whitespace().next()).unwrap_or("local");
    let socket = socket_from(config_path);
    match command.trim() {
        "" | "run-now" => {
            log::info!(ssh_client = peer; "ssh trigger from {peer}: run-now");
            follow_backup(&socket, "ssh", false, Style::Lines).await
        }
        "run-now --full" => {
            log::info!(ssh_client = peer; "ssh trigger from {peer}: run-now --full");
            follow_backup(&socket, "ssh", true, Style::Lines).await
        }
        "status" => super::status::show(&socket, false).await,
        _ => {
            log::warn!(ssh_client = peer; "ssh trigger from {peer}: refused command {command:?}");
            eprintln!(
                "mongo-backup-agent: refused SSH command {command:?}: this key may only run \"run-now\" (or nothing), \
                 \"run-now --full\" and \"status\""
            );
            Ok(EXIT_USAGE)
        }
    }
}
