//! Where the Azure store points and how it authenticates: `[storage]` checked without I/O at config load, then
//! resolved (secrets read) only when the store opens.

use std::net::IpAddr;
use std::path::Path;

use azure_core::http::Url;

use crate::config::{AzureAuth, StorageConfig, read_secret};

/// The account, container and blob endpoint a store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
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

/// The secret material a store authenticates with, read from files or the environment.
pub(crate) enum Secrets {
    /// Entra ID token credentials need no secret here (or read their own: client secret below).
    None,
    /// Account key from a connection string, for SharedKey signing.
    AccountKey(String),
    /// SAS query string without the leading `?`.
    Sas(String),
    /// Service principal secret.
    ClientSecret(String),
}

/// What a connection string says, as far as Blob storage is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionString {
    pub account: Option<String>,
    pub key: Option<String>,
    pub blob_endpoint: Option<String>,
    pub sas: Option<String>,
}

/// Azurite's well-known development account (public, documented; it only ever works against the emulator).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl ConnectionString {
    /// Parses `Key=Value;Key=Value`; values may contain `=` (keys and SAS tokens do).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = ConnectionString::default();
        let mut protocol = "https".to_string();
        let mut suffix = "core.windows.net".to_string();
        for part in text.trim().split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(format!("connection string part {:?} is not Key=Value", redact_value(part)));
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "defaultendpointsprotocol" => protocol = value.to_string(),
                "accountname" => out.account = Some(value.to_string()),
                "accountkey" => out.key = Some(value.to_string()),
                "blobendpoint" => out.blob_endpoint = Some(value.trim_end_matches('/').to_string()),
                "endpointsuffix" => suffix = value.to_string(),
                "sharedaccesssignature" => out.sas = Some(value.trim_start_matches('?').to_string()),
                "usedevelopmentstorage" if value.eq_ignore_ascii_case("true") => {
                    out.account = Some(DEV_ACCOUNT.into());
                    out.key = Some(DEV_KEY.into());
                    out.blob_endpoint = Some(format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
                }
                // Queue/table/file endpoints and the like do not concern a blob store.
                _ => {}
            }
        }
        if out.blob_endpoint.is_none()
            && let Some(account) = &out.account
        {
            out.blob_endpoint = Some(format!("{protocol}://{account}.blob.{suffix}"));
        }
        if out.key.is_none() && out.sas.is_none() {
            return Err("connection string has neither AccountKey nor SharedAccessSignature".into());
        }
        Ok(out)
    }
}

fn redact_value(part: &str) -> String {
    match part.split_once('=') {
        Some((name, _)) => format!("{name}=…"),
        None if part.len() > 12 => format!("{}…", &part[..6]),
        None => part.to_string(),
    }
}

/// True for hosts that address an account by path (`http://127.0.0.1:10000/ACCOUNT`): IPs and localhost, as the
/// emulator and Azure Stack use.
fn path_style(url: &Url) -> bool {
    match url.host_str() {
        Some(host) => host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok(),
        None => false,
    }
}

/// The parts of `storage.url`: endpoint, account, container and prefix.
pub(crate) fn split_url(text: &str) -> Result<(Target, String), String> {
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
pub fn url_prefix(config: &StorageConfig) -> Option<String> {
    let (_, prefix) = split_url(config.url.as_deref()?).ok()?;
    (!prefix.is_empty()).then_some(prefix)
}

fn account_from_endpoint(endpoint: &Url) -> Option<String> {
    if path_style(endpoint) {
        endpoint.path_segments()?.find(|s| !s.is_empty()).map(str::to_string)
    } else {
        endpoint.host_str()?.split('.').next().map(str::to_string)
    }
}

fn parse_endpoint(text: &str) -> Result<Url, String> {
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
pub fn validate_config(c: &StorageConfig) -> Result<(), String> {
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
        return Err(format!(
            "storage.auth = {:?} sends bearer tokens, which need an https endpoint",
            auth_name(c.auth)
        ));
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
                auth_name(c.auth),
                auth_name(needs)
            ));
        }
    }
    let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(msg.to_string()) };
    check(
        (1..=super::upload::MAX_BLOCK_BYTES / 1024).contains(&c.block_size_kib),
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

/// The config spelling of an auth mode, for messages.
pub(crate) fn auth_name(auth: AzureAuth) -> &'static str {
    match auth {
        AzureAuth::ManagedIdentity => "managed-identity",
        AzureAuth::WorkloadIdentity => "workload-identity",
        AzureAuth::ClientSecret => "client-secret",
        AzureAuth::Sas => "sas",
        AzureAuth::ConnectionString => "connection-string",
    }
}

fn secret(name: &str, file: Option<&Path>, file_key: &str) -> Result<String, String> {
    match read_secret(name, file) {
        Ok(Some(value)) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Ok(_) => Err(crate::config::ConfigError::MissingSecret {
            name: name.to_string(),
            file_key: format!("storage.{file_key}"),
            env: crate::config::secret_env(name),
        }
        .to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The query part of a SAS token or SAS URL.
pub(crate) fn sas_query(text: &str) -> Result<String, String> {
    let text = text.trim();
    let query = if text.starts_with("http://") || text.starts_with("https://") {
        Url::parse(text).ok().and_then(|u| u.query().map(str::to_string)).unwrap_or_default()
    } else {
        text.trim_start_matches('?').to_string()
    };
    if !query.split('&').any(|p| p.starts_with("sig=")) {
        return Err("the SAS has no sig= parameter; give the token (sv=…&sig=…) or the full SAS URL".into());
    }
    Ok(query)
}

/// Resolves where to connect and reads the secret the auth mode needs.
pub(crate) fn resolve(c: &StorageConfig) -> Result<(Target, Secrets), String> {
    validate_config(c)?;
    let (secrets, from_connection) = match c.auth {
        AzureAuth::ConnectionString => {
            let text =
                secret("azure-connection-string", c.connection_string_file.as_deref(), "connection_string_file")?;
            let parsed = ConnectionString::parse(&text)?;
            let secrets = match (&parsed.key, &parsed.sas) {
                (Some(key), _) => Secrets::AccountKey(key.clone()),
                (None, Some(sas)) => Secrets::Sas(sas.clone()),
                (None, None) => unreachable!("parse refuses a connection string without credentials"),
            };
            (secrets, Some(parsed))
        }
        AzureAuth::Sas => (Secrets::Sas(sas_query(&secret("azure-sas", c.sas_file.as_deref(), "sas_file")?)?), None),
        AzureAuth::ClientSecret => (
            Secrets::ClientSecret(secret(
                "azure-client-secret",
                c.client_secret_file.as_deref(),
                "client_secret_file",
            )?),
            None,
        ),
        AzureAuth::ManagedIdentity | AzureAuth::WorkloadIdentity => (Secrets::None, None),
    };
    let target = if let Some(url) = &c.url {
        split_url(url)?.0
    } else {
        let container = c.container.clone().expect("validated");
        let endpoint = match (&c.endpoint, &c.account, from_connection.as_ref().and_then(|p| p.blob_endpoint.clone())) {
            (Some(endpoint), _, _) => parse_endpoint(endpoint)?,
            (None, _, Some(endpoint)) => parse_endpoint(&endpoint)?,
            (None, Some(account), None) => parse_endpoint(&format!("https://{account}.blob.core.windows.net"))?,
            (None, None, None) => return Err("storage.account or storage.endpoint must be set".into()),
        };
        let account = c
            .account
            .clone()
            .or_else(|| from_connection.as_ref().and_then(|p| p.account.clone()))
            .or_else(|| account_from_endpoint(&endpoint))
            .ok_or_else(|| format!("cannot tell the account name from {endpoint}; set storage.account"))?;
        Target { endpoint, account, container }
    };
    if let (Some(parsed), Secrets::AccountKey(_)) = (&from_connection, &secrets)
        && let Some(account) = &parsed.account
        && account != &target.account
    {
        return Err(format!(
            "the connection string is for account {account:?} but storage points at account {:?}",
            target.account
        ));
    }
    Ok((target, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(extra: &str) -> Result<crate::config::Config, String> {
        crate::config::Config::parse(&format!("[storage]\nkind = \"azure\"\n{extra}")).map_err(|e| e.to_string())
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
            crate::config::Config::parse("[storage]\nurl = \"https://acct.blob.core.windows.net/bkp/mongodb/prod\"\n")
                .unwrap();
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
        crate::config::Config::parse("[storage]\nkind = \"filesystem\"\n").unwrap();
    }

    #[test]
    fn connection_strings_parse_like_the_sdks() {
        let cs = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5PT0=;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(cs.account.as_deref(), Some("acct"));
        assert_eq!(cs.key.as_deref(), Some("a2V5PT0="));
        assert_eq!(cs.blob_endpoint.as_deref(), Some("https://acct.blob.core.windows.net"));
        let cs = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=k==;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(cs.blob_endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(cs.account.as_deref(), Some(DEV_ACCOUNT));
        let cs =
            ConnectionString::parse("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=1&sig=x")
                .unwrap();
        assert_eq!(cs.sas.as_deref(), Some("sv=1&sig=x"));
        let err = ConnectionString::parse("AccountName=a;AccountKey").unwrap_err();
        assert!(!err.contains("AccountKey=") || err.contains('…'), "{err}");
        assert!(ConnectionString::parse("AccountName=a").is_err());
    }

    #[test]
    fn sas_accepts_token_or_url() {
        assert_eq!(sas_query("?sv=2020&sig=abc%3D").unwrap(), "sv=2020&sig=abc%3D");
        assert_eq!(sas_query("https://a.blob.core.windows.net/c?sv=2020&sig=abc").unwrap(), "sv=2020&sig=abc");
        assert!(sas_query("sv=2020").is_err());
    }
}
