//! Restore: an archive (ours or stock mongodump's, any compression) back into a MongoDB server.
//!
//! Plan first ([`plan::plan`]), then: create collections with their options, insert documents in parallel
//! unordered batches, build indexes after the data, replay the oplog slice, merge users and roles.

mod plan;
mod rename;

use std::collections::HashMap;
use std::sync::Arc;

use bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::Client;
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use plan::{Action, PlannedNamespace, RestorePlan};
pub use rename::{Rename, rename};

use crate::archive::{ArchiveItem, ArchiveReader, CollectionKind, Namespace};
use crate::compress;
use crate::error::{Error, Result};
use crate::mongo::{NamespaceFilter, is_backed_up};
use crate::oplog::{ReplayReport, Replayer};

/// Bytes per insert batch at most, below the server's 48 MB message limit with room to spare.
const BATCH_BYTES: usize = 8 << 20;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Which archive namespaces to restore (matched on their names in the archive).
    pub filter: NamespaceFilter,
    /// `--nsFrom/--nsTo` rules.
    pub renames: Vec<Rename>,
    /// Drop existing target collections first.
    pub drop: bool,
    /// Only build and return the plan.
    pub dry_run: bool,
    /// Replay the archive's oplog slice after the data, which makes the restore consistent as of the manifest's
    /// `oplog.end`. Off for `verify --deep`, which compares the restored documents with the archive's own.
    pub replay_oplog: bool,
    /// Skip oplog commands replay does not know (listed in the report) instead of failing.
    pub oplog_skip_unknown: bool,
    /// Insert batches in flight.
    pub parallel: usize,
    /// Documents per batch.
    pub batch_size: usize,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The plan that was executed (or, for a dry run, would be).
    pub plan: RestorePlan,
    /// Documents inserted per target namespace.
    pub inserted: Vec<(Namespace, u64)>,
    /// What replaying the oplog slice did, and what it left out.
    pub replay: ReplayReport,
    /// Users and roles merged.
    pub users_and_roles: u64,
}

impl RestoreReport {
    /// Total documents inserted.
    pub fn documents(&self) -> u64 {
        self.inserted.iter().map(|(_, n)| n).sum()
    }
}

/// Restores the archive read from `input` (plain, gzip or zstd: detected) into `client`.
pub async fn restore(
    input: impl AsyncRead + Send + Unpin + 'static,
    client: &Client,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let (_, plain) =
        compress::decoder(input).await.map_err(|source| Error::Io { action: "reading the archive".into(), source })?;
    let mut reader = ArchiveReader::open(plain).await?;
    let mut plan = plan::plan(client, reader.prelude(), &options.filter, &options.renames, options.drop).await?;
    plan.replay_oplog &= options.replay_oplog;
    let mut report = RestoreReport { plan, inserted: Vec::new(), replay: ReplayReport::default(), users_and_roles: 0 };
    if options.dry_run {
        return Ok(report);
    }
    create_collections(client, &report.plan).await?;

    let planned: Vec<Option<&PlannedNamespace>> =
        reader.prelude().iter().map(|e| report.plan.namespaces.iter().find(|p| p.source == e.namespace)).collect();
    // Without replay, oplog entries are still read (and CRC-checked) but match no planned namespace.
    let oplog_index = reader.prelude().iter().position(|e| e.namespace.is_oplog()).filter(|_| options.replay_oplog);
    let mut inserter = Inserter::new(client.clone(), options);
    let mut auth_docs: Vec<(Action, Document)> = Vec::new();
    let mut indexes_built = false;
    let target_of = |ns: &Namespace| -> Option<Namespace> {
        (options.filter.matches(ns) && is_backed_up(ns)).then(|| rename::rename(&options.renames, ns))
    };
    let archived = reader.prelude().iter().map(|e| e.namespace.clone()).filter(|ns| !ns.is_oplog()).collect::<Vec<_>>();
    let mut replayer = Replayer::new(client, &target_of, archived, options.oplog_skip_unknown);

    while let Some(item) = reader.next().await? {
        match item {
            ArchiveItem::Document { ns, document } if Some(ns) == oplog_index => {
                if !indexes_built {
                    inserter.finish(&mut report.inserted).await?;
                    build_indexes(client, &report.plan).await?;
                    indexes_built = true;
                }
                let entry = Document::from_reader(&document[..])
                    .map_err(|e| Error::Refused(format!("oplog entry is not valid BSON: {e}")))?;
                replayer.replay(&entry).await?;
            }
            ArchiveItem::Document { ns, document } => match planned[ns] {
                Some(p) if p.action == Action::Restore => inserter.push(p, document).await?,
                Some(p) if matches!(p.action, Action::Users | Action::Roles) => {
                    let doc = Document::from_reader(&document[..])
                        .map_err(|e| Error::Refused(format!("{} holds invalid BSON: {e}", p.source)))?;
                    auth_docs.push((p.action.clone(), doc));
                }
                _ => {}
            },
            ArchiveItem::CollectionEnd { ns, .. } => {
                if let Some(p) = planned[ns].filter(|p| p.action == Action::Restore) {
                    inserter.flush(&p.target).await?;
                }
            }
        }
    }
    if !indexes_built {
        inserter.finish(&mut report.inserted).await?;
        build_indexes(client, &report.plan).await?;
    }
    report.replay = replayer.finish();
    report.users_and_roles = merge_users_and_roles(client, auth_docs).await?;
    Ok(report)
}

async fn create_collections(client: &Client, plan: &RestorePlan) -> Result<()> {
    // Views after collections: a view's source must exist for its pipeline to make sense.
    let mut ordered: Vec<_> = plan.namespaces.iter().filter(|p| p.action == Action::Restore).collect();
    ordered.sort_by_key(|p| p.metadata.kind == CollectionKind::View);
    for p in ordered {
        let db = client.database(&p.target.db);
        if p.drop_first {
            db.collection::<Document>(&p.target.collection)
                .drop()
                .await
                .map_err(Error::mongo(format!("dropping {} (--drop)", p.target)))?;
        }
        let mut command = doc! {"create": &p.target.collection};
        for (k, v) in &p.metadata.options {
            command.insert(k, v.clone());
        }
        db.run_command(command).await.map_err(Error::mongo(format!("creating {}", p.target)))?;
    }
    Ok(())
}

async fn build_indexes(client: &Client, plan: &RestorePlan) -> Result<()> {
    for p in plan.namespaces.iter().filter(|p| p.action == Action::Restore && p.metadata.kind != CollectionKind::View) {
        let specs: Vec<Document> = p
            .metadata
            .indexes
            .iter()
            .filter(|spec| spec.get_str("name") != Ok("_id_"))
            .map(|spec| {
                let mut spec = spec.clone();
                spec.remove("ns");
                // Old mongodumps store v as a double or decimal; createIndexes wants an integer.
                if let Some(v) = spec.get("v").and_then(index_version) {
                    spec.insert("v", v);
                }
                spec
            })
            .collect();
        if specs.is_empty() {
            continue;
        }
        let collection = if p.metadata.kind == CollectionKind::Timeseries {
            format!("system.buckets.{}", p.target.collection)
        } else {
            p.target.collection.clone()
        };
        client
            .database(&p.target.db)
            .run_command(doc! {"createIndexes": collection, "indexes": specs})
            .await
            .map_err(Error::mongo(format!("building indexes of {}", p.target)))?;
    }
    Ok(())
}

fn index_version(v: &Bson) -> Option<i32> {
    match v {
        Bson::Int32(v) => Some(*v),
        Bson::Int64(v) => i32::try_from(*v).ok(),
        Bson::Double(v) => Some(*v as i32),
        Bson::Decimal128(d) => d.to_string().parse::<f64>().ok().map(|v| v as i32),
        _ => None,
    }
}

/// Writes users and roles into `admin.system.users` / `admin.system.roles` (what mongorestore does, needing the
/// `restore` role). Roles can fall back to `createRole`; users cannot be recreated without their password, so a
/// server that refuses the write fails the restore with the list of users it could not restore.
async fn merge_users_and_roles(client: &Client, docs: Vec<(Action, Document)>) -> Result<u64> {
    let admin = client.database("admin");
    let mut merged = 0;
    let mut refused = Vec::new();
    for (action, doc) in docs {
        let (collection, name) = match action {
            Action::Users => ("system.users", doc.get_str("_id").unwrap_or("?").to_string()),
            _ => ("system.roles", doc.get_str("_id").unwrap_or("?").to_string()),
        };
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let written =
            admin.collection::<Document>(collection).replace_one(doc! {"_id": id}, doc.clone()).upsert(true).await;
        match (written, &action) {
            (Ok(_), _) => merged += 1,
            (Err(_), Action::Roles) => {
                let db = doc.get_str("db").unwrap_or("admin").to_string();
                let mut command = doc! {"createRole": doc.get_str("role").unwrap_or_default()};
                command.insert("privileges", doc.get("privileges").cloned().unwrap_or(Bson::Array(vec![])));
                command.insert("roles", doc.get("roles").cloned().unwrap_or(Bson::Array(vec![])));
                match client.database(&db).run_command(command).await {
                    Ok(_) => merged += 1,
                    Err(e) => refused.push(format!("role {name} ({e})")),
                }
            }
            (Err(e), _) => refused.push(format!("user {name} ({e})")),
        }
    }
    if !refused.is_empty() {
        return Err(Error::Refused(format!(
            "data restored, but the target refused {}: grant the restoring user the restore role, or exclude them with --nsExclude 'admin.system.*'",
            refused.join(", ")
        )));
    }
    Ok(merged)
}

/// Batches documents per target collection and inserts them with bounded parallelism.
struct Inserter {
    client: Client,
    batch_size: usize,
    permits: Arc<Semaphore>,
    pending: HashMap<Namespace, (Vec<RawDocumentBuf>, usize, bool)>,
    in_flight: JoinSet<Result<(Namespace, u64)>>,
    counts: HashMap<Namespace, u64>,
}

impl Inserter {
    fn new(client: Client, options: &RestoreOptions) -> Self {
        Inserter {
            client,
            batch_size: options.batch_size,
            permits: Arc::new(Semaphore::new(options.parallel)),
            pending: HashMap::new(),
            in_flight: JoinSet::new(),
            counts: HashMap::new(),
        }
    }

    async fn push(&mut self, planned: &PlannedNamespace, document: Vec<u8>) -> Result<()> {
        let doc = RawDocumentBuf::from_bytes(document)
            .map_err(|e| Error::Refused(format!("{} holds invalid BSON: {e}", planned.source)))?;
        let capped = planned.metadata.options.get_bool("capped").unwrap_or(false);
        let entry = self.pending.entry(planned.target.clone()).or_insert_with(|| (Vec::new(), 0, capped));
        entry.1 += doc.as_bytes().len();
        entry.0.push(doc);
        if entry.0.len() >= self.batch_size || entry.1 >= BATCH_BYTES {
            self.flush(&planned.target).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, target: &Namespace) -> Result<()> {
        let Some((docs, _, capped)) = self.pending.remove(target) else { return Ok(()) };
        self.reap().await?;
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| Error::Cancelled)?;
        let (client, ns) = (self.client.clone(), target.clone());
        let insert = async move {
            let _permit = permit;
            let count = docs.len() as u64;
            // Capped collections keep insertion order, so their batches are ordered; others go unordered.
            client
                .database(&ns.db)
                .collection::<RawDocumentBuf>(&ns.collection)
                .insert_many(docs)
                .ordered(capped)
                .await
                .map_err(Error::mongo(format!("inserting into {ns}")))?;
            Ok((ns, count))
        };
        if capped {
            self.record(insert.await?);
        } else {
            self.in_flight.spawn(insert);
        }
        Ok(())
    }

    fn record(&mut self, (ns, n): (Namespace, u64)) {
        *self.counts.entry(ns).or_default() += n;
    }

    /// Collects finished inserts, surfacing the first error.
    async fn reap(&mut self) -> Result<()> {
        while let Some(done) = self.in_flight.try_join_next() {
            self.record(done.map_err(|e| Error::Refused(format!("insert task failed: {e}")))??);
        }
        Ok(())
    }

    async fn finish(&mut self, inserted: &mut Vec<(Namespace, u64)>) -> Result<()> {
        let targets: Vec<_> = self.pending.keys().cloned().collect();
        for target in targets {
            self.flush(&target).await?;
        }
        while let Some(done) = self.in_flight.join_next().await {
            self.record(done.map_err(|e| Error::Refused(format!("insert task failed: {e}")))??);
        }
        let mut counts: Vec<_> = self.counts.drain().collect();
        counts.sort();
        inserted.extend(counts);
        Ok(())
    }
}
