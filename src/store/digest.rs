//! Counts and hashes bytes as they stream through, so every backend reports the same sha256 without a second read.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// Wraps a reader; [`DigestingReader::summary`] gives the byte count and SHA-256 of everything read.
pub struct DigestingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> DigestingReader<R> {
    /// Starts hashing `inner`.
    pub fn new(inner: R) -> Self {
        DigestingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Byte count and lowercase hex SHA-256 of everything read.
    pub fn summary(self) -> super::PutSummary {
        super::PutSummary { bytes: self.bytes, sha256: hex::encode(self.hasher.finalize()) }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DigestingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let fresh = &buf.filled()[before..];
            self.hasher.update(fresh);
            self.bytes += fresh.len() as u64;
        }
        poll
    }
}
