//! Reading MongoDB: connecting, the catalog of collections, raw document streams, the oplog, users and roles.

mod filter;

pub use filter::NamespaceFilter;
