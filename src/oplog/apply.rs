//! Replay: oplog entries applied through ordinary writes and commands (no `applyOps`, which not every server has),
//! ending in what the source held at the slice's last entry.
//!
//! * Transactions complete or not as [`super::txn`] decides: an aborted or unfinished one writes nothing.
//! * Only namespaces the restore owns are touched: those the archive holds, and those the slice itself creates or
//!   renames into. An entry on any other namespace (an old archive whose slice was not filtered) is counted and
//!   not applied, so restoring a backup of `shop.*` into a live server never reverts `billing.*`.
//! * Over a fuzzy snapshot (documents read while writes went on) replay converges: inserts replace (consecutive
//!   inserts into one collection go as one command), updates of a document the snapshot does not hold are skipped,
//!   "already exists" and "not found" from commands mean the snapshot was already past that entry.
//! * Writes bypass document validation, as the server's own oplog application does: the source accepted them.
//! * A command replay does not know fails the restore naming it, unless the caller chose to skip unknown commands;
//!   then each one skipped is listed in the report.

use std::collections::{HashMap, HashSet};

use bson::{Bson, Document, doc};
use mongodb::Client;

use super::entry;
use super::txn::{Decision, OpenTransaction, Transactions};
use super::update::{self, Update};
use crate::archive::Namespace;
use crate::error::{Error, Result};
use crate::mongo::{NAMESPACE_EXISTS, NAMESPACE_NOT_FOUND, server_code};

/// Server error codes that mean the target is already past the entry being replayed.
const ALREADY_PAST: &[i32] = &[
    11000, // DuplicateKey: a later state of the document, or of another one with the same unique key
    NAMESPACE_NOT_FOUND,
    27, // IndexNotFound
    NAMESPACE_EXISTS,
    85, // IndexOptionsConflict
    86, // IndexKeySpecsConflict
];

/// Inserts queued for one `update` command: at most this many ...
const INSERT_BATCH: usize = 1000;
/// ... or this many bytes of documents, well under the server's 16 MiB command limit.
const INSERT_BATCH_BYTES: usize = 8 << 20;

/// Where a source namespace is restored to, or `None` when the restore leaves it alone.
pub type Target<'a> = &'a (dyn Fn(&Namespace) -> Option<Namespace> + Sync);

/// What a replay did and what it deliberately did not do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    /// Operations applied (inner operations of transactions and `applyOps` count one each).
    pub applied: u64,
    /// Operations on namespaces outside the backup, not applied.
    pub outside_backup: u64,
    /// Transactions the slice started but did not commit: not applied, as on the source at the slice's end.
    pub open_transactions: Vec<OpenTransaction>,
    /// Index builds started but neither committed nor aborted by the slice's end: not built.
    pub open_index_builds: Vec<String>,
    /// Commands skipped because replay does not know them (only with skip-unknown).
    pub skipped_commands: Vec<String>,
}

/// Replays one slice, entry by entry, in `ts` order.
pub struct Replayer<'a> {
    client: &'a Client,
    target: Target<'a>,
    skip_unknown: bool,
    transactions: Transactions,
    /// Source namespaces the restore owns: the archive's, plus those the slice creates or renames into.
    owned: HashSet<Namespace>,
    /// Two-phase index builds by their build UUID: where, and which indexes.
    index_builds: HashMap<Vec<u8>, (Namespace, Vec<Document>)>,
    /// Consecutive inserts into one target, written together (see [`Replayer::queue_insert`]).
    inserts: Option<PendingInserts>,
    report: ReplayReport,
}

/// Inserts waiting to be written as one `update` command of upserting replacements.
struct PendingInserts {
    to: Namespace,
    statements: Vec<Document>,
    bytes: usize,
}

impl<'a> Replayer<'a> {
    /// A replayer into `client` owning `archived` (the archive's namespaces, as named in the archive).
    pub fn new(
        client: &'a Client,
        target: Target<'a>,
        archived: impl IntoIterator<Item = Namespace>,
        skip_unknown: bool,
    ) -> Self {
        Replayer {
            client,
            target,
            skip_unknown,
            transactions: Transactions::default(),
            owned: archived.into_iter().collect(),
            index_builds: HashMap::new(),
            inserts: None,
            report: ReplayReport::default(),
        }
    }

    /// Replays one entry of the slice.
    pub async fn replay(&mut self, entry: &Document) -> Result<()> {
        let decision = self.transactions.decide(entry).map_err(|e| Error::Refused(e.to_string()))?;
        if let Decision::Apply(ops) = decision {
            for op in ops {
                self.apply(&op).await?;
            }
        }
        Ok(())
    }

    /// Ends the replay: the last queued inserts are written; what stayed open is reported, not applied.
    pub async fn finish(mut self) -> Result<ReplayReport> {
        self.flush_inserts().await?;
        self.report.open_transactions = self.transactions.into_open();
        let mut builds: Vec<String> =
            self.index_builds.into_values().map(|(ns, indexes)| format!("{ns} ({})", index_names(&indexes))).collect();
        builds.sort();
        self.report.open_index_builds = builds;
        Ok(self.report)
    }

    async fn apply(&mut self, op: &Document) -> Result<()> {
        if entry::op(op) == "i" {
            return self.queue_insert(op).await;
        }
        // Everything else may read or change what the queued inserts write: they go first.
        self.flush_inserts().await?;
        match entry::op(op) {
            "n" => Ok(()),
            "c" => Box::pin(self.apply_command(op)).await,
            _ => self.apply_crud(op).await,
        }
    }

    /// The target of an owned source namespace; `Ok(None)` for one the restore skips.
    fn owned_target(&mut self, ns: &Namespace) -> Option<Namespace> {
        if !self.owned.contains(ns) {
            self.report.outside_backup += 1;
            return None;
        }
        (self.target)(ns)
    }

    async fn apply_crud(&mut self, op: &Document) -> Result<()> {
        let Some(ns) = entry::crud_namespace(op) else {
            return Err(Error::Refused(format!("oplog entry without a valid namespace: {op}")));
        };
        let Some(to) = self.owned_target(&ns) else { return Ok(()) };
        let coll = self.client.database(&to.db).collection::<Document>(&to.collection);
        let what = |kind: &str| format!("replaying an oplog {kind} on {to}");
        let o = op.get_document("o").map_err(|_| Error::Refused(format!("oplog entry without `o`: {op}")))?;
        let result = match entry::op(op) {
            "u" => {
                let selector = op.get_document("o2").cloned().unwrap_or_default();
                match update::classify(o) {
                    Update::Replacement(new) => coll
                        .replace_one(selector, new.clone())
                        .upsert(true)
                        .bypass_document_validation(true)
                        .await
                        .map(drop),
                    Update::Change(change) => match coll.find_one(selector.clone()).await {
                        // Not in the snapshot: a later entry deletes it, or it was never there as of the end.
                        Ok(None) => Ok(()),
                        Ok(Some(mut current)) => {
                            update::apply(&mut current, change).map_err(|unknown| {
                                Error::Refused(format!("{}: unknown {unknown} in {op}", what("update")))
                            })?;
                            coll.replace_one(selector, current).bypass_document_validation(true).await.map(drop)
                        }
                        Err(e) => Err(e),
                    },
                }
            }
            "d" => coll.delete_one(o.clone()).await.map(drop),
            other => return Err(Error::Refused(format!("oplog entry with unknown op {other:?}: {op}"))),
        };
        tolerate(result, &what(entry::op(op)))?;
        self.report.applied += 1;
        Ok(())
    }

    /// Queues an insert. Consecutive inserts into one collection (a bulk load, an `insertMany`) are written as one
    /// `update` command of upserting replacements, in order, instead of one round trip each: the same writes the
    /// one-by-one path makes (an insert replaces a document the fuzzy snapshot already holds).
    async fn queue_insert(&mut self, op: &Document) -> Result<()> {
        let Some(ns) = entry::crud_namespace(op) else {
            return Err(Error::Refused(format!("oplog entry without a valid namespace: {op}")));
        };
        let Some(to) = self.owned_target(&ns) else { return Ok(()) };
        let o = op.get_document("o").map_err(|_| Error::Refused(format!("oplog entry without `o`: {op}")))?;
        if self.inserts.as_ref().is_some_and(|p| p.to != to) {
            self.flush_inserts().await?;
        }
        let pending = self.inserts.get_or_insert_with(|| PendingInserts { to, statements: Vec::new(), bytes: 0 });
        let id = o.get("_id").cloned().unwrap_or(Bson::Null);
        pending.bytes += bson::to_vec(o).map_or(0, |b| b.len());
        pending.statements.push(doc! {"q": {"_id": id}, "u": o.clone(), "upsert": true});
        self.report.applied += 1;
        if pending.statements.len() >= INSERT_BATCH || pending.bytes >= INSERT_BATCH_BYTES {
            self.flush_inserts().await?;
        }
        Ok(())
    }

    /// Writes the queued inserts, in order. A statement the target is already past (a duplicate key, as one by
    /// one) is passed over and the rest written; any other error fails the replay.
    async fn flush_inserts(&mut self) -> Result<()> {
        let Some(pending) = self.inserts.take() else { return Ok(()) };
        let what = || format!("replaying oplog inserts into {}", pending.to);
        let database = self.client.database(&pending.to.db);
        let mut rest = &pending.statements[..];
        while !rest.is_empty() {
            let command = doc! {
                "update": &pending.to.collection,
                "updates": rest.to_vec(),
                "ordered": true,
                "bypassDocumentValidation": true,
            };
            let reply =
                database.run_command(command).await.map_err(|source| Error::Mongo { action: what(), source })?;
            let first_error = reply.get_array("writeErrors").ok().and_then(|e| e.first()).and_then(Bson::as_document);
            let Some(error) = first_error else { break };
            let code = error.get_i32("code").unwrap_or_default();
            if !ALREADY_PAST.contains(&code) {
                let message = error.get_str("errmsg").unwrap_or("write error");
                return Err(Error::Refused(format!("{}: {message} (code {code})", what())));
            }
            rest = rest.get(error.get_i32("index").unwrap_or_default() as usize + 1..).unwrap_or_default();
        }
        Ok(())
    }

    async fn apply_command(&mut self, op: &Document) -> Result<()> {
        let Some((name, body)) = entry::command(op) else { return Ok(()) };
        let db = entry::command_db(op).unwrap_or("admin").to_string();
        match name {
            "applyOps" => {
                for inner in entry::apply_ops(op).unwrap_or_default() {
                    Box::pin(self.apply(&inner)).await?;
                }
                return Ok(());
            }
            "renameCollection" => return self.rename(op).await,
            "dropDatabase" => return self.drop_database(&db).await,
            _ => {}
        }
        let Some(ns) = entry::command_namespace(op) else { return self.unknown(name, &db, op) };
        if name == "create" {
            self.owned.insert(ns.clone());
        }
        let Some(to) = self.owned_target(&ns) else { return Ok(()) };
        let what = format!("replaying oplog command {name} on {to}");
        let database = self.client.database(&to.db);
        let collection = to.collection.as_str();
        let result = match name {
            "create" => {
                let mut command = doc! {"create": collection};
                body.iter().filter(|(k, _)| !["create", "idIndex"].contains(&k.as_str())).for_each(|(k, v)| {
                    command.insert(k, v.clone());
                });
                database.run_command(command).await.map(drop)
            }
            "drop" => {
                self.owned.remove(&ns);
                database.collection::<Document>(collection).drop().await
            }
            "createIndexes" => {
                let indexes = match body.get_array("indexes") {
                    Ok(wrapped) => wrapped.iter().filter_map(|i| i.as_document().cloned()).collect(),
                    Err(_) => vec![without(body, "createIndexes")],
                };
                create_indexes(&database, collection, indexes).await
            }
            "startIndexBuild" => {
                self.index_builds.insert(build_uuid(body), (ns, indexes_of(body)));
                Ok(())
            }
            "commitIndexBuild" => {
                self.index_builds.remove(&build_uuid(body));
                create_indexes(&database, collection, indexes_of(body)).await
            }
            "abortIndexBuild" => {
                self.index_builds.remove(&build_uuid(body));
                let names: Vec<Bson> = indexes_of(body).iter().filter_map(|i| i.get("name").cloned()).collect();
                database.run_command(doc! {"dropIndexes": collection, "index": names}).await.map(drop)
            }
            "dropIndexes" | "deleteIndexes" => {
                let index = body.get("index").cloned().unwrap_or(Bson::String("*".into()));
                database.run_command(doc! {"dropIndexes": collection, "index": index}).await.map(drop)
            }
            "collMod" | "convertToCapped" => {
                let mut command = doc! {name: collection};
                command.extend(without(body, name));
                database.run_command(command).await.map(drop)
            }
            "emptycapped" => database.collection::<Document>(collection).delete_many(doc! {}).await.map(drop),
            other => unreachable!("{other} is listed as a collection command but not replayed"),
        };
        tolerate(result, &what)?;
        self.report.applied += 1;
        Ok(())
    }

    /// A rename within what the restore owns is a rename; out of it, the collection leaves (a drop); into it from a
    /// collection the archive does not hold, the dump already read the result.
    async fn rename(&mut self, op: &Document) -> Result<()> {
        let Some((from, to, drop_target)) = entry::rename(op) else {
            return Err(Error::Refused(format!("renameCollection entry without source or target: {op}")));
        };
        let owned = self.owned.contains(&from);
        let (from_target, to_target) = ((self.target)(&from), (self.target)(&to));
        let what = format!("replaying oplog renameCollection {from} to {to}");
        let result = match (owned, from_target, to_target) {
            (true, Some(f), Some(t)) => {
                let command = doc! {"renameCollection": f.to_string(), "to": t.to_string(), "dropTarget": drop_target};
                match self.client.database("admin").run_command(command).await {
                    // The target exists although the rename does not drop it: the dump read the target after this
                    // rename, so the snapshot is past it, and the source must be gone as it is on the server.
                    Err(e) if server_code(&e) == Some(NAMESPACE_EXISTS) => {
                        self.client.database(&f.db).collection::<Document>(&f.collection).drop().await
                    }
                    other => other.map(drop),
                }
            }
            (true, Some(f), None) => self.client.database(&f.db).collection::<Document>(&f.collection).drop().await,
            (_, _, None) => {
                self.owned.remove(&from);
                return Ok(());
            }
            (true, None, Some(_)) => {
                return Err(Error::Refused(format!(
                    "{what}: {from} is not being restored, so {to} cannot be rebuilt; restore {from} too"
                )));
            }
            // The source is neither in the archive nor created by the slice: it existed before the window and was
            // renamed before the dump listed the collections, so the target was read after the rename. (A source
            // outside the backup's namespaces never gets here: capture refuses that rename.)
            (false, _, Some(_)) => {
                self.owned.insert(to);
                return Ok(());
            }
        };
        tolerate(result, &what)?;
        self.owned.remove(&from);
        self.owned.insert(to);
        self.report.applied += 1;
        Ok(())
    }

    /// `dropDatabase` drops what the restore owns in that database, never the target's other collections.
    async fn drop_database(&mut self, db: &str) -> Result<()> {
        let mut in_db: Vec<Namespace> = self.owned.iter().filter(|ns| ns.db == db).cloned().collect();
        in_db.sort();
        for ns in in_db {
            self.owned.remove(&ns);
            if let Some(to) = (self.target)(&ns) {
                let dropped = self.client.database(&to.db).collection::<Document>(&to.collection).drop().await;
                tolerate(dropped, &format!("replaying oplog dropDatabase {db}: dropping {to}"))?;
            }
        }
        self.report.applied += 1;
        Ok(())
    }

    fn unknown(&mut self, name: &str, db: &str, op: &Document) -> Result<()> {
        let ts = entry::timestamp(op).map_or_else(|| "?".to_string(), |t| format!("{}:{}", t.time, t.increment));
        let described = format!("{name} on {db} at ts {ts}");
        if self.skip_unknown {
            self.report.skipped_commands.push(described);
            return Ok(());
        }
        Err(Error::Refused(format!(
            "the oplog slice runs {described}, which replay does not know; pass --oplog-skip-unknown to restore \
             without it (every skipped command is listed)"
        )))
    }
}

fn tolerate(result: mongodb::error::Result<()>, what: &str) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if server_code(&e).is_some_and(|c| ALREADY_PAST.contains(&c)) => Ok(()),
        Err(e) => Err(Error::Mongo { action: what.to_string(), source: e }),
    }
}

async fn create_indexes(
    database: &mongodb::Database,
    collection: &str,
    indexes: Vec<Document>,
) -> mongodb::error::Result<()> {
    let specs: Vec<Document> = indexes.into_iter().map(|spec| without(&spec, "ns")).collect();
    if specs.is_empty() {
        return Ok(());
    }
    database.run_command(doc! {"createIndexes": collection, "indexes": specs}).await.map(drop)
}

fn without(body: &Document, key: &str) -> Document {
    body.iter().filter(|(k, _)| k.as_str() != key).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn indexes_of(body: &Document) -> Vec<Document> {
    body.get_array("indexes").map(|a| a.iter().filter_map(|i| i.as_document().cloned()).collect()).unwrap_or_default()
}

fn build_uuid(body: &Document) -> Vec<u8> {
    match body.get("indexBuildUUID") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        other => other.map(|v| v.to_string().into_bytes()).unwrap_or_default(),
    }
}

fn index_names(indexes: &[Document]) -> String {
    indexes.iter().filter_map(|i| i.get_str("name").ok()).collect::<Vec<_>>().join(", ")
}
