//! Recipients (from the config) and identities (from an identity file), each with its fingerprint.

use std::str::FromStr;

use age::x25519;
use sha2::{Digest, Sha256};

use super::CryptError;

/// The fingerprint of a recipient: the first 16 hex digits of the SHA-256 of its `age1…` string.
pub fn fingerprint(recipient: &x25519::Recipient) -> String {
    let digest = Sha256::digest(recipient.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The public keys new objects are encrypted to (`[encryption] recipients`). Any one identity opens the object.
#[derive(Clone)]
pub struct Recipients(Vec<x25519::Recipient>);

impl Recipients {
    /// Parses `age1…` strings; an empty list is allowed here and means "do not encrypt" to the caller.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, CryptError> {
        values
            .iter()
            .enumerate()
            .map(|(index, v)| {
                x25519::Recipient::from_str(v.as_ref().trim())
                    .map_err(|reason| CryptError::InvalidRecipient { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Recipients)
    }

    /// Whether there is no recipient (encryption off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fingerprints, in config order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(fingerprint).collect()
    }

    /// The keys, for the encryptor.
    #[cfg(feature = "agent")]
    pub(crate) fn keys(&self) -> &[x25519::Recipient] {
        &self.0
    }
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Recipients").field(&self.fingerprints()).finish()
    }
}

/// The private keys of an identity file. Never printed: `Debug` shows fingerprints only, and errors about the file
/// name lines, not their contents.
pub struct Identities(Vec<x25519::Identity>);

impl Identities {
    /// Parses an age identity file (what `age-keygen -o FILE` writes): `#` comments and blank lines are skipped,
    /// every other line must be an X25519 identity. `source_name` says where the text came from, for errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, CryptError> {
        let invalid = |reason: String| CryptError::InvalidIdentity { source_name: source_name.to_string(), reason };
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = x25519::Identity::from_str(line).map_err(|_| {
                let hint = if line.starts_with("age1") { " (that is a public key, the recipient)" } else { "" };
                invalid(format!("line {} is not an age X25519 identity{hint}", n + 1))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(invalid("it holds no identity".into()));
        }
        Ok(Identities(keys))
    }

    /// The fingerprints of the identities' recipients, in file order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(|k| fingerprint(&k.to_public())).collect()
    }

    /// Whether one of these identities opens an object encrypted to the recipients with fingerprints `needed`.
    pub fn opens(&self, needed: &[String]) -> bool {
        self.fingerprints().iter().any(|f| needed.contains(f))
    }

    /// The keys, for the decryptor.
    #[cfg(feature = "agent")]
    pub(crate) fn keys(&self) -> &[x25519::Identity] {
        &self.0
    }
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Identities").field(&self.fingerprints()).finish()
    }
}

#[cfg(test)]
mod tests {
    use age::secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn fingerprint_is_sha256_prefix_of_the_recipient_string() {
        // A key `age-keygen` made; `printf %s age1mj5… | sha256sum | cut -c1-16` gives the expected value.
        let r = x25519::Recipient::from_str("age1mj5tdecfufwlklcycndk95nlc42semcvf2j29lenascksqv2jvgqqrq8cs").unwrap();
        assert_eq!(fingerprint(&r), "73438210c856055d");
    }

    #[test]
    fn an_identity_file_parses_and_opens_its_own_recipient() {
        let key = x25519::Identity::generate();
        let text =
            format!("# created: now\n# public key: {}\n{}\n\n", key.to_public(), key.to_string().expose_secret());
        let ids = Identities::parse(&text, "test").unwrap();
        let recipients = Recipients::parse(&[key.to_public().to_string()]).unwrap();
        assert_eq!(ids.fingerprints(), recipients.fingerprints());
        assert!(ids.opens(&recipients.fingerprints()));
        assert!(!ids.opens(&["0000000000000000".to_string()]));
        // Debug never shows the secret.
        assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn bad_identity_files_name_the_line_not_its_contents() {
        let err = Identities::parse("# c\nAGE-SECRET-KEY-1NOTAKEY\n", "/k").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("NOTAKEY"), "{err}");
        let pubkey = x25519::Identity::generate().to_public().to_string();
        assert!(Identities::parse(&pubkey, "/k").unwrap_err().to_string().contains("public key"));
        assert!(Identities::parse("# only comments\n", "/k").unwrap_err().to_string().contains("no identity"));
    }

    #[test]
    fn bad_recipients_name_their_position_not_their_value() {
        let good = x25519::Identity::generate().to_public().to_string();
        let err = Recipients::parse(&[good.as_str(), "AGE-SECRET-KEY-1XYZ"]).unwrap_err().to_string();
        assert!(err.contains("recipients[1]"), "{err}");
        assert!(!err.contains("XYZ"), "{err}");
    }
}
