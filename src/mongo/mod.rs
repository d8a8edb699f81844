//! Reading MongoDB: connecting, the catalog of collections, raw document streams, users and roles (the oplog is
//! [`crate::oplog`]'s).

mod catalog;
mod client;
mod reader;
mod uri;
pub mod users;

pub use catalog::{CollectionInfo, collection_exists, is_backed_up, list_collections};
pub use client::{
    NAMESPACE_EXISTS, NAMESPACE_NOT_FOUND, OPERATION_TIMEOUT, ServerInfo, bounded, close, connect, server_code,
    server_info,
};
// Backup selects collections with the filter that restore applies to an archive's namespaces.
pub use crate::archive::NamespaceFilter;
pub(crate) use reader::within_stall_limit;
pub use reader::{BLOCK_TARGET_BYTES, DocumentBatch, bounded_batch_size, next_batch, open_cursor, set_stall_timeout};
pub use uri::{SafeUri, describe};
