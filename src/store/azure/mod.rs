//! Azure Blob Storage as an object store: backups streamed to a container as block blobs, manifests created with
//! `If-None-Match: *`, restores read back with parallel ranged GETs; authenticated by managed identity, workload
//! identity, a service principal, a SAS or an account key, as `[storage] auth` says.
//!
//! Built on Microsoft's `azure_storage_blob`/`azure_identity`/`azure_core` 1.x. What they lack is added here:
//! SharedKey signing ([`SharedKeyPolicy`]), a retry policy with a time budget and per-attempt timeouts
//! (`retry.rs`), streaming block upload with growing blocks (`upload.rs`) and messages that say what to fix
//! (`errors.rs`).

mod download;
mod errors;
mod lease;
mod retry;
mod settings;
mod shared_key;
mod upload;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions, DeleteSnapshotsOptionType,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::config::{AzureAuth, StorageConfig};
use crate::store::{ByteStream, Lease, ObjectInfo, ObjectMeta, ObjectStore, PutSummary, StoreError, validate_key};

pub use shared_key::{SharedKeyPolicy, canonicalized_resource, string_to_sign};
pub use upload::{BlockPlan, MAX_BLOCKS};

use errors::Whereabouts;
use retry::{Patience, RetryPolicy};
use settings::Secrets;

/// Knobs from `[storage]`, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    plan: BlockPlan,
    upload_concurrency: usize,
    upload_buffer: u64,
    download_chunk: u64,
    download_concurrency: usize,
    patience: Patience,
}

impl Tuning {
    /// Blocks of `size` allowed in flight: as many as fit the buffer, at least one, at most the concurrency.
    fn blocks_in_flight(&self, size: u64) -> usize {
        ((self.upload_buffer / size.max(1)) as usize).clamp(1, self.upload_concurrency)
    }
}

/// What every request and task of one store shares.
pub(crate) struct Inner {
    container: BlobContainerClient,
    whereabouts: Whereabouts,
    tuning: Tuning,
}

impl Inner {
    fn blob(&self, key: &str) -> Result<BlobClient, StoreError> {
        validate_key(key)?;
        Ok(self.container.blob_client(key))
    }
}

/// A container in an Azure storage account, holding backups as block blobs.
#[derive(Clone)]
pub struct AzureStore {
    inner: Arc<Inner>,
}

/// The HTTP client under every SDK client, built here because the SDK's own builder panics when it cannot build one
/// (a host without CA certificates: rustls finds no roots) instead of returning an error. Same settings as the SDK's.
fn http_transport(whereabouts: &Whereabouts) -> Result<Transport, StoreError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            StoreError::Backend(format!(
                "cannot set up the HTTPS client for {}: {} (no CA certificates on this host? install the \
                 ca-certificates package, or point SSL_CERT_FILE at a PEM bundle)",
                whereabouts.describe(),
                crate::error::chain(&e)
            ))
        })?;
    Ok(Transport::new(Arc::new(client)))
}

/// Options for the SDK clients the credentials use to fetch tokens: bounded retries there too.
fn credential_client_options(patience: Patience, transport: &Transport) -> ClientOptions {
    ClientOptions {
        transport: Some(transport.clone()),
        retry: RetryOptions::exponential(azure_core::http::ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(500),
            max_retries: 4,
            max_total_elapsed: azure_core::time::Duration::seconds(patience.budget.as_secs().min(30) as i64),
            max_delay: azure_core::time::Duration::seconds(8),
        }),
        ..Default::default()
    }
}

impl AzureStore {
    /// Opens the container `[storage]` describes, reading the auth mode's secret. No request is made yet:
    /// `mongo-backup-agent check` is what proves the credential works.
    pub fn open(config: &StorageConfig) -> Result<Self, StoreError> {
        let (target, secrets) = settings::resolve(config).map_err(StoreError::Backend)?;
        let patience = Patience {
            budget: Duration::from_secs(config.retry_max_secs),
            attempt_timeout: Duration::from_secs(config.request_timeout_secs),
        };
        let whereabouts = Whereabouts {
            account: target.account.clone(),
            container: target.container.clone(),
            endpoint: target.endpoint.as_str().trim_end_matches('/').to_string(),
            auth: config.auth,
            client_id: config.client_id.clone(),
            retry_max_secs: config.retry_max_secs,
        };
        let fail = |e: azure_core::Error| {
            StoreError::Backend(format!(
                "cannot set up {} with auth = {:?}: {}",
                whereabouts.describe(),
                config.auth.as_str(),
                errors::redact(&crate::error::chain(&e))
            ))
        };
        let transport = http_transport(&whereabouts)?;
        let mut client_options =
            ClientOptions { retry: RetryOptions::none(), transport: Some(transport.clone()), ..Default::default() };
        client_options.per_call_policies.push(Arc::new(RetryPolicy::new(patience)));
        let mut url = target.container_url();
        let credential: Option<Arc<dyn TokenCredential>> = match (config.auth, secrets) {
            (_, Secrets::AccountKey(key)) => {
                let policy = SharedKeyPolicy::new(target.account.clone(), key).map_err(StoreError::Backend)?;
                client_options.per_try_policies.push(Arc::new(policy));
                None
            }
            (_, Secrets::Sas(query)) => {
                url.set_query(Some(&query));
                None
            }
            (AzureAuth::ManagedIdentity, _) => Some(
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: config.client_id.clone().map(UserAssignedId::ClientId),
                    client_options: credential_client_options(patience, &transport),
                }))
                .map_err(fail)?,
            ),
            (AzureAuth::WorkloadIdentity, _) => Some(
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: credential_client_options(patience, &transport),
                    },
                    client_id: config.client_id.clone(),
                    tenant_id: config.tenant_id.clone(),
                    token_file_path: config.federated_token_file.clone(),
                }))
                .map_err(fail)?,
            ),
            (AzureAuth::ClientSecret, Secrets::ClientSecret(secret)) => Some(
                ClientSecretCredential::new(
                    config.tenant_id.as_deref().unwrap_or_default(),
                    config.client_id.clone().unwrap_or_default(),
                    secret.into(),
                    Some(ClientSecretCredentialOptions {
                        client_options: credential_client_options(patience, &transport),
                    }),
                )
                .map_err(fail)?,
            ),
            (auth, _) => {
                return Err(StoreError::Backend(format!(
                    "auth = {:?} got no credential; this is a bug",
                    auth.as_str()
                )));
            }
        };
        let mut options = BlobContainerClientOptions { client_options, ..Default::default() };
        if let Some(version) = &config.api_version {
            options.version = version.clone();
        }
        let container = BlobContainerClient::new(url, credential, Some(options)).map_err(fail)?;
        let tuning = Tuning {
            plan: BlockPlan::new(config.block_size_kib.saturating_mul(1024)),
            upload_concurrency: config.upload_concurrency.max(1),
            upload_buffer: config.upload_buffer_mib.saturating_mul(1 << 20),
            download_chunk: config.download_chunk_kib.saturating_mul(1024),
            download_concurrency: config.download_concurrency.max(1),
            patience,
        };
        Ok(AzureStore { inner: Arc::new(Inner { container, whereabouts, tuning }) })
    }
}

impl AzureStore {
    /// Writes `data` to `key` in one Put Blob request whatever its size, so a condition (`only_if_absent`:
    /// `If-None-Match: *`) covers the whole write and a small object costs one operation. Also returns how many
    /// attempts the retry policy made.
    async fn put_whole(
        &self,
        key: &str,
        data: Bytes,
        only_if_absent: bool,
    ) -> Result<(Result<(), azure_core::Error>, Arc<retry::Attempts>), StoreError> {
        let blob = self.inner.blob(key)?;
        let attempts = Arc::new(retry::Attempts::default());
        let options = BlobClientUploadOptions {
            if_none_match: only_if_absent.then(|| "*".into()),
            partition_size: std::num::NonZero::new((data.len() as u64).max(1)),
            method_options: azure_core::http::ClientMethodOptions {
                context: azure_core::http::Context::new().with_value(attempts.clone()),
            },
            ..Default::default()
        };
        Ok((blob.upload(data.into(), Some(options)).await.map(drop), attempts))
    }
}

fn to_chrono(t: azure_core::time::OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

#[async_trait::async_trait]
impl ObjectStore for AzureStore {
    fn describe(&self) -> String {
        self.inner.whereabouts.describe()
    }

    async fn put_stream(&self, key: &str, body: ByteStream, meta: &ObjectMeta) -> Result<PutSummary, StoreError> {
        upload::put_stream(&self.inner, key, body, meta).await
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, StoreError> {
        download::get_stream(&self.inner, key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let w = &self.inner.whereabouts;
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            ..Default::default()
        };
        let mut pages =
            self.inner.container.list_blobs(Some(options)).map_err(|e| w.failure("list", prefix, e))?.into_pages();
        let mut found = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(|e| w.failure("list", prefix, e))? {
            let page = page.into_model().map_err(|e| w.failure("list", prefix, e))?;
            for item in page.blob_items {
                let Some(key) = item.name else { continue };
                let properties = item.properties.unwrap_or_default();
                found.push(ObjectInfo {
                    key,
                    size: properties.content_length.unwrap_or(0),
                    last_modified: properties.last_modified.map(to_chrono).unwrap_or_default(),
                });
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let blob = self.inner.blob(key)?;
        let options = BlobClientDeleteOptions {
            delete_snapshots: Some(DeleteSnapshotsOptionType::Include),
            ..Default::default()
        };
        match blob.delete(Some(options)).await {
            Ok(_) => Ok(()),
            Err(e) => match self.inner.whereabouts.failure("delete", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn try_lease(&self, key: &str, duration: Duration) -> Result<Option<Box<dyn Lease>>, StoreError> {
        self.lease(key, duration).await
    }

    async fn lease_held(&self, key: &str) -> Result<bool, StoreError> {
        self.lease_status(key).await
    }

    async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let (result, _) = self.put_whole(key, data.into(), false).await?;
        result.map_err(|e| self.inner.whereabouts.failure("write", key, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let (result, attempts) = self.put_whole(key, data.clone(), true).await?;
        match result {
            Ok(()) => Ok(()),
            Err(e) => match self.inner.whereabouts.failure("write", key, e) {
                StoreError::AlreadyExists { store, key } if attempts.0.load(Ordering::Relaxed) > 1 => {
                    // A retry found the object: if it holds our bytes, our first attempt landed and only its
                    // response was lost.
                    match self.get_bytes(&key).await {
                        Ok(existing) if existing == data => Ok(()),
                        _ => Err(StoreError::AlreadyExists { store, key }),
                    }
                }
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_blocks_fly_as_blocks_grow_so_memory_stays_bounded() {
        let tuning = Tuning {
            plan: BlockPlan::new(8 << 20),
            upload_concurrency: 4,
            upload_buffer: 64 << 20,
            download_chunk: 8 << 20,
            download_concurrency: 4,
            patience: Patience { budget: Duration::from_secs(1), attempt_timeout: Duration::from_secs(1) },
        };
        let in_flight: Vec<usize> =
            [8u64, 16, 32, 64, 512].iter().map(|mib| tuning.blocks_in_flight(mib << 20)).collect();
        assert_eq!(in_flight, [4, 4, 2, 1, 1]);
    }
}
