//! Multi-document transactions in the oplog, decided the way a server's oplog applier decides them: an entry that
//! belongs to a transaction says nothing until the entry that completes the transaction arrives.
//!
//! * Unprepared: `applyOps` entries with `partialTxn: true`, chained by session and transaction number, then one
//!   `applyOps` without it; everything is applied at that last entry.
//! * Prepared: the same chain ending in `applyOps` with `prepare: true`; applied at `commitTransaction`, discarded at
//!   `abortTransaction`.
//! * A transaction with no completing entry by the end of the slice never committed as of the slice's end: it is
//!   discarded and reported.

use std::collections::HashMap;

use bson::{Document, Timestamp};

use super::entry::{self, TxnKey, TxnRole};

/// What replay does with an entry once the transaction logic has seen it.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Apply these operations now, in order (inner operations of `applyOps`, or the entry itself).
    Apply(Vec<Document>),
    /// Nothing yet (buffered), or nothing ever (aborted).
    Wait,
}

/// A transaction the slice started but did not complete.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTransaction {
    /// `ts` of its first entry in the slice.
    pub first: Timestamp,
    /// Operations buffered for it.
    pub operations: usize,
    /// Whether it had reached `prepare`.
    pub prepared: bool,
}

/// An error that makes the slice unusable: applying it would not give what the server held.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TxnError {
    /// A commit whose transaction's operations are not in the slice.
    #[error(
        "the oplog slice holds a commitTransaction at {0} whose transaction's operations it does not hold; \
         the slice starts too late"
    )]
    CommitWithoutOperations(Timestamp),
}

/// Open transactions, keyed by session and transaction number.
#[derive(Debug, Default)]
pub struct Transactions {
    open: HashMap<TxnKey, Buffered>,
}

#[derive(Debug)]
struct Buffered {
    first: Timestamp,
    ops: Vec<Document>,
    prepared: bool,
}

impl Transactions {
    /// Decides what `entry` does. Entries that are not transaction commands come back as themselves.
    pub fn decide(&mut self, entry: &Document) -> Result<Decision, TxnError> {
        let role = entry::txn_role(entry);
        let key = TxnKey::of(entry);
        let ts = entry::timestamp(entry).unwrap_or(Timestamp { time: 0, increment: 0 });
        let inner = || entry::apply_ops(entry).unwrap_or_default();
        Ok(match (role, key) {
            (TxnRole::Partial | TxnRole::Prepare, Some(key)) => {
                let open =
                    self.open.entry(key).or_insert_with(|| Buffered { first: ts, ops: Vec::new(), prepared: false });
                open.ops.extend(inner());
                open.prepared |= role == TxnRole::Prepare;
                Decision::Wait
            }
            (TxnRole::Commit, Some(key)) => match self.open.remove(&key) {
                Some(open) => Decision::Apply(open.ops),
                None => return Err(TxnError::CommitWithoutOperations(ts)),
            },
            (TxnRole::Abort, key) => {
                if let Some(key) = key {
                    self.open.remove(&key);
                }
                Decision::Wait
            }
            // An applyOps without partialTxn/prepare completes its transaction (if one was open) or stands alone.
            (_, key) => match entry::apply_ops(entry) {
                Some(ops) => {
                    let mut all = key.and_then(|k| self.open.remove(&k)).map(|open| open.ops).unwrap_or_default();
                    all.extend(ops);
                    Decision::Apply(all)
                }
                None => Decision::Apply(vec![entry.clone()]),
            },
        })
    }

    /// The transactions still open: never committed as of the end of the slice, so not applied.
    pub fn into_open(self) -> Vec<OpenTransaction> {
        let mut open: Vec<_> = self
            .open
            .into_values()
            .map(|b| OpenTransaction { first: b.first, operations: b.ops.len(), prepared: b.prepared })
            .collect();
        open.sort_by_key(|t| t.first);
        open
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn txn(o: Document, n: i64, i: u32) -> Document {
        doc! {"ts": Timestamp{time: 1, increment: i}, "op": "c", "ns": "admin.$cmd", "o": o, "lsid": {"id": 7}, "txnNumber": n}
    }

    #[test]
    fn prepared_transactions_wait_for_their_commit_or_abort() {
        let mut t = Transactions::default();
        let ins = |id: i32| doc! {"op": "i", "ns": "a.b", "o": {"_id": id}};
        assert_eq!(t.decide(&txn(doc! {"applyOps": [ins(1)], "partialTxn": true}, 1, 1)), Ok(Decision::Wait));
        assert_eq!(t.decide(&txn(doc! {"applyOps": [ins(2)], "prepare": true}, 1, 2)), Ok(Decision::Wait));
        assert_eq!(t.decide(&txn(doc! {"applyOps": [ins(3)], "prepare": true}, 2, 3)), Ok(Decision::Wait));
        assert_eq!(t.decide(&txn(doc! {"abortTransaction": 1}, 2, 4)), Ok(Decision::Wait));
        assert_eq!(t.decide(&txn(doc! {"commitTransaction": 1}, 1, 5)), Ok(Decision::Apply(vec![ins(1), ins(2)])));
        assert!(matches!(
            t.decide(&txn(doc! {"commitTransaction": 1}, 9, 6)),
            Err(TxnError::CommitWithoutOperations(_))
        ));
        assert_eq!(t.decide(&txn(doc! {"applyOps": [ins(4)], "partialTxn": true}, 3, 7)), Ok(Decision::Wait));
        let open = t.into_open();
        assert_eq!(
            open,
            vec![OpenTransaction { first: Timestamp { time: 1, increment: 7 }, operations: 1, prepared: false }]
        );
    }

    #[test]
    fn unprepared_chains_apply_at_their_last_entry() {
        let mut t = Transactions::default();
        let ins = |id: i32| doc! {"op": "i", "ns": "a.b", "o": {"_id": id}};
        assert_eq!(t.decide(&txn(doc! {"applyOps": [ins(1)], "partialTxn": true}, 1, 1)), Ok(Decision::Wait));
        assert_eq!(
            t.decide(&txn(doc! {"applyOps": [ins(2)], "count": 2}, 1, 2)),
            Ok(Decision::Apply(vec![ins(1), ins(2)]))
        );
        let plain = doc! {"op": "i", "ns": "a.b", "o": {"_id": 5}};
        assert_eq!(t.decide(&plain), Ok(Decision::Apply(vec![plain.clone()])));
        assert!(t.into_open().is_empty());
    }
}
