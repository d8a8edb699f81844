//! mongo-backup-agent: MongoDB backups as mongodump-compatible archives, compressed and streamed to object storage.
//!
//! The modules follow the pipeline: [`mongo`] reads the server, [`archive`] encodes, [`compress`] compresses,
//! [`store`] persists, [`backup`] orchestrates and writes the manifest, [`restore`] goes the other way;
//! [`retention`] decides which backups to keep and prunes the rest; [`verify`] proves a stored backup is intact.

pub mod archive;
pub mod backup;
pub mod compress;
pub mod config;
pub mod daemon;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod mongo;
pub mod notify;
pub mod restore;
pub mod retention;
pub mod store;
pub mod verify;
