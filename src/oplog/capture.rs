//! Which oplog entries a backup keeps: those its namespaces need, and nothing from namespaces it does not hold,
//! so that replaying a backup of `shop.*` cannot touch `billing.*`.
//!
//! Rules, per entry:
//! * CRUD: kept when its namespace is selected (the backup's filter and the namespaces every backup skips).
//! * `applyOps` (plain or transaction): only the selected inner operations are kept; an entry left empty is dropped,
//!   except the entry that completes a transaction of which something was kept. `commitTransaction` and
//!   `abortTransaction` are kept for transactions of which something was kept.
//! * Collection commands (create, drop, index builds, collMod, …): kept when their collection is selected.
//! * `renameCollection`: kept when its source is selected (renamed out of the backup, replay drops it). Two renames
//!   cannot be restored and fail the backup, naming both collections: one *into* a selected namespace from one that
//!   is not selected (the source's documents are not in the backup), and one *of a collection the dump listed*: its
//!   reader may have read it only in part, or not at all, before it moved, and the documents under its new name were
//!   never read. Renames of collections created during the backup (`$out`'s temporary collections) are complete in
//!   the slice and need neither.
//! * `dropDatabase` is kept (replay drops only what the restore owns in that database); no-ops (`n`) are dropped;
//!   other commands are kept when their database holds selected namespaces (`db.*` matches the filter), so that
//!   restore meets them and refuses what it does not know.

use std::collections::HashSet;

use bson::{Bson, Document};

use super::entry::{self, TxnKey, TxnRole};
use crate::archive::{Namespace, NamespaceFilter};
use crate::mongo::is_backed_up;

/// Why a slice cannot be captured for this backup's namespaces.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaptureError {
    /// A collection the dump listed was renamed while the backup ran.
    #[error(
        "{from} was renamed to {to} while the backup read it, so the backup may hold only part of it: run the \
         backup again"
    )]
    RenamedWhileDumped {
        /// The collection the dump listed.
        from: Namespace,
        /// Its new name.
        to: Namespace,
    },
    /// A rename moved a collection the backup does not hold into one it does.
    #[error(
        "during the backup {from} was renamed to {to}, which the backup includes, but {from} is not included, so its \
         documents are not in the backup: include {from} in [backup] include, or exclude {to}"
    )]
    RenameIntoBackup {
        /// Source of the rename (not selected).
        from: Namespace,
        /// Target of the rename (selected).
        to: Namespace,
    },
}

/// The capture filter of one slice: stateful, as transactions span entries.
pub struct SliceFilter<'a> {
    filter: &'a NamespaceFilter,
    /// The collections the dump listed and read.
    listed: &'a HashSet<Namespace>,
    /// Transactions of which some operation was kept: their completing entries are kept too.
    kept_transactions: HashSet<TxnKey>,
    /// Collections the slice drops (or renames away), and databases it drops: what explains a collection that
    /// vanished while the dump ran.
    dropped: HashSet<Namespace>,
    dropped_databases: HashSet<String>,
}

impl<'a> SliceFilter<'a> {
    /// A filter keeping what a backup of `filter`'s namespaces needs, whose dump read `listed`.
    pub fn new(filter: &'a NamespaceFilter, listed: &'a HashSet<Namespace>) -> Self {
        SliceFilter {
            filter,
            listed,
            kept_transactions: HashSet::new(),
            dropped: HashSet::new(),
            dropped_databases: HashSet::new(),
        }
    }

    /// Whether the entries seen so far drop `ns`, rename it away or drop its database.
    pub fn drops(&self, ns: &Namespace) -> bool {
        self.dropped.contains(ns) || self.dropped_databases.contains(&ns.db)
    }

    fn selected(&self, ns: &Namespace) -> bool {
        is_backed_up(ns) && self.filter.matches(ns)
    }

    /// The entry as the slice keeps it (possibly with fewer `applyOps` operations), or `None` to leave it out.
    pub fn keep(&mut self, entry: Document) -> Result<Option<Document>, CaptureError> {
        match entry::op(&entry) {
            "n" => Ok(None),
            "c" => self.keep_command(entry),
            _ => Ok(entry::crud_namespace(&entry).filter(|ns| self.selected(ns)).map(|_| entry)),
        }
    }

    fn keep_command(&mut self, mut entry: Document) -> Result<Option<Document>, CaptureError> {
        let Some((name, _)) = entry::command(&entry) else { return Ok(None) };
        match (name, entry::command_namespace(&entry), entry::rename(&entry)) {
            ("drop", Some(ns), _) => {
                self.dropped.insert(ns);
            }
            (_, _, Some((from, _, _))) => {
                self.dropped.insert(from);
            }
            ("dropDatabase", _, _) => {
                self.dropped_databases.extend(entry::command_db(&entry).map(str::to_string));
            }
            _ => {}
        }
        let key = TxnKey::of(&entry);
        let kept_before = key.as_ref().is_some_and(|k| self.kept_transactions.contains(k));
        match name {
            "applyOps" => {
                let role = entry::txn_role(&entry);
                let mut kept = Vec::new();
                for op in entry::apply_ops(&entry).unwrap_or_default() {
                    if let Some(op) = self.keep(op)? {
                        kept.push(Bson::Document(op));
                    }
                }
                let completes = role == TxnRole::Immediate && kept_before;
                if kept.is_empty() && !completes {
                    return Ok(None);
                }
                if let Some(key) = key {
                    if role == TxnRole::Immediate {
                        self.kept_transactions.remove(&key);
                    } else {
                        self.kept_transactions.insert(key);
                    }
                }
                if let Ok(body) = entry.get_document_mut("o") {
                    body.insert("applyOps", kept);
                }
                Ok(Some(entry))
            }
            "commitTransaction" | "abortTransaction" => {
                if let Some(key) = key {
                    self.kept_transactions.remove(&key);
                }
                Ok(kept_before.then_some(entry))
            }
            "renameCollection" => match entry::rename(&entry) {
                Some((from, to, _)) if self.listed.contains(&from) => {
                    Err(CaptureError::RenamedWhileDumped { from, to })
                }
                Some((from, to, _)) if !self.selected(&from) && self.selected(&to) => {
                    Err(CaptureError::RenameIntoBackup { from, to })
                }
                Some((from, _, _)) if self.selected(&from) => Ok(Some(entry)),
                _ => Ok(None),
            },
            "dropDatabase" => Ok(Some(entry)),
            _ => {
                let keep = match entry::command_namespace(&entry) {
                    Some(ns) => self.selected(&ns),
                    None => entry::command_db(&entry).is_some_and(|db| self.selected(&Namespace::new(db, "*"))),
                };
                Ok(keep.then_some(entry))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn filter(include: &[&str]) -> NamespaceFilter {
        NamespaceFilter::new(&include.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]).unwrap()
    }

    #[test]
    fn crud_and_commands_follow_the_filter() {
        let f = filter(&["shop.*"]);
        let listed = HashSet::from([Namespace::new("shop", "listed")]);
        let mut s = SliceFilter::new(&f, &listed);
        let ins = |ns: &str| doc! {"op": "i", "ns": ns, "o": {"_id": 1}};
        assert!(s.keep(ins("shop.orders")).unwrap().is_some());
        assert!(s.keep(ins("billing.invoices")).unwrap().is_none());
        assert!(s.keep(ins("config.transactions")).unwrap().is_none());
        assert!(s.keep(doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}}).unwrap().is_none());
        let create = |db: &str| doc! {"op": "c", "ns": format!("{db}.$cmd"), "o": {"create": "c"}};
        assert!(s.keep(create("shop")).unwrap().is_some());
        assert!(s.keep(create("billing")).unwrap().is_none());
        let rename =
            |from: &str, to: &str| doc! {"op": "c", "ns": "admin.$cmd", "o": {"renameCollection": from, "to": to}};
        assert!(s.keep(rename("shop.a", "shop.b")).unwrap().is_some());
        assert!(s.keep(rename("shop.a", "billing.b")).unwrap().is_some());
        assert!(s.keep(rename("billing.a", "billing.b")).unwrap().is_none());
        assert!(matches!(s.keep(rename("billing.a", "shop.b")), Err(CaptureError::RenameIntoBackup { .. })));
        assert!(matches!(s.keep(rename("shop.listed", "shop.b")), Err(CaptureError::RenamedWhileDumped { .. })));
        // What explains a collection that vanished during the dump.
        assert!(s.drops(&Namespace::new("shop", "a")) && s.drops(&Namespace::new("billing", "a")));
        assert!(!s.drops(&Namespace::new("shop", "c")));
        s.keep(doc! {"op": "c", "ns": "gone.$cmd", "o": {"dropDatabase": 1}}).unwrap();
        assert!(s.drops(&Namespace::new("gone", "anything")));
    }

    #[test]
    fn transactions_keep_their_selected_part_and_their_completion() {
        let f = filter(&["shop.*"]);
        let listed = HashSet::new();
        let mut s = SliceFilter::new(&f, &listed);
        let txn = |o: Document, n: i64| doc! {"op": "c", "ns": "admin.$cmd", "o": o, "lsid": {"id": 1}, "txnNumber": n};
        let ins = |ns: &str| doc! {"op": "i", "ns": ns, "o": {"_id": 1}};
        let prepared = s.keep(txn(doc! {"applyOps": [ins("shop.a"), ins("billing.b")], "prepare": true}, 1)).unwrap();
        assert_eq!(prepared.unwrap().get_document("o").unwrap().get_array("applyOps").unwrap().len(), 1);
        assert!(s.keep(txn(doc! {"commitTransaction": 1}, 1)).unwrap().is_some());
        // A transaction wholly outside the backup leaves nothing, its commit included.
        assert!(s.keep(txn(doc! {"applyOps": [ins("billing.b")], "prepare": true}, 2)).unwrap().is_none());
        assert!(s.keep(txn(doc! {"abortTransaction": 1}, 2)).unwrap().is_none());
        // An unprepared chain whose last entry has nothing selected still completes.
        assert!(s.keep(txn(doc! {"applyOps": [ins("shop.a")], "partialTxn": true}, 3)).unwrap().is_some());
        let last = s.keep(txn(doc! {"applyOps": [ins("billing.b")]}, 3)).unwrap().unwrap();
        assert!(last.get_document("o").unwrap().get_array("applyOps").unwrap().is_empty());
    }
}
