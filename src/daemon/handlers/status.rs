//! `status`: the daemon's state in one reply.

use tokio::io::AsyncWrite;

use crate::daemon::Shared;
use crate::daemon::protocol::{Event, write_line};

/// Serves a `status` request.
pub async fn handle<W: AsyncWrite + Unpin>(shared: &Shared, out: &mut W) -> std::io::Result<()> {
    let next = shared.next_scheduled().map(|t| t.to_rfc3339());
    let mut reply = shared.runner.status(&shared.config_path.display().to_string(), next);
    if let Some(pitr) = &shared.pitr {
        reply.pitr = Some(pitr.report(&shared.runner.config()).await);
    }
    reply.cluster = shared.cluster.as_ref().map(|c| c.status());
    write_line(out, &Event::Status(Box::new(reply))).await
}
