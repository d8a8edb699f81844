//! Where the Azure store points and how it authenticates: `[storage]`, checked at config load
//! ([`crate::config::azure`]), resolved here (secrets read) only when the store opens.

use std::path::Path;

use azure_core::http::Url;

use crate::config::azure::{Target, parse_endpoint, path_style, split_url, validate};
use crate::config::{AzureAuth, StorageConfig, read_secret};

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

fn account_from_endpoint(endpoint: &Url) -> Option<String> {
    if path_style(endpoint) {
        endpoint.path_segments()?.find(|s| !s.is_empty()).map(str::to_string)
    } else {
        endpoint.host_str()?.split('.').next().map(str::to_string)
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
    validate(c)?;
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
