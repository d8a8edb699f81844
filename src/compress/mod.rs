//! Compression of the archive stream: zstd (default), gzip (what `mongorestore --gzip` reads) or none.

use std::pin::Pin;

use async_compression::Level;
use async_compression::codecs::zstd::params::CParameter;
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The compression applied to an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "agent", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd frames; stock tools read it with `zstd -dc x | mongorestore --archive`.
    Zstd,
    /// One gzip stream around the archive, exactly what `mongodump --gzip --archive` writes.
    Gzip,
    /// Plain archive, for debugging.
    None,
}

/// Levels and threads for the encoders.
#[derive(Debug, Clone, Copy)]
pub struct CompressionSettings {
    /// Which codec.
    pub compression: Compression,
    /// zstd level (1..=19).
    pub zstd_level: i32,
    /// gzip level (1..=9).
    pub gzip_level: u32,
    /// zstd worker threads; 0 means one per core.
    pub threads: u32,
}

impl Compression {
    /// File name of the archive object for this compression.
    pub fn archive_name(self) -> &'static str {
        match self {
            Compression::Zstd => "archive.zst",
            Compression::Gzip => "archive.gz",
            Compression::None => "archive",
        }
    }

    /// Detects the compression from the first bytes (zstd frame magic, gzip magic, else plain).
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Compression::Zstd
        } else if prefix.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        })
    }
}

/// Bytes each zstd worker compresses at a time. zstd's multi-threaded buffers (a round buffer of input plus a
/// compressed buffer per job in flight) scale with the job size, which defaults to 8 MiB at level 3: 109 MiB of heap
/// in a backup, most of its memory. At 2 MiB the compressed size stays within 0.01% and the stage is no slower
/// (README, Performance).
const ZSTD_JOB_BYTES: u32 = 2 << 20;

/// A boxed writer; the pipeline does not care which codec sits in front of the store.
pub type BoxWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Wraps `out` in the configured encoder. The caller must `shutdown()` it to write the final frame.
pub fn encoder<W: AsyncWrite + Send + 'static>(settings: &CompressionSettings, out: W) -> BoxWriter {
    match settings.compression {
        Compression::Zstd => {
            let threads = if settings.threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
            } else {
                settings.threads
            };
            Box::pin(ZstdEncoder::with_quality_and_params(
                out,
                Level::Precise(settings.zstd_level),
                &[CParameter::nb_workers(threads), CParameter::job_size(ZSTD_JOB_BYTES)],
            ))
        }
        Compression::Gzip => Box::pin(GzipEncoder::with_quality(out, Level::Precise(settings.gzip_level as i32))),
        Compression::None => Box::pin(out),
    }
}

/// Copies all of `input` into `encoder` and finishes its stream; returns the bytes copied.
///
/// Unlike `tokio::io::copy` it never flushes before the end. `copy` flushes its writer whenever the reader is not
/// ready, and a zstd flush closes the multi-threaded job in progress and waits for its output: fed from a file,
/// the two zstd workers took turns (1.07 of 2 cores, 0.78 × the speed of the zstd CLI) instead of working side by
/// side.
pub async fn compress_all<R: AsyncRead + Unpin>(input: &mut R, encoder: &mut BoxWriter) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buf[..n]).await?;
        total += n as u64;
    }
    encoder.shutdown().await?;
    Ok(total)
}

/// Compresses a small object whole (an oplog chunk), single-threaded: chunks are stored in one piece.
pub async fn compress_bytes(settings: &CompressionSettings, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    match settings.compression {
        Compression::Zstd => {
            let mut encoder = ZstdEncoder::with_quality(Vec::new(), Level::Precise(settings.zstd_level));
            encoder.write_all(plain).await?;
            encoder.shutdown().await?;
            Ok(encoder.into_inner())
        }
        Compression::Gzip => {
            let mut encoder = GzipEncoder::with_quality(Vec::new(), Level::Precise(settings.gzip_level as i32));
            encoder.write_all(plain).await?;
            encoder.shutdown().await?;
            Ok(encoder.into_inner())
        }
        Compression::None => Ok(plain.to_vec()),
    }
}

/// Detects the compression of `input` from its magic bytes and returns a reader of the plain archive.
/// Multi-member gzip and multi-frame zstd (parallel compressors) are read whole.
pub async fn decoder<R: AsyncRead + Send + Unpin + 'static>(
    input: R,
) -> std::io::Result<(Compression, Pin<Box<dyn AsyncRead + Send>>)> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let compression = Compression::detect(Pin::new(&mut input).fill_buf().await?);
    let reader: Pin<Box<dyn AsyncRead + Send>> = match compression {
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(input);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Gzip => {
            let mut d = GzipDecoder::new(input);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::None => Box::pin(input),
    };
    Ok((compression, reader))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn round_trip(compression: Compression, data: &[u8]) -> Vec<u8> {
        let settings = CompressionSettings { compression, zstd_level: 3, gzip_level: 6, threads: 2 };
        let (w, r) = tokio::io::duplex(1 << 16);
        let data = data.to_vec();
        let writer = tokio::spawn(async move {
            let mut enc = encoder(&settings, w);
            enc.write_all(&data).await.unwrap();
            enc.shutdown().await.unwrap();
        });
        let (found, mut dec) = decoder(r).await.unwrap();
        assert_eq!(found, compression);
        let mut out = Vec::new();
        dec.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn every_codec_round_trips_and_is_detected() {
        let mut data = super::super::archive::MAGIC.to_le_bytes().to_vec();
        data.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            assert_eq!(round_trip(c, &data).await, data, "{c}");
        }
    }

    #[tokio::test]
    async fn concatenated_gzip_members_read_whole() {
        let mut both = Vec::new();
        for part in [b"hello ".as_slice(), b"world"] {
            let mut enc = GzipEncoder::new(Vec::new());
            enc.write_all(part).await.unwrap();
            enc.shutdown().await.unwrap();
            both.extend(enc.into_inner());
        }
        let (_, mut dec) = decoder(std::io::Cursor::new(both)).await.unwrap();
        let mut out = String::new();
        dec.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    /// A sink that counts the flushes it receives before it is shut down.
    struct FlushCounter(Arc<AtomicUsize>, bool);

    impl AsyncWrite for FlushCounter {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            if !self.1 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.1 = true;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn compress_all_does_not_flush_while_the_input_is_slow() {
        let settings = CompressionSettings { compression: Compression::Zstd, zstd_level: 3, gzip_level: 6, threads: 2 };
        let flushes = Arc::new(AtomicUsize::new(0));
        let mut encoder = encoder(&settings, FlushCounter(flushes.clone(), false));
        // A reader that is often not ready: a pipe fed in small pieces by another task.
        let (mut feed, mut input) = tokio::io::duplex(1 << 12);
        let writer = tokio::spawn(async move {
            for i in 0..256u32 {
                feed.write_all(&[(i % 251) as u8; 1 << 12]).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let copied = compress_all(&mut input, &mut encoder).await.unwrap();
        writer.await.unwrap();
        assert_eq!(copied, 256 << 12);
        // Only the end of the stream may flush (the encoder flushes once when it is shut down).
        assert!(flushes.load(Ordering::Relaxed) <= 1, "{} flushes", flushes.load(Ordering::Relaxed));
    }
}
