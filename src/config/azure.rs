//! `[storage]` for Azure, checked without I/O when the config loads: where the store points (the `url` form, the
//! endpoint, the container name) and which keys go with which `auth`. The store reads the secrets when it opens.

use std::net::IpAddr;

use url::Url;

use super::{AzureAuth, StorageConfig};

/// Azure's largest block.
pub const MAX_BLOCK_BYTES: u64 = 4000 << 20;

/// The account, container and blob endpoint a store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Account blob endpoint without a trailing slash: `https://acct.blob.core.windows.net` or, path-style,
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Url,
    /// Storage account name.
    pub account: String,
    /// Container name.
    pub container: String,
}

impl Target {
    /// `<endpoint>/<container>`.
    pub fn container_url(&self) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut().expect("validated as a base URL").pop_if_empty().push(&self.container);
        url
    }
}

/// True for hosts that address an account by path (`http://127.0.0.1:10000/ACCOUNT`): IPs and localhost, as the
/// emulator and Azure Stack use.
pub(crate) fn path_style(url: &Url) -> bool {
    match url.host_str() {
        Some(host) => host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok(),
        None => false,
    }
}

/// The parts of `storage.url`: endpoint, account, container and prefix.
pub fn split_url(text: &str) -> Result<(Target, String), String> {
    let url = Url::parse(text).map_err(|e| format!("storage.url {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return Err(format!("storage.url {text:?} must be https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX"));
    }
    if url.query().is_some() {
        return Err("storage.url must not carry a query: a SAS token is a secret, put it in the file named by \
                    storage.sas_file (auth = \"sas\")"
            .into());
    }
    let mut segments: Vec<&str> = url.path_segments().into_iter().flatten().filter(|s| !s.is_empty()).collect();
    let mut endpoint = url.clone();
    endpoint.set_path("");
    let account = if path_style(&url) {
        if segments.is_empty() {
            return Err(format!("storage.url {text:?} has no account: use http://HOST:PORT/ACCOUNT/CONTAINER"));
        }
        let account = segments.remove(0).to_string();
        endpoint.set_path(&account);
        account
    } else {
        url.host_str().and_then(|h| h.split('.').next()).unwrap_or_default().to_string()
    };
    if segments.is_empty() {
        return Err(format!("storage.url {text:?} names no container: use …/CONTAINER or …/CONTAINER/PREFIX"));
    }
    let container = segments.remove(0).to_string();
    let prefix = segments.join("/");
    Ok((Target { endpoint, account, container }, prefix))
}

/// The PREFIX part of `storage.url`, when there is one.
pub(crate) fn url_prefix(config: &StorageConfig) -> Option<String> {
    let (_, prefix) = split_url(config.url.as_deref()?).ok()?;
    (!prefix.is_empty()).then_some(prefix)
}

pub(crate) fn parse_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim_end_matches('/')).map_err(|e| format!("storage.endpoint {text:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() || url.query().is_some() {
        return Err(format!(
            "storage.endpoint {text:?} must be the account's blob endpoint, e.g. https://ACCOUNT.blob.core.windows.net"
        ));
    }
    Ok(url)
}

fn check_container_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "storage.container {name:?} is not a valid container name (3-63 lowercase letters, digits and single \
             hyphens)"
        ))
    }
}

/// Checks `[storage]` for Azure without reading any file: called from `Config::validate`.
pub(crate) fn validate(c: &StorageConfig) -> Result<(), String> {
    if !c.is_azure() {
        return Ok(());
    }
    let mut target = None;
    if let Some(url) = &c.url {
        if c.account.is_some() || c.container.is_some() || c.endpoint.is_some() {
            return Err("set either storage.url or storage.account/container/endpoint, not both".into());
        }
        let (t, prefix) = split_url(url)?;
        if !prefix.is_empty() && c.prefix != prefix && c.prefix != StorageConfig::default().prefix {
            return Err(format!(
                "storage.prefix {:?} disagrees with the prefix {prefix:?} in storage.url; drop one of them",
                c.prefix
            ));
        }
        target = Some(t);
    }
    if let Some(endpoint) = &c.endpoint {
        parse_endpoint(endpoint)?;
    }
    let container = target.as_ref().map(|t| t.container.clone()).or_else(|| c.container.clone());
    match &container {
        Some(name) => check_container_name(name)?,
        None => return Err("storage.container must be set for kind = \"azure\" (or give storage.url)".into()),
    }
    let knows_account = target.is_some() || c.account.is_some() || c.endpoint.is_some();
    if !knows_account && c.auth != AzureAuth::ConnectionString {
        return Err("storage.account (or storage.endpoint or storage.url) must be set for kind = \"azure\"".into());
    }
    let uses_tokens =
        matches!(c.auth, AzureAuth::ManagedIdentity | AzureAuth::WorkloadIdentity | AzureAuth::ClientSecret);
    let scheme_http = target.as_ref().map(|t| t.endpoint.scheme() == "http").unwrap_or(false)
        || c.endpoint.as_deref().is_some_and(|e| e.starts_with("http:"));
    if uses_tokens && scheme_http {
        return Err(format!("storage.auth = {:?} sends bearer tokens, which need an https endpoint", c.auth.as_str()));
    }
    if c.auth == AzureAuth::ClientSecret && (c.tenant_id.is_none() || c.client_id.is_none()) {
        return Err("storage.auth = \"client-secret\" needs storage.tenant_id and storage.client_id".into());
    }
    let stray = [
        (c.connection_string_file.is_some(), "connection_string_file", AzureAuth::ConnectionString),
        (c.sas_file.is_some(), "sas_file", AzureAuth::Sas),
        (c.client_secret_file.is_some(), "client_secret_file", AzureAuth::ClientSecret),
        (c.federated_token_file.is_some(), "federated_token_file", AzureAuth::WorkloadIdentity),
    ];
    for (set, key, needs) in stray {
        if set && c.auth != needs {
            return Err(format!(
                "storage.{key} is set but storage.auth is {:?}; set auth = {:?} or remove the key",
                c.auth.as_str(),
                needs.as_str()
            ));
        }
    }
    let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(msg.to_string()) };
    check(
        (1..=MAX_BLOCK_BYTES / 1024).contains(&c.block_size_kib),
        "storage.block_size_kib must be 1..=4096000 (4000 MiB, Azure's largest block)",
    )?;
    check((1..=64).contains(&c.upload_concurrency), "storage.upload_concurrency must be 1..=64")?;
    check(c.upload_buffer_mib >= 1, "storage.upload_buffer_mib must be at least 1")?;
    check((1..=1024 * 1024).contains(&c.download_chunk_kib), "storage.download_chunk_kib must be 1..=1048576")?;
    check((1..=64).contains(&c.download_concurrency), "storage.download_concurrency must be 1..=64")?;
    check(c.request_timeout_secs >= 1, "storage.request_timeout_secs must be at least 1")?;
    check(c.retry_max_secs <= 3600, "storage.retry_max_secs must be at most 3600")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn azure(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("[storage]\nkind = \"azure\"\n{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn url_form_gives_account_container_and_prefix() {
        let (t, prefix) = split_url("https://acct.blob.core.windows.net/backups/mongo/vm1").unwrap();
        assert_eq!(t.endpoint.as_str(), "https://acct.blob.core.windows.net/");
        assert_eq!((t.account.as_str(), t.container.as_str(), prefix.as_str()), ("acct", "backups", "mongo/vm1"));
        assert_eq!(t.container_url().as_str(), "https://acct.blob.core.windows.net/backups");
        let (t, prefix) = split_url("http://127.0.0.1:10000/devstoreaccount1/c1").unwrap();
        assert_eq!(t.endpoint.as_str(), "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!((t.account.as_str(), t.container.as_str(), prefix.as_str()), ("devstoreaccount1", "c1", ""));
        assert_eq!(t.container_url().as_str(), "http://127.0.0.1:10000/devstoreaccount1/c1");
        assert!(split_url("https://acct.blob.core.windows.net/").unwrap_err().contains("no container"));
        assert!(split_url("https://acct.blob.core.windows.net/c?sv=1&sig=x").unwrap_err().contains("sas_file"));
    }

    #[test]
    fn url_selects_azure_and_sets_the_prefix() {
        let config =
            Config::parse("[storage]\nurl = \"https://acct.blob.core.windows.net/bkp/mongodb/prod\"\n").unwrap();
        assert!(config.storage.is_azure());
        assert_eq!(config.storage.key_prefix(), "mongodb/prod");
        let err = azure("url = \"https://a.blob.core.windows.net/bkp/x\"\nprefix = \"y\"\n").unwrap_err();
        assert!(err.contains("disagrees"), "{err}");
    }

    #[test]
    fn validation_names_the_key_at_fault() {
        let cases = [
            ("", "storage.container"),
            ("container = \"Bad_Name\"", "storage.container"),
            ("container = \"cont1\"", "storage.account"),
            ("container = \"cont1\"\naccount = \"a\"\nauth = \"client-secret\"", "tenant_id"),
            ("container = \"cont1\"\naccount = \"a\"\nsas_file = \"/x\"", "storage.sas_file"),
            ("container = \"cont1\"\nendpoint = \"http://127.0.0.1:1/a\"", "https"),
            ("container = \"cont1\"\naccount = \"a\"\nblock_size_kib = 0", "block_size_kib"),
            ("container = \"cont1\"\naccount = \"a\"\nauth = \"kerberos\"", "kerberos"),
            ("url = \"https://a.blob.core.windows.net/c\"\naccount = \"a\"", "either storage.url"),
        ];
        for (text, expected) in cases {
            let err = azure(text).unwrap_err();
            assert!(err.contains(expected), "{text:?} gave {err}");
        }
        azure("container = \"cont1\"\naccount = \"a\"").unwrap();
        azure("container = \"cont1\"\nauth = \"connection-string\"\nconnection_string_file = \"/x\"").unwrap();
        // Filesystem configs are not affected by the azure keys' rules.
        Config::parse("[storage]\nkind = \"filesystem\"\n").unwrap();
    }
}
