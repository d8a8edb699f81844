//! `run_now`: start a backup or attach to the running one, stream its progress, end with its report. With
//! point-in-time archiving on, the kick seals the open oplog chunk instead, unless it asks for a full backup.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::daemon::protocol::{Event, write_line};
use crate::daemon::{Shared, pitr};

/// How often progress events are sent.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Serves a `run_now` request.
pub async fn handle<W: AsyncWrite + Unpin>(shared: &Shared, trigger: &str, out: &mut W) -> std::io::Result<()> {
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
            _ = tick.tick() => {
                let progress = &running.progress;
                let event = Event::Progress {
                    phase: progress.phase(),
                    summary: progress.summary(),
                    documents: progress.totals().0,
                    bytes: progress.archive_bytes.load(Ordering::Relaxed),
                };
                write_line(out, &event).await?;
            }
        }
    }
}

/// Serves a `run_now` kick with point-in-time archiving on: seals the open chunk, then checks that the chain from
/// the newest base reaches the point sealed. Ends with [`Event::Sealed`], or [`Event::Error`] when no restorable
/// point exists at the time of the kick.
pub async fn seal<W: AsyncWrite + Unpin>(shared: &Shared, trigger: &str, out: &mut W) -> std::io::Result<()> {
    let pitr = shared.pitr.as_ref().expect("only called with point-in-time archiving on");
    let checked = match pitr.seal().await {
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
