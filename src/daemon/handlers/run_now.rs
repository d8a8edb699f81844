//! `run_now`: start a backup or attach to the running one, stream its progress, end with its report. With
//! point-in-time archiving on, the kick seals the open oplog chunk instead, unless it asks for a full backup.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::cluster::requests::Request;
use crate::daemon::cluster::Coordinator;
use crate::daemon::protocol::{Event, write_line};
use crate::daemon::{RunningBackup, Shared, pitr};

/// How often progress events are sent.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Serves a `run_now` request. In a replica set, a kick on a member not backing up right now posts a request for
/// the member that wins the backup lease, and waits for its result.
pub async fn handle<W: AsyncWrite + Unpin>(shared: &Shared, trigger: &str, out: &mut W) -> std::io::Result<()> {
    if let Some(cluster) = &shared.cluster
        && shared.runner.running().is_none()
    {
        return wait_for_cluster(shared, cluster, trigger, out).await;
    }
    let (running, attached) = shared.runner.start_or_attach(trigger);
    if attached {
        log::info!(backup_id = running.id.as_str(); "backup {} already running (trigger: {}): {trigger} request attached", running.id, running.trigger);
    }
    write_line(out, &Event::Started { id: running.id.clone(), attached, trigger: running.trigger.clone() }).await?;
    let finished = running.finished();
    tokio::pin!(finished);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            report = &mut finished => return write_line(out, &Event::Finished { report }).await,
            _ = tick.tick() => write_line(out, &progress(&running)).await?,
        }
    }
}

/// Where `running` is now.
fn progress(running: &RunningBackup) -> Event {
    let progress = &running.progress;
    Event::Progress {
        phase: progress.phase(),
        summary: progress.summary(),
        documents: progress.totals().0,
        bytes: progress.archive_bytes.load(Ordering::Relaxed),
    }
}

/// Posts the kick as a request for the cluster and waits for whichever member serves it; shows the progress of
/// the backup when it is this member's.
async fn wait_for_cluster<W: AsyncWrite + Unpin>(
    shared: &Shared,
    cluster: &Coordinator,
    trigger: &str,
    out: &mut W,
) -> std::io::Result<()> {
    let request = Request::kick(trigger, cluster.member());
    if let Err(e) = cluster.post(&request).await {
        let message = format!("cannot post the backup request to the other members: {e}");
        return write_line(out, &Event::Error { message }).await;
    }
    let summary = format!(
        "backup request {} posted by member {}: the best-ranked member with a live agent runs it",
        request.id,
        cluster.member()
    );
    log::info!(trigger = trigger; "{trigger} kick: {summary}");
    write_line(out, &Event::Waiting { request: request.id.clone(), summary }).await?;
    let served = cluster.wait_served(&request.id);
    tokio::pin!(served);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            served = &mut served => return match served {
                Ok(served) => {
                    log::info!(backup_id = served.report.id.as_str(); "{trigger} kick served by member {}: backup {} {}", served.member, served.report.id, served.report.outcome.as_str());
                    write_line(out, &Event::Finished { report: served.report }).await
                }
                Err(e) => write_line(out, &Event::Error { message: e.to_string() }).await,
            },
            _ = tick.tick() => if let Some(running) = shared.runner.running() {
                write_line(out, &progress(&running)).await?;
            },
        }
    }
}

/// Serves a `run_now` kick with point-in-time archiving on: seals the open chunk, then checks that the chain from
/// the newest base reaches the point sealed. Ends with [`Event::Sealed`], or [`Event::Error`] when no restorable
/// point exists at the time of the kick.
pub async fn seal<W: AsyncWrite + Unpin>(shared: &Shared, trigger: &str, out: &mut W) -> std::io::Result<()> {
    let pitr = shared.pitr.as_ref().expect("only called with point-in-time archiving on");
    let sealed = match &shared.cluster {
        Some(cluster) if !pitr.archiving() => pitr::await_archived(&shared.runner.config(), cluster).await,
        _ => pitr.seal().await,
    };
    let checked = match sealed {
        Ok(sealed) => pitr::restorable_point(&shared.runner.config(), sealed).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let event = match checked {
        Ok((archived_to, summary)) => {
            log::info!(trigger = trigger; "{trigger} kick: {summary}");
            Event::Sealed { archived_to, summary }
        }
        Err(message) => {
            log::error!(trigger = trigger; "{trigger} kick: no restorable point: {message}");
            Event::Error { message }
        }
    };
    write_line(out, &event).await
}
