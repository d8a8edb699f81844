//! An in-memory pipe between the archive producer and the store, whose reader fails unless the writer finished.
//!
//! A plain pipe turns a crashed producer into a clean end of stream, and a store would then commit a truncated
//! archive. Here the end of stream is only clean after [`PipeWriter::finish`]; otherwise the store's read fails
//! and it commits nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Producer side. Usually owned by an encoder, which is why completion is a separate handle.
pub struct PipeWriter {
    inner: DuplexStream,
}

/// Marks the stream complete; must be called before the writer is dropped for the reader to see a clean end.
pub struct Completion(Arc<AtomicBool>);

/// Consumer side, handed to the store.
pub struct PipeReader {
    inner: DuplexStream,
    finished: Arc<AtomicBool>,
}

/// A pipe buffering at most `capacity` bytes: the bound on memory between producer and store.
pub fn pipe(capacity: usize) -> (PipeWriter, PipeReader, Completion) {
    let (w, r) = tokio::io::duplex(capacity);
    let finished = Arc::new(AtomicBool::new(false));
    (PipeWriter { inner: w }, PipeReader { inner: r, finished: finished.clone() }, Completion(finished))
}

impl Completion {
    /// Marks the stream complete; once the writer is dropped the reader sees a clean end of stream.
    pub fn finish(self) {
        self.0.store(true, Ordering::Release);
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shutdown is what the encoders call at their end; the pipe only closes on `finish` or drop.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && !self.finished.load(Ordering::Acquire) => {
                Poll::Ready(Err(io::Error::other("the archive producer stopped before the archive was complete")))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn end_of_stream_is_an_error_unless_finished() {
        let (mut w, mut r, _unfinished) = pipe(64);
        w.write_all(b"partial").await.unwrap();
        drop(w);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).await.is_err());

        let (mut w, mut r, completion) = pipe(64);
        w.write_all(b"whole").await.unwrap();
        completion.finish();
        drop(w);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"whole");
    }
}
