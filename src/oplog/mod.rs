//! Everything point-in-time: the window of a backup ([`window`]), the slice of oplog it keeps ([`capture`],
//! [`slice`]), and replaying a slice into a server the way the source applied it ([`apply`], [`txn`],
//! [`update`]). Backup and restore call this module; no other module reads oplog entries.

pub mod apply;
pub mod capture;
pub mod entry;
pub mod slice;
pub mod txn;
pub mod update;
pub mod window;

pub use apply::{ReplayReport, Replayer};
pub use window::WindowStart;
