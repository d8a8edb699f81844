//! Reading MongoDB: connecting, the catalog of collections, raw document streams, the oplog, users and roles.

mod catalog;
mod client;
mod filter;
pub mod oplog;
mod reader;
pub mod users;

pub use catalog::{CollectionInfo, is_backed_up, list_collections};
pub use client::{ServerInfo, connect, server_info};
pub use filter::NamespaceFilter;
pub use reader::{BLOCK_TARGET_BYTES, DocumentBatch, next_batch, open_cursor};
