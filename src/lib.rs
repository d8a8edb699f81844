//! mongo-backup-agent: MongoDB backups as mongodump-compatible archives, compressed and streamed to object storage.
//!
//! The modules follow the pipeline: [`mongo`] reads the server, [`archive`] encodes, [`compress`] compresses,
//! [`store`] persists, [`backup`] orchestrates and writes the [`manifest`], [`restore`] goes the other way;
//! [`crypt`] encrypts what is stored to public keys only; [`retention`] decides which backups to keep and prunes
//! the rest; [`verify`] proves a stored backup is intact.
//!
//! The default feature `agent` is everything that talks to the world: MongoDB, Azure, SMTP and HTTP, systemd, the
//! daemon and the command line. Without it (`default-features = false`, as the fuzz targets build it) the library is
//! only the formats the agent reads and writes: [`archive`], [`compress`], [`manifest`] and [`config`] with its full
//! validation, with none of the heavy dependencies.

pub mod archive;
pub mod compress;
pub mod config;
pub mod crypt;
pub mod manifest;

#[cfg(feature = "agent")]
pub mod backup;
#[cfg(feature = "agent")]
pub mod cluster;
#[cfg(feature = "agent")]
pub mod daemon;
#[cfg(feature = "agent")]
pub mod error;
#[cfg(feature = "agent")]
pub mod logging;
#[cfg(feature = "agent")]
pub mod metrics;
#[cfg(feature = "agent")]
pub mod mongo;
#[cfg(feature = "agent")]
pub mod notify;
#[cfg(feature = "agent")]
pub mod oplog;
#[cfg(feature = "agent")]
pub mod restore;
#[cfg(feature = "agent")]
pub mod retention;
#[cfg(feature = "agent")]
pub mod store;
#[cfg(feature = "agent")]
pub mod verify;
