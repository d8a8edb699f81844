//! The `/metrics` endpoint: Prometheus (or node_exporter, or an SSH tunnel) scrapes the agent on a loopback address.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{CONTENT_TYPE, Metrics, MetricsError};

/// Longest a scrape connection may stay open: a scrape takes milliseconds, so this only ends stuck clients.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// Binds the endpoint's address, refusing any that is not loopback (the config checks this too; this is the last
/// line, since the numbers say when the database was last backed up and nothing should expose them by accident).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Answers `GET /metrics` on `listener` until `shutdown` completes; other paths get 404, other methods 405. One
/// bad connection only ends itself. Connections still open at shutdown (a scraper's keep-alive) are closed with it.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // Dropping the set when this returns aborts every connection task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    log::warn!("metrics endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIMIT, connection).await {
                log::debug!("metrics endpoint: connection ended with an error: {e}");
            }
        });
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, CONTENT_TYPE, metrics.render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found; metrics are at /metrics\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}
