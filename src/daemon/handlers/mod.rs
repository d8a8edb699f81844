//! One handler per request, named like the request and the CLI verb that sends it.

mod run_now;
mod status;

use std::sync::Arc;

use tokio::io::BufReader;
use tokio::net::UnixStream;

use super::Shared;
use super::protocol::{self, Envelope, Event, PROTOCOL_VERSION, Request};

/// Serves one connection: reads its request, dispatches it, and logs (never propagates) what goes wrong, so one
/// bad client cannot take the daemon down.
pub async fn serve_connection(shared: Arc<Shared>, stream: UnixStream) {
    let peer = stream.peer_cred().ok();
    let who = peer.map_or_else(
        || "unknown peer".to_string(),
        |p| format!("uid {} gid {} pid {}", p.uid(), super::socket::group_name(p.gid()), p.pid().unwrap_or(0)),
    );
    let (read, mut write) = stream.into_split();
    if !peer.is_some_and(|p| shared.access.allows(&p)) {
        log::warn!("control socket: refused {who}: not root, the service user or a member of the socket's group");
        let message = "permission denied: only members of the socket's group may use the daemon".to_string();
        let _ = protocol::write_line(&mut write, &Event::Error { message }).await;
        return;
    }
    let envelope = match protocol::read_line::<Envelope, _>(&mut BufReader::new(read)).await {
        Ok(Some(envelope)) => envelope,
        Ok(None) => return,
        Err(e) => {
            log::warn!("control socket: {who}: {e}");
            let _ = protocol::write_line(&mut write, &Event::Error { message: e.to_string() }).await;
            return;
        }
    };
    if envelope.version != PROTOCOL_VERSION {
        let message = format!(
            "client speaks control protocol {}, this daemon (agent {}) speaks {PROTOCOL_VERSION}: use the same \
             mongo-backup-agent version for both (restart the service after an upgrade)",
            envelope.version,
            env!("CARGO_PKG_VERSION")
        );
        let _ = protocol::write_line(&mut write, &Event::Error { message }).await;
        return;
    }
    log::debug!("control socket: {who}: {:?}", envelope.request);
    let result = match envelope.request {
        Request::RunNow { trigger, full: false } if shared.pitr.is_some() => {
            run_now::seal(&shared, &trigger, &mut write).await
        }
        Request::RunNow { trigger, .. } => run_now::handle(&shared, &trigger, &mut write).await,
        Request::Status => status::handle(&shared, &mut write).await,
    };
    if let Err(e) = result {
        // The client went away (e.g. ssh interrupted); an attached backup keeps running.
        log::debug!("control socket: {who}: {e}");
    }
}
