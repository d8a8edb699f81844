//! Retries with a budget: transient failures (5xx, 408, 429, lost connections, a request that takes too long) are
//! retried with jittered exponential backoff until `retry_max_secs` is spent; anything else (403, 404, a TLS trust
//! failure, a bad token) comes back at once, so a wrong key never turns into a retry storm.
//!
//! The SDK's own retry policy is switched off: it would retry TLS trust failures and knows no per-try timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request, StatusCode};

/// HTTP statuses worth another attempt.
const TRANSIENT_STATUS: [StatusCode; 6] = [
    StatusCode::RequestTimeout,
    StatusCode::TooManyRequests,
    StatusCode::InternalServerError,
    StatusCode::BadGateway,
    StatusCode::ServiceUnavailable,
    StatusCode::GatewayTimeout,
];

/// How long to keep trying and how long one attempt may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Patience {
    /// Total time for retries of one request (the first attempt is always made).
    pub budget: Duration,
    /// Time one attempt may take, before adding [`Patience::per_mib`] per MiB of body.
    pub attempt_timeout: Duration,
}

impl Patience {
    /// Timeout for one attempt moving `bytes` of body either way: the base plus one second per MiB, so a
    /// 100 MiB block on a 1 MiB/s link is not cut off.
    pub fn attempt_timeout_for(&self, bytes: u64) -> Duration {
        self.attempt_timeout + Duration::from_secs(bytes / (1 << 20))
    }

    /// Delay before attempt `attempt + 1` (1-based `attempt`): 0.25 s doubling to 8 s, ±25 % jitter so that
    /// parallel block uploads do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = 0.25 * 2f64.powi(attempt.saturating_sub(1).min(5) as i32);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        Duration::from_secs_f64(base.min(8.0) * jitter)
    }

    /// Whether another attempt after waiting `delay` still fits the budget started at `started`.
    pub fn allows(&self, started: Instant, delay: Duration) -> bool {
        started.elapsed() + delay <= self.budget
    }
}

/// True when the error chain says the TLS handshake failed (an untrusted or mismatched certificate): retrying
/// cannot help.
pub(crate) fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if ["certificate", "handshake", "unknownissuer", "fatal alert"].iter().any(|m| text.contains(m)) {
            return true;
        }
        current = e.source();
    }
    false
}

/// Whether an error (not an HTTP status) deserves another attempt: lost or refused connections and timeouts, but
/// not TLS trust failures, credential failures or malformed requests.
pub(crate) fn is_transient(err: &azure_core::Error) -> bool {
    match err.kind() {
        ErrorKind::Io | ErrorKind::Connection => !is_tls_failure(err),
        ErrorKind::HttpResponse { status, .. } => TRANSIENT_STATUS.contains(status),
        _ => false,
    }
}

/// Put into a request's context to learn how many attempts the request took: a conditional create that finds
/// its object present on a *retry* may be looking at its own first attempt, whose response was lost.
#[derive(Debug, Default)]
pub(crate) struct Attempts(pub std::sync::atomic::AtomicU32);

/// The per-call retry policy installed in every client this store builds.
#[derive(Debug)]
pub(crate) struct RetryPolicy {
    patience: Patience,
}

impl RetryPolicy {
    pub fn new(patience: Patience) -> Self {
        RetryPolicy { patience }
    }
}

#[async_trait::async_trait]
impl Policy for RetryPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let started = Instant::now();
        let timeout = self.patience.attempt_timeout_for(request.body().len().unwrap_or(0));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(counter) = ctx.value::<Arc<Attempts>>() {
                counter.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let result = match tokio::time::timeout(timeout, next[0].send(ctx, request, &next[1..])).await {
                Ok(result) => result,
                Err(_) => Err(azure_core::Error::with_message(
                    ErrorKind::Io,
                    format!("no response within {} s (storage.request_timeout_secs)", timeout.as_secs()),
                )),
            };
            let transient = match &result {
                Ok(response) => TRANSIENT_STATUS.contains(&response.status()),
                Err(err) => is_transient(err),
            };
            if !transient {
                return result;
            }
            let delay = self.patience.backoff(attempt);
            if !self.patience.allows(started, delay) {
                return result.map_err(|err| {
                    let message = format!(
                        "gave up after {attempt} attempts over {:.1} s (storage.retry_max_secs = {})",
                        started.elapsed().as_secs_f64(),
                        self.patience.budget.as_secs()
                    );
                    err.with_context(message)
                });
            }
            log::info!(
                "azure {} {} attempt {attempt} failed transiently ({}); retrying in {:.2} s",
                request.method(),
                request.url().path(),
                match &result {
                    Ok(response) => format!("HTTP {}", u16::from(response.status())),
                    Err(err) => super::errors::redact(&err.to_string()),
                },
                delay.as_secs_f64()
            );
            drop(result);
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_timeouts_scale_with_the_body() {
        let p = Patience { budget: Duration::from_secs(10), attempt_timeout: Duration::from_secs(30) };
        assert!(p.backoff(1) <= Duration::from_millis(313));
        assert!(p.backoff(20) <= Duration::from_secs(10));
        assert!(p.backoff(20) >= Duration::from_secs(6));
        assert_eq!(p.attempt_timeout_for(100 << 20), Duration::from_secs(130));
        assert!(p.allows(Instant::now(), Duration::from_secs(9)));
        assert!(!p.allows(Instant::now(), Duration::from_secs(11)));
    }

    #[test]
    fn only_transport_trouble_and_busy_statuses_are_transient() {
        let io = azure_core::Error::with_message(ErrorKind::Io, "connection reset by peer");
        assert!(is_transient(&io));
        let tls = azure_core::Error::with_message(ErrorKind::Connection, "invalid peer certificate: UnknownIssuer");
        assert!(!is_transient(&tls));
        let cred = azure_core::Error::with_message(ErrorKind::Credential, "no identity");
        assert!(!is_transient(&cred));
    }
}
