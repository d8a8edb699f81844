//! Client-side encryption: backups the VM can write but cannot read back.
//!
//! The VM holds only age X25519 **recipients** (public keys, `age1…`); the matching **identities** (private keys,
//! `AGE-SECRET-KEY-1…`) stay with the operators. Any stored object stream (an archive today, oplog chunks of
//! point-in-time archiving next) goes through [`encrypting_writer`] after compression on its way to the store and
//! through [`decrypting_reader`] (or [`open`], which also accepts plain input) before decompression on its way
//! back. The format is age v1, exactly what the `age` CLI reads and writes: a header wrapping a random file key for
//! each recipient, then the STREAM construction (ChaCha20-Poly1305 over 64 KiB chunks, the last one flagged), so a
//! flipped, dropped or reordered byte anywhere fails authentication and a truncated stream is an error, never a
//! clean end. Memory is one chunk each way; nothing touches the disk. No cryptography is written here: the `age`
//! crate does all of it.
//!
//! A **fingerprint** names a key in manifests, `list` and error messages without being the key: the first 16 hex
//! digits of the SHA-256 of the recipient string as age prints it (`age1…`, lowercase bech32). An identity's
//! fingerprint is that of its recipient (`age-keygen -y KEY`), so an operator can tell which key file a backup needs.
//! It is printable by design: it reveals nothing a public key would not.

mod keys;
#[cfg(feature = "agent")]
mod stream;

pub use keys::{Identities, Recipients, fingerprint};
#[cfg(feature = "agent")]
pub use stream::{decrypting_reader, encrypting_writer, load_identities, open, unlock};

/// The secret name of the identity file (see [`crate::config::read_secret`]): `--identity FILE`,
/// `[encryption] identity_file`, `$MONGO_BACKUP_AGENT_AGE_IDENTITY` or the credential `age-identity`.
pub const IDENTITY_SECRET: &str = "age-identity";

/// The first bytes of every age v1 file: how plain and encrypted input are told apart.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// What a manifest records about an encrypted object: enough to say which key opens it, nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Always "age": the format of the stored bytes (what `age -d` reads).
    pub format: String,
    /// [`fingerprint`]s of the recipients the object was encrypted to; any one of their identities opens it.
    pub recipients: Vec<String>,
}

impl Encryption {
    /// What an object encrypted to `recipients` records.
    pub fn for_recipients(recipients: &Recipients) -> Self {
        Encryption { format: "age".into(), recipients: recipients.fingerprints() }
    }
}

/// Why encrypting or decrypting could not start, or stopped. Each message names the object and the key(s) involved
/// by fingerprint, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// `[encryption] recipients` holds something that is not an age X25519 recipient.
    #[error(
        "encryption.recipients[{index}] is not an age X25519 recipient ({reason}): use the `age1…` line `age-keygen` \
         prints as \"Public key\""
    )]
    InvalidRecipient {
        /// Position in the list.
        index: usize,
        /// What the parser said (never the value: a pasted secret key must not end up in a log).
        reason: &'static str,
    },
    /// The identity file could not be used. Its contents are never part of the message.
    #[error(
        "identity file {source_name}: {reason}; it must hold age X25519 identities (AGE-SECRET-KEY-1…), one a line"
    )]
    InvalidIdentity {
        /// Where it came from (path, or the variable/credential name).
        source_name: String,
        /// What is wrong ("line 3 is not an identity", "no identity in it").
        reason: String,
    },
    /// The object is encrypted and no identity was given.
    #[error("{what} is encrypted{}: pass --identity FILE (or set [encryption] identity_file)", needs(.needed))]
    IdentityNeeded {
        /// The object ("backup 20261124T101500Z-412a9c", "archive /tmp/x.zst").
        what: String,
        /// Fingerprints of the keys that open it, when known (a manifest says; a bare file does not).
        needed: Vec<String>,
    },
    /// None of the identities given opens the object.
    #[error(
        "{what} is encrypted{} but the identity given holds key {}: pass --identity FILE with a key it needs",
        needs(.needed),
        .given.join(", ")
    )]
    WrongIdentity {
        /// The object.
        what: String,
        /// Fingerprints of the keys that open it, when known.
        needed: Vec<String>,
        /// Fingerprints of the identities that were tried.
        given: Vec<String>,
    },
    /// The object's bytes do not authenticate: damaged or tampered with. Nothing was written from it.
    #[error("{what} failed authentication ({reason}): it was damaged or tampered with; use another backup")]
    Damaged {
        /// The object.
        what: String,
        /// What age found.
        reason: String,
    },
    /// The manifest says encrypted but the stored bytes are plain (or the other way round is harmless and allowed).
    #[error(
        "{what} is recorded as encrypted but its stored bytes are not an age file: it was replaced; use another backup"
    )]
    NotEncrypted {
        /// The object.
        what: String,
    },
    /// Encrypting could not start: the recipients were refused, or the header could not be written.
    #[error("encrypting {what}: {reason}")]
    Encrypt {
        /// The object.
        what: String,
        /// Why.
        reason: String,
    },
}

/// ", which needs key(s) a, b" or nothing, for the messages above.
fn needs(needed: &[String]) -> String {
    match needed {
        [] => String::new(),
        [one] => format!(" for key {one}"),
        many => format!(" for keys {}", many.join(", ")),
    }
}

impl CryptError {
    /// Whether the operator gave the wrong or no key (a usage problem, exit 2) rather than the data being bad.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CryptError::InvalidRecipient { .. }
                | CryptError::InvalidIdentity { .. }
                | CryptError::IdentityNeeded { .. }
                | CryptError::WrongIdentity { .. }
        )
    }
}
