//! Restore: an archive (ours or stock mongodump's, any compression) back into a MongoDB server.
//!
//! Plan first ([`plan::plan`]: renames checked, targets checked), then: create collections with their options,
//! insert documents in parallel unordered batches, build indexes after the data, replay the oplog slice, merge users
//! and roles. With `--drop` all of that goes into staging collections that replace the targets only once the whole
//! archive has been read and checked ([`staging`] says how and why), so a damaged archive leaves every target as it
//! was. Users and roles are written only when [`RestoreOptions::users_and_roles`] asks for them, since merging them
//! rolls back changed passwords and brings deleted users back.

mod plan;
mod rename;
mod staging;
mod timeseries;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::Client;
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use plan::{Action, PlannedNamespace, RestorePlan};
pub use rename::{Rename, rename};
pub use staging::PREFIX as STAGING_PREFIX;

use crate::archive::{ArchiveItem, ArchiveReader, CollectionKind, Namespace, PreludeEntry};
use crate::compress;
use crate::error::{Error, Result};
use crate::mongo::{NamespaceFilter, is_backed_up};
use crate::oplog::chain::PathEntries;
use crate::oplog::{ReplayReport, Replayer};
use staging::Staging;

/// Bytes per insert batch at most, below the server's 48 MB message limit with room to spare.
const BATCH_BYTES: usize = 8 << 20;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Which archive namespaces to restore (matched on their names in the archive).
    pub filter: NamespaceFilter,
    /// `--nsFrom/--nsTo` rules.
    pub renames: Vec<Rename>,
    /// Replace existing target collections, through staging collections swapped in at the end.
    pub drop: bool,
    /// Only build and return the plan (reading the archive only to name the users and roles it would restore).
    pub dry_run: bool,
    /// Replay the archive's oplog slice after the data, which makes the restore consistent as of the manifest's
    /// `oplog.end`. Off for `verify --deep`, which compares the restored documents with the archive's own.
    pub replay_oplog: bool,
    /// Skip oplog commands replay does not know (listed in the report) instead of failing.
    pub oplog_skip_unknown: bool,
    /// Restore the archive's users and custom roles, whatever the filter says. The CLI sets it for
    /// `--with-users-and-roles` and for a full restore (no filter, no rename), as mongorestore does.
    pub users_and_roles: bool,
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
    /// Targets a `--drop` restore replaced with their restored copies.
    pub replaced: Vec<Namespace>,
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
    restore_to_point(input, client, options, None).await
}

/// Restores a base backup's archive, then replays `continuation` (the oplog chunks after its slice, up to the
/// moment restored to) with the same replayer, so transactions and index builds that cross from the slice into the
/// chunks complete. With `--drop` the chunks are replayed into the staging collections too: a damaged chunk fails
/// the restore before any target is touched.
pub async fn restore_to_point(
    input: impl AsyncRead + Send + Unpin + 'static,
    client: &Client,
    options: &RestoreOptions,
    continuation: Option<PathEntries<'_>>,
) -> Result<RestoreReport> {
    let (_, plain) =
        compress::decoder(input).await.map_err(|source| Error::Io { action: "reading the archive".into(), source })?;
    let mut reader = ArchiveReader::open(plain).await?;
    let staging = options.drop.then(Staging::start);
    let mut plan = plan::plan(client, reader.prelude(), options, staging.as_ref()).await?;
    plan.replay_oplog &= options.replay_oplog;
    let mut report = RestoreReport {
        plan,
        inserted: Vec::new(),
        replay: ReplayReport::default(),
        replaced: Vec::new(),
        users_and_roles: 0,
    };
    if options.dry_run {
        if report.plan.namespaces.iter().any(|p| matches!(p.action, Action::Users | Action::Roles)) {
            let planned = planned_indexes(&report.plan, reader.prelude());
            while let Some(item) = reader.next().await? {
                if let ArchiveItem::Document { ns, document } = item {
                    auth_doc(&mut report.plan, planned[ns], document)?;
                }
            }
        }
        return Ok(report);
    }
    let written = write(&mut reader, client, options, staging.as_ref(), &mut report, continuation).await;
    if let Some(staging) = &staging {
        match written {
            Ok(()) => report.replaced = staging.swap(client).await?,
            Err(e) => return Err(staging.failed(client, e).await),
        }
    } else {
        written?;
    }
    report.users_and_roles = merge_users_and_roles(client, &report.plan).await?;
    Ok(report)
}

/// Everything but the swap and the users: collections, documents, indexes, oplog. Writes where the plan says
/// (`write_to`), and sends the oplog's writes to the same places.
async fn write<R: AsyncRead + Send + Unpin>(
    reader: &mut ArchiveReader<R>,
    client: &Client,
    options: &RestoreOptions,
    staging: Option<&Staging>,
    report: &mut RestoreReport,
    continuation: Option<PathEntries<'_>>,
) -> Result<()> {
    create_collections(client, &report.plan).await?;
    let planned = planned_indexes(&report.plan, reader.prelude());
    // Without replay, oplog entries are still read (and CRC-checked) but match no planned namespace.
    let oplog_index = reader.prelude().iter().position(|e| e.namespace.is_oplog()).filter(|_| options.replay_oplog);
    let mut inserter = Inserter::new(client.clone(), options);
    let mut indexes_built = false;
    // Oplog entries name namespaces the prelude may not have (collections created during the dump): a rename that
    // makes an invalid name of one is kept here and fails the restore after the replay, before any swap.
    let bad_renames = Mutex::new(Vec::new());
    let target_of = |ns: &Namespace| -> Option<Namespace> {
        if !(options.filter.matches(ns) && is_backed_up(ns)) {
            return None;
        }
        match rename::rename(&options.renames, ns) {
            Ok(target) => Some(staging.map_or_else(|| target.clone(), |s| s.name(&target))),
            Err(why) => {
                bad_renames.lock().unwrap_or_else(|e| e.into_inner()).push(why);
                None
            }
        }
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
            ArchiveItem::Document { ns, document } => match planned[ns].map(|i| &report.plan.namespaces[i]) {
                Some(p) if p.action == Action::Restore => inserter.push(p, document).await?,
                _ => auth_doc(&mut report.plan, planned[ns], document)?,
            },
            ArchiveItem::CollectionEnd { ns, .. } => {
                if let Some(p) = planned[ns].map(|i| &report.plan.namespaces[i]).filter(|p| p.action == Action::Restore)
                {
                    inserter.flush(&p.target).await?;
                }
            }
        }
    }
    if !indexes_built {
        inserter.finish(&mut report.inserted).await?;
        build_indexes(client, &report.plan).await?;
    }
    if let Some(mut entries) = continuation {
        while let Some(entry) = entries.next().await? {
            replayer.replay(&entry).await?;
        }
    }
    report.replay = replayer.finish().await?;
    let bad_renames = bad_renames.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = bad_renames.first() {
        return Err(Error::Usage(format!("oplog replay: {first}")));
    }
    Ok(())
}

/// For each prelude entry, its index in the plan.
fn planned_indexes(plan: &RestorePlan, prelude: &[PreludeEntry]) -> Vec<Option<usize>> {
    prelude.iter().map(|e| plan.namespaces.iter().position(|p| p.source == e.namespace)).collect()
}

/// Keeps a user or role document of the archive in the plan, if the plan restores them.
fn auth_doc(plan: &mut RestorePlan, planned: Option<usize>, document: Vec<u8>) -> Result<()> {
    let Some(p) = planned.map(|i| &plan.namespaces[i]) else { return Ok(()) };
    let into = match p.action {
        Action::Users => &mut plan.users,
        Action::Roles => &mut plan.roles,
        _ => return Ok(()),
    };
    let doc = Document::from_reader(&document[..])
        .map_err(|e| Error::Refused(format!("{} holds invalid BSON: {e}", p.source)))?;
    into.push(doc);
    Ok(())
}

async fn create_collections(client: &Client, plan: &RestorePlan) -> Result<()> {
    // Views after collections: a view's source must exist for its pipeline to make sense.
    let mut ordered: Vec<_> = plan.namespaces.iter().filter(|p| p.action == Action::Restore).collect();
    ordered.sort_by_key(|p| p.metadata.kind == CollectionKind::View);
    for p in ordered {
        let mut command = doc! {"create": &p.write_to.collection};
        for (k, v) in &timeseries::create_options(&p.metadata.options) {
            command.insert(k, v.clone());
        }
        client
            .database(&p.write_to.db)
            .run_command(command)
            .await
            .map_err(Error::mongo(format!("creating {}", p.write_to)))?;
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
        // A time-series collection's indexes are archived in its own terms (as listIndexes shows them on it) and
        // built on it, as mongorestore does; the server maps them onto the buckets.
        client
            .database(&p.write_to.db)
            .run_command(doc! {"createIndexes": &p.write_to.collection, "indexes": specs})
            .await
            .map_err(Error::mongo(format!("building indexes of {}", p.write_to)))?;
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
async fn merge_users_and_roles(client: &Client, plan: &RestorePlan) -> Result<u64> {
    let admin = client.database("admin");
    let mut merged = 0;
    let mut refused = Vec::new();
    let docs = plan.users.iter().map(|d| (Action::Users, d)).chain(plan.roles.iter().map(|d| (Action::Roles, d)));
    for (action, doc) in docs {
        let collection = if action == Action::Users { "system.users" } else { "system.roles" };
        let name = doc.get_str("_id").unwrap_or("?");
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
            "data restored, but the target refused {}: grant the restoring user the restore role, or restore without \
             --with-users-and-roles",
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
    /// Per target: the batch so far, its bytes, whether capped, and the collection it is written to.
    pending: HashMap<Namespace, (Vec<RawDocumentBuf>, usize, bool, Namespace)>,
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
        let entry = self
            .pending
            .entry(planned.target.clone())
            .or_insert_with(|| (Vec::new(), 0, capped, timeseries::data_target(planned)));
        entry.1 += doc.as_bytes().len();
        entry.0.push(doc);
        if entry.0.len() >= self.batch_size || entry.1 >= BATCH_BYTES {
            self.flush(&planned.target).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, target: &Namespace) -> Result<()> {
        let Some((docs, _, capped, write_to)) = self.pending.remove(target) else { return Ok(()) };
        self.reap().await?;
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| Error::Cancelled)?;
        let (client, ns) = (self.client.clone(), target.clone());
        let insert = async move {
            let _permit = permit;
            let count = docs.len() as u64;
            // Capped collections keep insertion order, so their batches are ordered; others go unordered.
            client
                .database(&write_to.db)
                .collection::<RawDocumentBuf>(&write_to.collection)
                .insert_many(docs)
                .ordered(capped)
                .await
                .map_err(Error::mongo(format!("inserting into {write_to}")))?;
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
