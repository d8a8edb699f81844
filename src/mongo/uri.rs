//! MongoDB URIs and driver errors as people may see them: never a password, and the reason in a few words.
//!
//! Every message that names a server goes through [`SafeUri`] (the hosts, or the URI with its secrets masked) and
//! every driver error through [`describe`], so a password in `[mongodb] uri` or `restore --to` reaches no error,
//! log line, journal field, `status` reply, notification or metric.

/// What replaces a secret in anything shown.
const MASK: &str = "****";

/// URI options whose values are secrets (compared in lowercase).
const SECRET_OPTIONS: [&str; 2] = ["tlscertificatekeyfilepassword", "authmechanismproperties"];

/// A MongoDB URI that displays without its secrets (`mongodb://user:****@host/`); [`SafeUri::scrub`] removes them
/// from any other text too, such as a driver error that quotes the URI.
#[derive(Clone, PartialEq, Eq)]
pub struct SafeUri {
    shown: String,
    hosts: String,
    /// Each secret as written in the URI and percent-decoded, longest first so none is masked only in part.
    secrets: Vec<String>,
}

impl SafeUri {
    /// Splits `uri` into what may be shown and the secrets it holds. Never fails: text that is not a URI is shown
    /// with everything between `://` and the last `@` masked.
    pub fn new(uri: &str) -> Self {
        let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
        // The hosts start after the last `@` before the options, so an unescaped `/` or `@` in a password still
        // counts as the password.
        let options_at = rest.find('?').unwrap_or(rest.len());
        let hosts_at = rest[..options_at].rfind('@').map_or(0, |at| at + 1);
        let (authority, tail) = rest.split_at(rest[hosts_at..].find(['/', '?']).map_or(rest.len(), |i| hosts_at + i));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let mut secrets = Vec::new();
        let shown_userinfo = userinfo.map(|userinfo| match userinfo.split_once(':') {
            Some((user, password)) => {
                secrets.push(password.to_string());
                format!("{user}:{MASK}@")
            }
            None => format!("{userinfo}@"),
        });
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let options: Vec<String> = query
            .split('&')
            .filter(|option| !option.is_empty())
            .map(|option| match option.split_once('=') {
                Some((key, value)) if SECRET_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) => {
                    secrets.push(value.to_string());
                    format!("{key}={MASK}")
                }
                _ => option.to_string(),
            })
            .collect();
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
        let query = if options.is_empty() { String::new() } else { format!("?{}", options.join("&")) };
        let shown = format!("{scheme}{}{hosts}{path}{query}", shown_userinfo.unwrap_or_default());
        SafeUri { shown, hosts: hosts.to_string(), secrets }
    }

    /// The host list (`127.0.0.1:27017` or `a:27017,b:27017`): what messages name the server by.
    pub fn hosts(&self) -> &str {
        if self.hosts.is_empty() { &self.shown } else { &self.hosts }
    }

    /// `text` with every secret of this URI masked.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |text, secret| text.replace(secret.as_str(), MASK))
    }
}

impl std::fmt::Display for SafeUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for SafeUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafeUri({})", self.shown)
    }
}

/// `%XX` escapes decoded (a password with `@` or `:` must be written escaped in a URI).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| text.get(i + 1..i + 3)).flatten();
        match escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A driver error in one line a person can act on: "connection refused", "authentication failed: …",
/// "Unauthorized (13): not authorized on shop …", instead of the driver's topology description and error labels.
pub fn describe(err: &mongodb::error::Error) -> String {
    use mongodb::error::ErrorKind;
    match err.kind.as_ref() {
        ErrorKind::Authentication { message, .. } => format!("authentication failed: {}", first_line(message)),
        ErrorKind::Command(command) => format!("{} ({}): {}", command.code_name, command.code, command.message),
        ErrorKind::ServerSelection { message, .. } => {
            reason_in(message).unwrap_or("no server answered within the server selection timeout").to_string()
        }
        ErrorKind::DnsResolve { .. } => "host name not found".to_string(),
        ErrorKind::Io(io) => reason_in(&io.to_string()).map_or_else(|| io.to_string(), str::to_string),
        other => {
            let text = other.to_string();
            reason_in(&text).map_or_else(|| first_line(&text).to_string(), str::to_string)
        }
    }
}

/// Whether the error says the credentials were refused (the hint then points at the user and password).
pub fn is_authentication(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), mongodb::error::ErrorKind::Authentication { .. })
        || reason_in(&err.kind.to_string()) == Some("authentication failed")
}

/// The usual causes of an unreachable server, found in the driver's text (a server selection error nests the
/// per-server errors in a topology description).
fn reason_in(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    const REASONS: [(&str, &str); 9] = [
        ("connection refused", "connection refused"),
        ("authentication failed", "authentication failed"),
        ("failed to lookup address", "host name not found"),
        ("name or service not known", "host name not found"),
        ("dns resolution", "host name not found"),
        ("certificate", "TLS certificate rejected"),
        ("tls", "TLS handshake failed"),
        ("timed out", "timed out"),
        ("connection reset", "connection reset"),
    ];
    REASONS.iter().find(|(needle, _)| lower.contains(needle)).map(|(_, reason)| *reason)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_options_are_masked() {
        let uri = SafeUri::new("mongodb://backup:s%40cret:pw@db1:27017,db2:27018/admin?replicaSet=rs&authSource=admin");
        assert_eq!(uri.to_string(), "mongodb://backup:****@db1:27017,db2:27018/admin?replicaSet=rs&authSource=admin");
        assert_eq!(uri.hosts(), "db1:27017,db2:27018");
        assert_eq!(uri.scrub("x s%40cret:pw y s@cret:pw z"), "x **** y **** z");
        let tls = SafeUri::new("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=hunter2");
        assert_eq!(tls.to_string(), "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=****");
        assert_eq!(tls.scrub("bad key hunter2"), "bad key ****");
    }

    #[test]
    fn uris_without_secrets_show_as_written() {
        for text in ["mongodb://127.0.0.1:27017/", "mongodb+srv://user@cluster.example/db", "mongodb://h"] {
            assert_eq!(SafeUri::new(text).to_string(), text);
            assert_eq!(SafeUri::new(text).scrub("same text"), "same text");
        }
        assert_eq!(SafeUri::new("mongodb://127.0.0.1:42001/?x=1").hosts(), "127.0.0.1:42001");
        // Not a URI at all: the userinfo-looking part is still masked.
        assert_eq!(SafeUri::new("u:pw@host").to_string(), "u:****@host");
        assert_eq!(SafeUri::new("mongodb://u:p/w@ss@h/db").to_string(), "mongodb://u:****@h/db");
    }

    #[test]
    fn reasons_are_found_in_topology_descriptions() {
        let dump = "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: \
                    127.0.0.1:42001, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: \
                    {SystemOverloadedError} } ] }";
        assert_eq!(reason_in(dump), Some("connection refused"));
        assert_eq!(reason_in("Kind: SCRAM failure: Authentication failed., labels: {}"), Some("authentication failed"));
        assert_eq!(reason_in("something else"), None);
    }
}
