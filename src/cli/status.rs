//! `status`: what the daemon is doing, its last result and its recent runs.

use std::path::{Path, PathBuf};

use mongo_backup_agent::daemon::client::{ClientError, DaemonClient};
use mongo_backup_agent::daemon::cluster::ClusterStatus;
use mongo_backup_agent::daemon::pitr::PitrState;
use mongo_backup_agent::daemon::protocol::{Event, Request, StatusReply};
use mongo_backup_agent::error::{EXIT_OK, Result};
use mongo_backup_agent::oplog::chain::describe;

use super::human_bytes;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's reply as one JSON object.
    #[arg(long)]
    json: bool,
    /// Control socket [default: [daemon] socket from the config, else /run/mongo-backup-agent/control.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

pub async fn run(config_path: &Path, args: Args) -> Result<i32> {
    let socket = args.socket.unwrap_or_else(|| super::run_now::socket_from(config_path));
    show(&socket, args.json).await
}

/// Asks the daemon at `socket` and prints its state.
pub async fn show(socket: &Path, json: bool) -> Result<i32> {
    let mut client = DaemonClient::send(socket, Request::Status).await?;
    let reply = match client.next("answering status").await? {
        Event::Status(reply) => reply,
        other => return Err(ClientError::Refused(format!("unexpected answer to status: {other:?}")).into()),
    };
    if json {
        println!("{}", serde_json::to_string(&reply).unwrap_or_default());
    } else {
        print!("{}", render(&reply));
    }
    Ok(EXIT_OK)
}

fn render(s: &StatusReply) -> String {
    let mut out = format!(
        "daemon: running (pid {}, agent {}), config {}\nstore: {}\n",
        s.pid, s.agent_version, s.config, s.store
    );
    match &s.running {
        Some(r) => {
            out += &format!(
                "now: backing up {} (started by {} at {}): {}\n",
                r.id,
                r.trigger,
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.summary
            )
        }
        None => out += "now: idle\n",
    }
    out += &match &s.next_scheduled {
        Some(t) => format!("schedule: next backup at {t}\n"),
        None => "schedule: none (backups run when triggered)\n".to_string(),
    };
    if let Some(pitr) = &s.pitr {
        out += &render_pitr(pitr, chrono::Utc::now());
    }
    if let Some(cluster) = &s.cluster {
        out += &render_cluster(cluster, chrono::Utc::now());
    }
    if s.recent.is_empty() {
        out += "recent runs: none since the daemon started\n";
    } else {
        out += "recent runs (newest first):\n";
        for r in &s.recent {
            out += &format!(
                "  {}  {:<9} {:>8.1}s {:>10}  {:<10} {}\n",
                r.id,
                r.outcome.as_str(),
                r.duration_secs(),
                human_bytes(r.bytes_out),
                r.trigger,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    out
}

/// The replica-set lines: who backs up and archives, and every member's heartbeat, best-ranked first.
fn render_cluster(cluster: &ClusterStatus, now: chrono::DateTime<chrono::Utc>) -> String {
    let doer = |what: &str| {
        let found = cluster
            .members
            .iter()
            .zip(&cluster.live)
            .find(|(b, live)| **live && b.doing.iter().any(|d| d.starts_with(what)));
        found.map_or_else(|| "none".to_string(), |(b, _)| b.member.clone())
    };
    let mut out = format!(
        "cluster: this is member {}; runner: {}, archiver: {}; {} backup requests pending\n",
        cluster.member,
        doer("backup"),
        doer("archiving"),
        cluster.pending
    );
    for (beat, live) in cluster.members.iter().zip(&cluster.live) {
        let lag = beat.standing.lag_secs.map_or_else(|| "lag ?".to_string(), |l| format!("lag {l:.1}s"));
        let score = beat.standing.score.map_or_else(|| "does not contend".to_string(), |s| format!("rank {s}"));
        let success =
            beat.last_success.map_or_else(|| "none".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        let age = (now - beat.written_at).num_seconds();
        out += &format!(
            "  {:<14} {:<18} {lag:<10} {score:<17} agent {}  last success {success}  {}{}\n",
            beat.member,
            beat.standing.role.to_string(),
            beat.agent_version,
            if *live { format!("heartbeat {age}s ago") } else { format!("SILENT for {age}s") },
            if beat.doing.is_empty() { String::new() } else { format!("; {}", beat.doing.join(", ")) }
        );
    }
    if let Some(problem) = &cluster.last_problem {
        out += &format!("  last problem: {problem}\n");
    }
    out
}

/// The point-in-time lines: what is archived, how far behind, and how much oplog the server keeps.
fn render_pitr(pitr: &PitrState, now: chrono::DateTime<chrono::Utc>) -> String {
    let a = &pitr.archive;
    let mut out =
        format!("point-in-time: {}\n", if a.archiving { "archiving the oplog" } else { "NOT archiving (see below)" });
    match (a.archived_to, a.lag_secs(now)) {
        (Some(to), Some(lag)) => {
            out += &format!(
                "  archived up to {}, lag {lag}s; {} chunks, {} stored by this daemon\n",
                describe(to.into()),
                a.chunks,
                human_bytes(a.bytes)
            )
        }
        _ => out += "  nothing archived by this daemon yet\n",
    }
    if let (Some(oldest), Some(newest), Some(window)) = (a.oplog_oldest, a.oplog_newest, a.oplog_window_secs()) {
        let hours = f64::from(window) / 3600.0;
        out += &format!(
            "  server oplog: {} → {}: holds {hours:.1} h of writes\n",
            describe(oldest.into()),
            describe(newest.into())
        );
    }
    for line in &pitr.windows {
        out += &format!("  {line}\n");
    }
    out += &format!("  gaps found since the daemon started: {}\n", a.gaps);
    if let Some(problem) = &pitr.last_problem {
        out += &format!("  last problem: {problem}\n");
    }
    out
}
