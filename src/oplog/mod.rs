//! Everything point-in-time: the window of a backup ([`window`]), the slice of oplog it keeps ([`capture`],
//! [`slice`]), and replaying a slice into a server the way the source applied it ([`apply`], [`txn`],
//! [`update`]). Continuous archiving ([`archiver`]) stores the oplog after a base backup as [`chunk`]s, and
//! [`chain`] says which moments the bases and chunks can restore. Backup, restore and the daemon call this module;
//! no other module reads oplog entries.

pub mod apply;
pub mod archiver;
pub mod capture;
pub mod chain;
pub mod chunk;
pub mod entry;
pub mod slice;
pub mod txn;
pub mod update;
pub mod window;

pub use apply::{ReplayReport, Replayer};
pub use window::WindowStart;
