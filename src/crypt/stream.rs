//! The two stream layers and the checks before them: encrypt on the way to the store, decrypt on the way back.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader, ReadBuf};
use tokio_util::compat::{
    FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt,
};

use super::{AGE_MAGIC, CryptError, Encryption, IDENTITY_SECRET, Identities, Recipients};
use crate::config::read_secret;

/// A boxed plain-text reader: what [`open`] and [`decrypting_reader`] hand on to the decompressor.
pub type PlainReader = Pin<Box<dyn AsyncRead + Send>>;

/// Bytes read from the store at a time while decrypting: one age chunk and its tag, so every read decrypts a chunk.
const READ_BUFFER: usize = 64 * 1024 + 16;

/// Wraps `inner` so that what is written to it reaches `inner` encrypted to every recipient (any one identity
/// opens it). Writes the age header at once; the caller must `shutdown()` the writer to write the last,
/// end-flagged chunk, or the object will not decrypt (a reader sees "truncated", never a clean end). `what` names
/// the object in errors.
pub async fn encrypting_writer<W>(
    recipients: &Recipients,
    inner: W,
    what: &str,
) -> Result<impl AsyncWrite + Send + Unpin + use<W>, CryptError>
where
    W: AsyncWrite + Send + Unpin,
{
    let encrypt = |reason: String| CryptError::Encrypt { what: what.to_string(), reason };
    let encryptor = age::Encryptor::with_recipients(recipients.keys().iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| encrypt(e.to_string()))?;
    let writer = encryptor
        .wrap_async_output(inner.compat_write())
        .await
        .map_err(|e| encrypt(format!("writing the header: {e}")))?;
    Ok(writer.compat_write())
}

/// Decrypts `inner`, an age file encrypted to one of `identities`. The header is read and the file key unwrapped
/// here, so a wrong key fails before a byte of plain text exists; after that each 64 KiB chunk is authenticated
/// before it is handed on, and a damaged or truncated stream is a read error naming `what`, never a clean end.
pub async fn decrypting_reader<R>(identities: &Identities, inner: R, what: &str) -> Result<PlainReader, CryptError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    decrypt(identities, inner, what, &[]).await
}

/// Checks, before any I/O, that an object recorded as `recorded` can be opened with `identities`: the check the
/// commands run before they connect to anything, so a missing or wrong key writes nothing.
pub fn unlock(identities: Option<&Identities>, what: &str, recorded: Option<&Encryption>) -> Result<(), CryptError> {
    let Some(recorded) = recorded else { return Ok(()) };
    let needed = recorded.recipients.clone();
    let Some(identities) = identities else {
        return Err(CryptError::IdentityNeeded { what: what.to_string(), needed });
    };
    if !identities.opens(&needed) {
        return Err(CryptError::WrongIdentity { what: what.to_string(), needed, given: identities.fingerprints() });
    }
    Ok(())
}

/// Plain text from `input`, whether it is encrypted or not: an age file (told by its first bytes) is decrypted
/// with `identities`, anything else passes through; the flag says which it was. `recorded` is what the manifest
/// says about the object, when there is one: then plain bytes are refused (a replaced object), and a key mismatch
/// names the keys it needs.
pub async fn open<R>(
    input: R,
    identities: Option<&Identities>,
    what: &str,
    recorded: Option<&Encryption>,
) -> Result<(bool, PlainReader), CryptError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    unlock(identities, what, recorded)?;
    let mut input = BufReader::with_capacity(READ_BUFFER, input);
    let mut head = Vec::with_capacity(AGE_MAGIC.len());
    (&mut input)
        .take(AGE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .await
        .map_err(|e| CryptError::Damaged { what: what.to_string(), reason: format!("reading its first bytes: {e}") })?;
    let input = io::Cursor::new(head.clone()).chain(input);
    if head != AGE_MAGIC {
        return match recorded {
            Some(_) => Err(CryptError::NotEncrypted { what: what.to_string() }),
            None => Ok((false, Box::pin(input))),
        };
    }
    let Some(identities) = identities else {
        return Err(CryptError::IdentityNeeded { what: what.to_string(), needed: Vec::new() });
    };
    let needed = recorded.map(|r| r.recipients.clone()).unwrap_or_default();
    Ok((true, decrypt(identities, input, what, &needed).await?))
}

async fn decrypt<R>(identities: &Identities, inner: R, what: &str, needed: &[String]) -> Result<PlainReader, CryptError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let damaged = |reason: String| CryptError::Damaged { what: what.to_string(), reason };
    let buffered = BufReader::with_capacity(READ_BUFFER, inner).compat();
    let decryptor = age::Decryptor::new_async_buffered(buffered).await.map_err(|e| damaged(e.to_string()))?;
    let keys = identities.keys().iter().map(|k| k as &dyn age::Identity);
    let reader = decryptor.decrypt_async(keys).map_err(|e| match e {
        // The identities matched the fingerprints the manifest names, yet none unwraps the key: the header changed.
        age::DecryptError::NoMatchingKeys if needed.is_empty() => {
            CryptError::WrongIdentity { what: what.to_string(), needed: Vec::new(), given: identities.fingerprints() }
        }
        other => damaged(format!("header: {other}")),
    })?;
    Ok(Box::pin(Authenticated { inner: reader.compat(), what: what.to_string() }))
}

/// The decrypted stream, whose errors say that the stored bytes failed authentication rather than age's terse
/// "decryption error".
struct Authenticated<R> {
    inner: R,
    what: String,
}

impl<R: AsyncRead + Unpin> AsyncRead for Authenticated<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) => {
                let message = format!(
                    "{} failed authentication ({e}): it was damaged or tampered with; use another backup",
                    self.what
                );
                Poll::Ready(Err(io::Error::new(e.kind(), message)))
            }
            other => other,
        }
    }
}

/// The identities given by `--identity FILE` (`flag`), else `[encryption] identity_file` (`configured`), else the
/// secret's other sources ([`read_secret`]); `None` when none has one. The file's contents never reach an error.
pub fn load_identities(flag: Option<&Path>, configured: Option<&Path>) -> Result<Option<Identities>, CryptError> {
    let file = flag.or(configured);
    let source_name = file.map_or_else(|| format!("secret {IDENTITY_SECRET}"), |p| p.display().to_string());
    let text = read_secret(IDENTITY_SECRET, file)
        .map_err(|e| CryptError::InvalidIdentity { source_name: source_name.clone(), reason: e.to_string() })?;
    text.map(|text| Identities::parse(&text, &source_name)).transpose()
}

#[cfg(test)]
mod tests {
    use age::secrecy::ExposeSecret;
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn key() -> (Identities, Recipients) {
        let key = age::x25519::Identity::generate();
        let ids = Identities::parse(key.to_string().expose_secret(), "test").unwrap();
        (ids, Recipients::parse(&[key.to_public().to_string()]).unwrap())
    }

    async fn seal(recipients: &Recipients, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = encrypting_writer(recipients, &mut out, "test").await.unwrap();
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        out
    }

    async fn open_with(ids: Option<&Identities>, bytes: Vec<u8>, rec: Option<&Encryption>) -> CryptError {
        open(io::Cursor::new(bytes), ids, "backup b", rec).await.err().expect("refused")
    }

    async fn read_all(mut r: PlainReader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.map(|_| out)
    }

    fn data() -> Vec<u8> {
        (0..300_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn round_trip_through_both_layers_and_plain_passes_through() {
        let (ids, recipients) = key();
        let sealed = seal(&recipients, &data()).await;
        assert!(sealed.starts_with(AGE_MAGIC));
        let recorded = Encryption::for_recipients(&recipients);
        let (encrypted, plain) = open(io::Cursor::new(sealed.clone()), Some(&ids), "t", Some(&recorded)).await.unwrap();
        assert!(encrypted);
        assert_eq!(read_all(plain).await.unwrap(), data());
        let plain = decrypting_reader(&ids, io::Cursor::new(sealed), "t").await.unwrap();
        assert_eq!(read_all(plain).await.unwrap(), data());
        // Unencrypted input, no manifest saying otherwise: passed through untouched, no identity needed.
        let (encrypted, plain) = open(io::Cursor::new(b"plain".to_vec()), None, "t", None).await.unwrap();
        assert!(!encrypted);
        assert_eq!(read_all(plain).await.unwrap(), b"plain");
    }

    #[tokio::test]
    async fn missing_wrong_key_and_replaced_objects_are_refused_before_reading() {
        let (ids, recipients) = key();
        let (other, _) = key();
        let recorded = Encryption::for_recipients(&recipients);
        let sealed = seal(&recipients, &data()).await;
        let err = open_with(None, sealed.clone(), Some(&recorded)).await;
        assert!(matches!(err, CryptError::IdentityNeeded { .. }) && err.is_usage());
        assert!(err.to_string().contains(&recorded.recipients[0]), "{err}");
        let err = open_with(Some(&other), sealed.clone(), Some(&recorded)).await;
        assert!(matches!(err, CryptError::WrongIdentity { .. }) && err.is_usage(), "{err}");
        // A bare file: no fingerprints known, age itself finds no matching key.
        let err = open_with(Some(&other), sealed.clone(), None).await;
        assert!(matches!(err, CryptError::WrongIdentity { .. }), "{err}");
        let err = open_with(None, sealed, None).await;
        assert!(matches!(err, CryptError::IdentityNeeded { .. }), "{err}");
        let err = open_with(Some(&ids), b"plain bytes".to_vec(), Some(&recorded)).await;
        assert!(matches!(err, CryptError::NotEncrypted { .. }) && !err.is_usage(), "{err}");
    }

    #[tokio::test]
    async fn any_flipped_or_missing_byte_fails_authentication() {
        let (ids, recipients) = key();
        let sealed = seal(&recipients, &data()).await;
        // Header, first chunk, a middle chunk, the last byte; and a truncation at a chunk boundary.
        for at in [30, sealed.len() / 3, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            let result = match decrypting_reader(&ids, io::Cursor::new(bad), "t").await {
                Ok(r) => read_all(r).await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let err = result.expect_err("a flipped byte must not decrypt");
            assert!(err.contains("damaged or tampered") || err.contains("identity given"), "byte {at}: {err}");
        }
        // Without its last (end-flagged) chunk the stream ends at a chunk boundary: still an error.
        let last_chunk = data().len() % (64 * 1024) + 16;
        let truncated = sealed[..sealed.len() - last_chunk].to_vec();
        let r = decrypting_reader(&ids, io::Cursor::new(truncated), "t").await.unwrap();
        let err = read_all(r).await.unwrap_err().to_string();
        assert!(err.contains("damaged or tampered"), "{err}");
    }
}
