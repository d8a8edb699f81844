//! Blob leases on lock objects: how the agents of a replica set elect the one that backs up or archives.
//!
//! A lease lasts 15–60 s and must be renewed; renewal with our lease id succeeds only while no other client has
//! leased the blob since, so a successful renewal proves the lease is still ours.

use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{BlobClientAcquireLeaseOptions, BlobClientGetPropertiesResultHeaders, LeaseStatus};
use bytes::Bytes;

use super::AzureStore;
use crate::store::{Lease, ObjectStore, StoreError};

/// Azure's bounds for a finite lease.
const LEASE_SECS: std::ops::RangeInclusive<u64> = 15..=60;

/// A lease held on one lock blob.
struct BlobLease {
    blob: BlobClient,
    id: String,
    store: AzureStore,
    key: String,
}

/// The HTTP status and Azure error code of a failed request, when it got an answer.
fn refusal(err: &azure_core::Error) -> Option<(StatusCode, String)> {
    match err.kind() {
        ErrorKind::HttpResponse { status, error_code, .. } => Some((*status, error_code.clone().unwrap_or_default())),
        _ => None,
    }
}

/// A fresh lease id; Azure wants the GUID format.
fn new_lease_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

impl AzureStore {
    /// [`ObjectStore::try_lease`] on Azure: acquires a lease on the lock blob, creating the blob when missing.
    pub(super) async fn lease(&self, key: &str, duration: Duration) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let blob = self.inner.blob(key)?;
        let secs = duration.as_secs().clamp(*LEASE_SECS.start(), *LEASE_SECS.end()) as i32;
        let id = new_lease_id();
        for _ in 0..2 {
            let options = BlobClientAcquireLeaseOptions { proposed_lease_id: Some(id.clone()), ..Default::default() };
            let err = match blob.acquire_lease(secs, Some(options)).await {
                Ok(_) => {
                    let lease = BlobLease { blob, id, store: self.clone(), key: key.to_string() };
                    return Ok(Some(Box::new(lease)));
                }
                Err(err) => err,
            };
            match refusal(&err) {
                Some((StatusCode::Conflict, _)) => return Ok(None),
                Some((StatusCode::NotFound, code)) if code != "ContainerNotFound" => {
                    match self.put_if_absent(key, Bytes::new()).await {
                        Ok(()) | Err(StoreError::AlreadyExists { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
                _ => return Err(self.inner.whereabouts.failure("lease", key, err)),
            }
        }
        Err(StoreError::Backend(format!(
            "lock object {key} in {} keeps disappearing; something deletes it",
            self.describe()
        )))
    }
}

impl AzureStore {
    /// [`ObjectStore::lease_held`] on Azure: the lock blob's lease status (an expired lease reads as unlocked).
    pub(super) async fn lease_status(&self, key: &str) -> Result<bool, StoreError> {
        let blob = self.inner.blob(key)?;
        match blob.get_properties(None).await {
            Ok(response) => {
                let status =
                    response.lease_status().map_err(|e| self.inner.whereabouts.failure("read lease of", key, e))?;
                Ok(status == Some(LeaseStatus::Locked))
            }
            Err(err) => match self.inner.whereabouts.failure("read lease of", key, err) {
                StoreError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}

#[async_trait::async_trait]
impl Lease for BlobLease {
    async fn renew(&self) -> Result<(), StoreError> {
        match self.blob.renew_lease(self.id.clone(), None).await {
            Ok(_) => Ok(()),
            Err(err) => match refusal(&err) {
                // Another client leased the blob since (or broke our lease): it is theirs now.
                Some((StatusCode::Conflict | StatusCode::PreconditionFailed, _)) => {
                    Err(StoreError::LeaseLost { store: self.store.describe(), key: self.key.clone() })
                }
                _ => Err(self.store.inner.whereabouts.failure("renew lease on", &self.key, err)),
            },
        }
    }

    async fn release(&self) -> Result<(), StoreError> {
        match self.blob.release_lease(self.id.clone(), None).await {
            Ok(_) => Ok(()),
            // Already someone else's: nothing of ours to give up.
            Err(err) if matches!(refusal(&err), Some((StatusCode::Conflict, _))) => Ok(()),
            Err(err) => Err(self.store.inner.whereabouts.failure("release lease on", &self.key, err)),
        }
    }
}
