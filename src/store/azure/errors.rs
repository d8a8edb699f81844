//! Turns SDK errors into [`StoreError`]s that say which account and container failed and what to check next:
//! the role a managed identity needs, an expired SAS, a rotated key, a missing container, an untrusted certificate.
//! SAS signatures that the HTTP layer prints inside URLs are redacted.

use std::sync::LazyLock;

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;

use crate::config::AzureAuth;
use crate::error::chain;
use crate::store::StoreError;

/// What a message needs to know about the store.
#[derive(Debug, Clone)]
pub(crate) struct Whereabouts {
    pub account: String,
    pub container: String,
    pub endpoint: String,
    pub auth: AzureAuth,
    pub client_id: Option<String>,
    pub retry_max_secs: u64,
}

impl Whereabouts {
    /// "azure container ACCOUNT/CONTAINER".
    pub fn describe(&self) -> String {
        format!("azure container {}/{}", self.account, self.container)
    }

    fn identity(&self) -> String {
        match (&self.auth, &self.client_id) {
            (AzureAuth::ManagedIdentity, None) => "the VM's system-assigned managed identity".into(),
            (AzureAuth::ManagedIdentity, Some(id)) => format!("the user-assigned managed identity {id}"),
            (AzureAuth::WorkloadIdentity, Some(id)) => format!("the workload identity {id}"),
            (AzureAuth::WorkloadIdentity, None) => "the workload identity ($AZURE_CLIENT_ID)".into(),
            (AzureAuth::ClientSecret, Some(id)) => format!("the service principal {id}"),
            (AzureAuth::ClientSecret, None) => "the service principal".into(),
            (AzureAuth::Sas, _) => "the SAS token".into(),
            (AzureAuth::ConnectionString, _) => "the connection string's account key".into(),
        }
    }

    /// What to check when the service refuses us (401/403).
    fn refusal_hint(&self) -> String {
        let (account, container) = (&self.account, &self.container);
        match self.auth {
            AzureAuth::ManagedIdentity | AzureAuth::WorkloadIdentity | AzureAuth::ClientSecret => format!(
                "{} needs the \"Storage Blob Data Contributor\" role on container {container} of storage account \
                 {account} (or on the account); new role assignments take a few minutes to apply",
                self.identity()
            ),
            AzureAuth::Sas => format!(
                "check that the SAS in storage.sas_file / azure-sas has not expired (se=), is for account {account} \
                 and container {container}, and grants read, add, create, write, delete and list (sp=racwdl)"
            ),
            AzureAuth::ConnectionString => format!(
                "check that the AccountKey in the connection string is current for account {account} (keys get \
                 rotated) and that this machine's clock is within 15 minutes of the real time"
            ),
        }
    }

    /// Maps an SDK error from `operation` on `key` to a store error.
    pub fn failure(&self, operation: &'static str, key: &str, err: azure_core::Error) -> StoreError {
        let store = self.describe();
        // "list" of everything has no key to name.
        let subject = if key.is_empty() { format!("{operation} (all keys)") } else { format!("{operation} {key}") };
        let detail = redact(&chain(&err));
        match err.kind() {
            ErrorKind::HttpResponse { status, error_code, .. } => {
                let code = error_code.as_deref().unwrap_or("");
                match *status {
                    StatusCode::NotFound if code == "ContainerNotFound" => StoreError::Backend(format!(
                        "{subject}: container {} does not exist in storage account {}; create it (the \
                         terraform in terraform/ does) or fix storage.container",
                        self.container, self.account
                    )),
                    StatusCode::NotFound if code.is_empty() || code == "BlobNotFound" => {
                        StoreError::NotFound { store, key: key.to_string() }
                    }
                    StatusCode::Conflict if code == "BlobAlreadyExists" => {
                        StoreError::AlreadyExists { store, key: key.to_string() }
                    }
                    StatusCode::Unauthorized | StatusCode::Forbidden => StoreError::Backend(format!(
                        "{subject} in {store} was refused (HTTP {} {code}) using {}: {}",
                        u16::from(*status),
                        self.auth.as_str(),
                        self.refusal_hint()
                    )),
                    StatusCode::PreconditionFailed => StoreError::Backend(format!(
                        "{key} in {store} changed while it was being read (HTTP 412 {code}); something else wrote \
                         it: read it again"
                    )),
                    s if (500..600).contains(&u16::from(s)) || s == StatusCode::TooManyRequests => {
                        StoreError::Backend(format!(
                            "{subject} in {store}: the service kept failing (HTTP {} {code}) for the whole \
                             retry budget of {} s; check the storage account's health or raise \
                             storage.retry_max_secs",
                            u16::from(s),
                            self.retry_max_secs
                        ))
                    }
                    s => StoreError::Backend(format!(
                        "{subject} in {store} failed: HTTP {} {code}: {detail}",
                        u16::from(s)
                    )),
                }
            }
            ErrorKind::Credential => StoreError::Backend(format!(
                "{subject} in {store}: could not get an access token for {} ({}): {detail}; {}",
                self.identity(),
                self.auth.as_str(),
                self.credential_hint()
            )),
            ErrorKind::Io | ErrorKind::Connection if super::retry::is_tls_failure(&err) => {
                StoreError::Backend(format!(
                    "{subject} in {store}: TLS with {} failed: {detail}; the server's certificate is not \
                 trusted or does not match the host: check storage.endpoint, any TLS-intercepting proxy, and the \
                 system CA store (SSL_CERT_FILE)",
                    self.endpoint
                ))
            }
            ErrorKind::Io | ErrorKind::Connection => StoreError::Backend(format!(
                "{subject} in {store}: cannot reach {} within the retry budget of {} s: {detail}; check \
                 DNS, the network path or private endpoint, and firewall rules of the storage account",
                self.endpoint, self.retry_max_secs
            )),
            _ => StoreError::Backend(format!("{subject} in {store} failed: {detail}")),
        }
    }

    fn credential_hint(&self) -> &'static str {
        match self.auth {
            AzureAuth::ManagedIdentity => {
                "check that the VM has a managed identity assigned (and, for a user-assigned one, that \
                 storage.client_id is its client id) and that the instance metadata service is reachable"
            }
            AzureAuth::WorkloadIdentity => {
                "check storage.tenant_id/client_id (or $AZURE_TENANT_ID/$AZURE_CLIENT_ID), that the federated token \
                 file exists and is fresh, and that the identity has a federated credential for this subject"
            }
            AzureAuth::ClientSecret => {
                "check storage.tenant_id and storage.client_id and that the client secret has not expired"
            }
            AzureAuth::Sas | AzureAuth::ConnectionString => "check the credential",
        }
    }
}

/// Removes SAS signatures and bearer tokens from text that may be logged.
pub(crate) fn redact(text: &str) -> String {
    static SECRET: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"(?i)(sig=|Bearer\s+|AccountKey=)[^&\s;)\x22']+").expect("valid regex"));
    SECRET.replace_all(text, "${1}REDACTED").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_messages() {
        let text = "error sending request for url (https://a.blob.core.windows.net/c/b?sv=2020&sig=abc%2Bdef&se=x): \
                    AccountKey=abc==; Bearer eyJ0eXAi";
        let out = redact(text);
        assert!(!out.contains("abc%2Bdef") && !out.contains("abc==") && !out.contains("eyJ0"), "{out}");
        assert!(out.contains("sig=REDACTED&se=x"), "{out}");
    }

    #[test]
    fn refusals_name_account_container_and_role() {
        let w = Whereabouts {
            account: "acct".into(),
            container: "backups".into(),
            endpoint: "https://acct.blob.core.windows.net".into(),
            auth: AzureAuth::ManagedIdentity,
            client_id: None,
            retry_max_secs: 60,
        };
        let err = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::Forbidden,
                error_code: Some("AuthorizationPermissionMismatch".into()),
                raw_response: None,
            },
            "denied",
        );
        let msg = w.failure("write", "mongodb/x/archive", err).to_string();
        for needle in ["acct", "backups", "Storage Blob Data Contributor", "403", "managed identity"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        let err = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::NotFound,
                error_code: Some("BlobNotFound".into()),
                raw_response: None,
            },
            "nope",
        );
        assert!(matches!(w.failure("read", "k", err), StoreError::NotFound { .. }));
    }
}
