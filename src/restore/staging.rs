//! `--drop` without a window of loss: a `--drop` restore writes every collection, index and oplog change into
//! staging collections next to its target, and replaces the targets only once the whole archive has been read and
//! every CRC checked.
//!
//! Why staging rather than verifying first: an archive file or a stream from the store can only be known good by
//! reading it to the end, and reading it twice doubles the time and the egress, while a stored backup's sha256 says
//! nothing about an `--archive` file. Staging needs no second read and also covers failures the archive cannot
//! predict (a unique index that will not build, the server refusing a write).
//!
//! A staging collection lives in its target's database (a rename across databases would be a copy) and is named
//! `__mba_restore.<run>.<target collection>`: the prefix is not one applications use, the run id keeps two restores
//! apart, and the name is derived from the target alone, so a collection the oplog replay creates is staged (and
//! swapped) like the others. The swap renames each staging collection onto its target with `renameCollection` and
//! `dropTarget: true`, which keeps the collection's options and indexes and replaces the target in one step. Views
//! cannot be renamed: a staged view is re-created under the target's name. Time-series collections cannot be
//! renamed either, so the plan refuses to `--drop` them.

use std::collections::BTreeSet;
use std::sync::Mutex;

use bson::{Document, doc};
use futures::TryStreamExt;
use mongodb::Client;

use crate::archive::Namespace;
use crate::error::{Error, Result};

/// What every staging collection name starts with.
pub const PREFIX: &str = "__mba_restore.";

/// The staging collections of one `--drop` restore.
#[derive(Debug)]
pub struct Staging {
    /// `PREFIX` plus this run's id and a dot.
    prefix: String,
    /// Every database a staging name was handed out for: where to look when swapping or cleaning up.
    databases: Mutex<BTreeSet<String>>,
}

/// One staging collection found at the end, with what the swap needs to know about it.
struct Staged {
    staging: Namespace,
    target: Namespace,
    kind: String,
    options: Document,
}

impl Staging {
    /// Staging for a new run, with a random id.
    pub fn start() -> Self {
        Staging { prefix: format!("{PREFIX}{:08x}.", rand::random::<u32>()), databases: Mutex::new(BTreeSet::new()) }
    }

    /// The staging name of `target`; remembers its database for the swap and the cleanup.
    pub fn name(&self, target: &Namespace) -> Namespace {
        self.databases.lock().unwrap_or_else(|e| e.into_inner()).insert(target.db.clone());
        Namespace::new(&target.db, format!("{}{}", self.prefix, target.collection))
    }

    fn databases(&self) -> Vec<String> {
        self.databases.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// The staging collections that exist now, collections before views.
    async fn staged(&self, client: &Client) -> Result<Vec<Staged>> {
        let mut found = Vec::new();
        for db in self.databases() {
            let specs: Vec<Document> = client
                .database(&db)
                .run_cursor_command(doc! {"listCollections": 1})
                .await
                .map_err(Error::mongo(format!("listing the staging collections in {db}")))?
                .try_collect()
                .await
                .map_err(Error::mongo(format!("listing the staging collections in {db}")))?;
            for spec in specs {
                let Some(target) = spec.get_str("name").ok().and_then(|n| n.strip_prefix(&self.prefix)) else {
                    continue;
                };
                found.push(Staged {
                    staging: Namespace::new(&db, spec.get_str("name").unwrap_or_default()),
                    target: Namespace::new(&db, target),
                    kind: spec.get_str("type").unwrap_or("collection").to_string(),
                    options: spec.get_document("options").cloned().unwrap_or_default(),
                });
            }
        }
        found.sort_by_key(|s| s.kind == "view");
        Ok(found)
    }

    /// Replaces every target with its staging collection. On failure the remaining staging collections are
    /// dropped and the error lists which targets were replaced and which are unchanged.
    pub async fn swap(&self, client: &Client) -> Result<Vec<Namespace>> {
        let staged = match self.staged(client).await {
            Ok(staged) => staged,
            Err(e) => return Err(self.failed(client, e).await),
        };
        let mut replaced = Vec::new();
        for (i, s) in staged.iter().enumerate() {
            if let Err(e) = swap_one(client, s).await {
                let unchanged: Vec<Namespace> = staged[i..].iter().map(|s| s.target.clone()).collect();
                let outcome = format!(
                    "replaced {}; unchanged {}; staging collections dropped{}",
                    list(&replaced),
                    list(&unchanged),
                    self.discard(client).await
                );
                return Err(Error::Restore { outcome, source: Box::new(e) });
            }
            replaced.push(s.target.clone());
        }
        Ok(replaced)
    }

    /// Wraps the error of a failed restore after dropping the staging collections: no target was touched.
    pub async fn failed(&self, client: &Client, error: Error) -> Error {
        let outcome = format!(
            "--drop restore abandoned: every target is unchanged, staging dropped{}",
            self.discard(client).await
        );
        Error::Restore { outcome, source: Box::new(error) }
    }

    /// Drops every staging collection of this run; returns "" or, when some could not be dropped, a note naming
    /// them for the operator.
    async fn discard(&self, client: &Client) -> String {
        let left: Vec<String> = match self.staged(client).await {
            Ok(staged) => {
                let mut left = Vec::new();
                for s in staged {
                    let dropped =
                        client.database(&s.staging.db).collection::<Document>(&s.staging.collection).drop().await;
                    if dropped.is_err() {
                        left.push(s.staging.to_string());
                    }
                }
                left
            }
            Err(_) => self.databases().iter().map(|db| format!("{db}.{}*", self.prefix)).collect(),
        };
        if left.is_empty() { String::new() } else { format!(" except {}: drop them by hand", left.join(", ")) }
    }
}

/// Moves one staging collection onto its target.
async fn swap_one(client: &Client, s: &Staged) -> Result<()> {
    let db = client.database(&s.target.db);
    let what = || Error::mongo(format!("replacing {} with the restored {}", s.target, s.staging));
    let target_kind = db
        .run_cursor_command(doc! {"listCollections": 1, "filter": {"name": &s.target.collection}})
        .await
        .map_err(what())?
        .try_collect::<Vec<Document>>()
        .await
        .map_err(what())?
        .first()
        .map(|spec| spec.get_str("type").unwrap_or("collection").to_string());
    // renameCollection cannot replace a view, nor move one: views are dropped and made again.
    if s.kind == "view" || target_kind.as_deref() == Some("view") {
        db.collection::<Document>(&s.target.collection).drop().await.map_err(what())?;
    }
    if s.kind == "view" {
        let mut create = doc! {"create": &s.target.collection};
        create.extend(s.options.clone());
        db.run_command(create).await.map_err(what())?;
        return db.collection::<Document>(&s.staging.collection).drop().await.map_err(what());
    }
    client
        .database("admin")
        .run_command(doc! {"renameCollection": s.staging.to_string(), "to": s.target.to_string(), "dropTarget": true})
        .await
        .map_err(what())?;
    Ok(())
}

fn list(namespaces: &[Namespace]) -> String {
    if namespaces.is_empty() {
        return "nothing".into();
    }
    namespaces.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}
