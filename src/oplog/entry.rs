//! What an oplog entry is, read without a server: its namespace, the command it carries, the transaction it belongs
//! to. Capture (which entries a filtered backup keeps) and replay (what an entry does) both decide from these.

use bson::{Bson, Document, Timestamp};

use crate::archive::Namespace;

/// Commands whose first field names the collection they act on, in the entry's database.
const COLLECTION_COMMANDS: &[&str] = &[
    "create",
    "drop",
    "createIndexes",
    "startIndexBuild",
    "commitIndexBuild",
    "abortIndexBuild",
    "dropIndexes",
    "deleteIndexes",
    "collMod",
    "convertToCapped",
    "emptycapped",
];

/// The entry's `ts`.
pub fn timestamp(entry: &Document) -> Option<Timestamp> {
    entry.get_timestamp("ts").ok()
}

/// The entry's `op`: `i`, `u`, `d`, `c` or `n` (absent counts as `n`, a no-op).
pub fn op(entry: &Document) -> &str {
    entry.get_str("op").unwrap_or("n")
}

/// The command of a `c` entry: its name and its body (`o`).
pub fn command(entry: &Document) -> Option<(&str, &Document)> {
    if op(entry) != "c" {
        return None;
    }
    let body = entry.get_document("o").ok()?;
    Some((body.keys().next()?.as_str(), body))
}

/// The database a command entry runs in (`db.$cmd`).
pub fn command_db(entry: &Document) -> Option<&str> {
    entry.get_str("ns").ok()?.split_once('.').map(|(db, _)| db).filter(|db| !db.is_empty())
}

/// The namespace of a CRUD entry (`i`, `u`, `d`).
pub fn crud_namespace(entry: &Document) -> Option<Namespace> {
    matches!(op(entry), "i" | "u" | "d").then(|| entry.get_str("ns").ok().and_then(Namespace::parse)).flatten()
}

/// The collection a collection-level command acts on (`{drop: "c"}` in `db.$cmd` is `db.c`).
pub fn command_namespace(entry: &Document) -> Option<Namespace> {
    let (name, body) = command(entry)?;
    if !COLLECTION_COMMANDS.contains(&name) {
        return None;
    }
    let Ok(collection) = body.get_str(name) else { return None };
    Some(Namespace::new(command_db(entry)?, collection))
}

/// A `renameCollection` entry's source, target and whether an existing target is dropped.
pub fn rename(entry: &Document) -> Option<(Namespace, Namespace, bool)> {
    let (name, body) = command(entry)?;
    if name != "renameCollection" {
        return None;
    }
    let from = Namespace::parse(body.get_str("renameCollection").ok()?)?;
    let to = Namespace::parse(body.get_str("to").ok()?)?;
    // Servers log `dropTarget` as a bool, or as the UUID of the collection it dropped.
    let drop_target = match body.get("dropTarget") {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Binary(_)) => true,
        _ => false,
    };
    Some((from, to, drop_target))
}

/// The operations inside an `applyOps` command.
pub fn apply_ops(entry: &Document) -> Option<Vec<Document>> {
    let (name, body) = command(entry)?;
    if name != "applyOps" {
        return None;
    }
    let ops = body.get_array("applyOps").ok()?;
    Some(ops.iter().filter_map(|op| op.as_document().cloned()).collect())
}

/// A multi-document transaction: the session and its transaction number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    lsid: Vec<u8>,
    txn_number: i64,
}

impl TxnKey {
    /// The key of an entry written by a session with a transaction number, if it is one.
    pub fn of(entry: &Document) -> Option<Self> {
        let lsid = entry.get_document("lsid").ok()?;
        let txn_number = match entry.get("txnNumber")? {
            Bson::Int64(n) => *n,
            Bson::Int32(n) => i64::from(*n),
            _ => return None,
        };
        let mut bytes = Vec::new();
        lsid.to_writer(&mut bytes).ok()?;
        Some(TxnKey { lsid: bytes, txn_number })
    }
}

/// The part an entry plays in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnRole {
    /// Not part of a transaction, or a transaction that commits in this very entry: apply now.
    Immediate,
    /// `applyOps` with `partialTxn: true`: more of an unprepared or prepared transaction follows.
    Partial,
    /// `applyOps` with `prepare: true`: the transaction is complete but waits for its commit or abort.
    Prepare,
    /// `commitTransaction`: apply the prepared transaction.
    Commit,
    /// `abortTransaction`: discard it.
    Abort,
}

/// How a `c` entry takes part in a transaction (other entries are [`TxnRole::Immediate`]).
pub fn txn_role(entry: &Document) -> TxnRole {
    match command(entry) {
        Some(("applyOps", body)) if body.get_bool("partialTxn").unwrap_or(false) => TxnRole::Partial,
        Some(("applyOps", body)) if body.get_bool("prepare").unwrap_or(false) => TxnRole::Prepare,
        Some(("commitTransaction", _)) => TxnRole::Commit,
        Some(("abortTransaction", _)) => TxnRole::Abort,
        _ => TxnRole::Immediate,
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn namespaces_of_entries() {
        let insert = doc! {"op": "i", "ns": "shop.orders.2024", "o": {"_id": 1}};
        assert_eq!(crud_namespace(&insert), Some(Namespace::new("shop", "orders.2024")));
        let drop = doc! {"op": "c", "ns": "shop.$cmd", "o": {"drop": "orders"}};
        assert_eq!(command_namespace(&drop), Some(Namespace::new("shop", "orders")));
        let flat =
            doc! {"op": "c", "ns": "t.$cmd", "o": {"createIndexes": "k", "v": 2, "key": {"x": 1}, "name": "x_1"}};
        assert_eq!(command_namespace(&flat), Some(Namespace::new("t", "k")));
        let drop_db = doc! {"op": "c", "ns": "t.$cmd", "o": {"dropDatabase": 1}};
        assert_eq!(command_namespace(&drop_db), None);
        assert_eq!(command(&drop_db).map(|c| c.0), Some("dropDatabase"));
        let ren = doc! {"op": "c", "ns": "a.$cmd", "o": {"renameCollection": "a.x", "to": "b.y", "dropTarget": bson::Binary{subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![0; 16]}}};
        assert_eq!(rename(&ren), Some((Namespace::new("a", "x"), Namespace::new("b", "y"), true)));
        assert_eq!(op(&doc! {"ns": ""}), "n");
    }

    #[test]
    fn transaction_roles_and_keys() {
        let lsid = doc! {"id": bson::Binary{subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16]}};
        let partial = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [], "partialTxn": true}, "lsid": lsid.clone(), "txnNumber": 3_i64};
        let prepare = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [], "prepare": true}, "lsid": lsid.clone(), "txnNumber": 3_i64};
        let commit = doc! {"op": "c", "ns": "admin.$cmd", "o": {"commitTransaction": 1}, "lsid": lsid.clone(), "txnNumber": 3_i64};
        let other =
            doc! {"op": "c", "ns": "admin.$cmd", "o": {"abortTransaction": 1}, "lsid": lsid, "txnNumber": 4_i64};
        assert_eq!(txn_role(&partial), TxnRole::Partial);
        assert_eq!(txn_role(&prepare), TxnRole::Prepare);
        assert_eq!(txn_role(&commit), TxnRole::Commit);
        assert_eq!(txn_role(&other), TxnRole::Abort);
        assert_eq!(TxnKey::of(&partial), TxnKey::of(&commit));
        assert_ne!(TxnKey::of(&partial), TxnKey::of(&other));
        assert_eq!(txn_role(&doc! {"op": "c", "o": {"applyOps": []}}), TxnRole::Immediate);
    }
}
