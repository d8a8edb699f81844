//! `run_now`: start a backup or attach to the running one, stream its progress, end with its report.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::daemon::Shared;
use crate::daemon::protocol::{Event, write_line};

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
