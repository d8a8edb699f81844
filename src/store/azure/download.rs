//! Streaming download for restore and verify: the blob is read as ranged GETs, several in flight, handed on in
//! order. Memory is about chunk × (reads in flight + 1) whatever the blob size. Every range is pinned to the
//! ETag seen first (If-Match), so a blob replaced mid-read fails instead of splicing two versions; a range whose
//! body breaks off is fetched again within the retry budget.

use std::future::Future;
use std::num::NonZero;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use azure_core::http::Etag;
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders, HttpRange};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::Inner;
use super::retry::is_transient;
use crate::store::{ByteStream, StoreError};

/// A spawned task that is aborted when its handle is dropped (the reader went away).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

async fn fetch(
    inner: Arc<Inner>,
    blob: Arc<BlobClient>,
    key: Arc<str>,
    start: u64,
    len: u64,
    etag: Option<Etag>,
) -> Result<Bytes, StoreError> {
    let patience = inner.tuning.patience;
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut buf = vec![0u8; len as usize];
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::new(start, len)),
            if_match: etag.clone(),
            parallel: NonZero::new(1),
            partition_size: NonZero::new(len as usize),
            ..Default::default()
        };
        let attempt_result =
            tokio::time::timeout(patience.attempt_timeout_for(len), blob.download_into(&mut buf, Some(options))).await;
        let err = match attempt_result {
            Ok(Ok(done)) if done.len as u64 == len => return Ok(Bytes::from(buf)),
            Ok(Ok(done)) => azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                format!("range at {start} ended after {} of {len} bytes", done.len),
            ),
            Ok(Err(err)) => err,
            Err(_) => azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                format!("range at {start} took longer than {} s", patience.attempt_timeout_for(len).as_secs()),
            ),
        };
        // HTTP statuses were already retried by the pipeline; only broken bodies and timeouts are retried here.
        let retry_here = is_transient(&err) && !matches!(err.kind(), azure_core::error::ErrorKind::HttpResponse { .. });
        let delay = patience.backoff(attempt);
        if !retry_here || !patience.allows(started, delay) {
            return Err(inner.whereabouts.failure("read", &key, err));
        }
        log::info!("re-reading {key} at {start} after: {}", super::errors::redact(&err.to_string()));
        tokio::time::sleep(delay).await;
    }
}

pub(super) async fn get_stream(inner: &Arc<Inner>, key: &str) -> Result<ByteStream, StoreError> {
    let blob = Arc::new(inner.blob(key)?);
    let properties = blob.get_properties(None).await.map_err(|e| inner.whereabouts.failure("read", key, e))?;
    let bad_headers = |e: azure_core::Error| inner.whereabouts.failure("read", key, e);
    let size = properties.content_length().map_err(bad_headers)?.unwrap_or(0);
    let etag = properties.etag().map_err(bad_headers)?;
    let chunk = inner.tuning.download_chunk.max(1);
    let key: Arc<str> = Arc::from(key);
    let inner = inner.clone();
    let ranges = (0..size.div_ceil(chunk)).map(move |i| (i * chunk, chunk.min(size - i * chunk)));
    let concurrency = inner.tuning.download_concurrency;
    let stream = futures::stream::iter(ranges)
        .map(move |(start, len)| {
            let task = fetch(inner.clone(), blob.clone(), key.clone(), start, len, etag.clone());
            let key = key.clone();
            let handle = AbortOnDrop(tokio::spawn(task));
            async move {
                match handle.await {
                    Ok(Ok(bytes)) => Ok(bytes),
                    Ok(Err(err)) => Err(std::io::Error::other(err)),
                    Err(join) => Err(std::io::Error::other(format!("reading {key} failed: {join}"))),
                }
            }
        })
        // `buffered` keeps at most `concurrency` ranges spawned and yields them in order.
        .buffered(concurrency);
    Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
}
