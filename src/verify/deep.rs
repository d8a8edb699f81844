//! `verify --deep`: restore the backup into scratch databases, compare counts and a sample of documents with the
//! archive byte for byte, and drop the scratch databases again, whether the comparison passed, failed or errored.

use std::collections::{BTreeMap, BTreeSet};

use bson::{Bson, RawDocumentBuf, doc};
use mongodb::Client;
use serde::Serialize;

use super::{Check, Problem};
use crate::archive::{ArchiveItem, ArchiveReader, Namespace};
use crate::backup::{Manifest, open_archive};
use crate::compress;
use crate::config::Config;
use crate::crypt::{self, Identities};
use crate::error::{Error, Result};
use crate::mongo::NamespaceFilter;
use crate::restore::{self, Rename, RestoreOptions};
use crate::store::{ByteStream, ObjectStore};

/// MongoDB's limit on a database name, in bytes.
const MAX_DB_NAME: usize = 63;

/// How deep a deep verify goes.
#[derive(Debug, Clone, Copy)]
pub struct DeepOptions {
    /// Documents per collection compared byte for byte (`verify.sample_documents`).
    pub sample_documents: u32,
    /// Insert batches in flight while restoring (`restore.parallel_inserts`).
    pub parallel_inserts: usize,
    /// Documents per insert batch (`restore.batch_size`).
    pub batch_size: usize,
}

impl DeepOptions {
    /// The options `config` gives.
    pub fn from_config(config: &Config) -> Self {
        DeepOptions {
            sample_documents: config.verify.sample_documents,
            parallel_inserts: config.restore.parallel_inserts,
            batch_size: config.restore.batch_size,
        }
    }
}

/// What a deep verify did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeepReport {
    /// The scratch databases used (and dropped), source database → scratch name.
    pub scratch_databases: BTreeMap<String, String>,
    /// Collections whose restored count was compared.
    pub collections_compared: usize,
    /// Documents compared byte for byte.
    pub documents_sampled: u64,
    /// Every failed check; empty means the restored copy matched.
    pub problems: Vec<Problem>,
}

/// The scratch database for source database `db` in run `run` (a short random tag unique to one verify): readable,
/// recognisable as ours (`mbaverify_`), and within MongoDB's 63-byte limit however long `db` is. `index` tells
/// apart two long names that truncate alike.
pub fn scratch_name(run: &str, index: usize, db: &str) -> String {
    let mut name = format!("mbaverify_{run}_{index}_{db}");
    while name.len() > MAX_DB_NAME {
        name.pop();
    }
    name
}

/// Restores backup `manifest.id` into scratch databases on `client` and compares it with the archive. Only
/// collections, views and time-series collections are restored (users, roles and the oplog are not: they would
/// change the server's users and data). The scratch databases are dropped before returning, also on failure. An
/// encrypted backup needs `identities`; without the right one this fails before anything is written.
pub async fn deep(
    store: &dyn ObjectStore,
    prefix: &str,
    manifest: &Manifest,
    client: &Client,
    options: DeepOptions,
    identities: Option<&Identities>,
) -> Result<DeepReport> {
    crypt::unlock(identities, &format!("backup {}", manifest.id), manifest.encryption.as_ref())?;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let data: Vec<&str> = manifest
        .namespaces
        .iter()
        .filter(|r| matches!(r.kind.as_str(), "collection" | "view" | "timeseries"))
        .map(|r| r.namespace.as_str())
        .collect();
    let databases: BTreeSet<&str> = data.iter().filter_map(|ns| ns.split_once('.')).map(|(db, _)| db).collect();
    let scratch: BTreeMap<String, String> =
        databases.iter().enumerate().map(|(i, db)| (db.to_string(), scratch_name(&run, i, db))).collect();
    let mut report = DeepReport {
        scratch_databases: scratch.clone(),
        collections_compared: 0,
        documents_sampled: 0,
        problems: Vec::new(),
    };
    let source = Source { store, prefix, manifest, identities };
    let outcome = restore_and_compare(&source, client, options, &data, &mut report).await;
    let cleanup = drop_scratch(client, scratch.values()).await;
    outcome?;
    cleanup?;
    Ok(report)
}

/// Where the backup is read from, twice: once to restore it, once to sample it.
struct Source<'a> {
    store: &'a dyn ObjectStore,
    prefix: &'a str,
    manifest: &'a Manifest,
    identities: Option<&'a Identities>,
}

impl Source<'_> {
    async fn open(&self) -> Result<ByteStream> {
        open_archive(self.store, self.prefix, self.manifest, self.identities).await
    }
}

async fn restore_and_compare(
    source: &Source<'_>,
    client: &Client,
    options: DeepOptions,
    data: &[&str],
    report: &mut DeepReport,
) -> Result<()> {
    let renames = report
        .scratch_databases
        .iter()
        .map(|(db, to)| Rename::new(&format!("{db}.$c$"), &format!("{to}.$c$")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Refused)?;
    let include: Vec<String> = data.iter().map(|ns| ns.to_string()).collect();
    let restore_options = RestoreOptions {
        filter: NamespaceFilter::new(&include, &[]).map_err(Error::Refused)?,
        renames: renames.clone(),
        drop: false,
        dry_run: false,
        replay_oplog: false,
        oplog_skip_unknown: false,
        users_and_roles: false,
        parallel: options.parallel_inserts,
        batch_size: options.batch_size,
    };
    let manifest = source.manifest;
    if let Err(e) = restore::restore(source.open().await?, client, &restore_options).await {
        if let Error::Unreachable { .. } = e {
            return Err(e);
        }
        report.problems.push(Problem::archive(Check::Restore, format!("restore into scratch databases failed: {e}")));
        return Ok(());
    }
    // The restore above checked every rename of the data namespaces, so none fails here.
    let target = |ns: &Namespace| restore::rename(&renames, ns).unwrap_or_else(|_| ns.clone());
    for record in manifest.namespaces.iter().filter(|r| r.kind == "collection") {
        let Some(ns) = Namespace::parse(&record.namespace) else { continue };
        let to = target(&ns);
        let restored = client
            .database(&to.db)
            .collection::<RawDocumentBuf>(&to.collection)
            .count_documents(doc! {})
            .await
            .map_err(Error::mongo(format!("counting the documents of scratch copy {to}")))?;
        report.collections_compared += 1;
        if restored != record.documents {
            let detail = format!("restored copy {to} has {restored} documents, archive {}", record.documents);
            report.problems.push(Problem::namespace(&record.namespace, Check::Documents, detail));
        }
    }
    compare_sample(source, client, options.sample_documents, &target, report).await
}

/// Reads the archive again and looks up the first `sample` documents of each collection in the restored copy by
/// `_id`, comparing raw bytes; one problem per collection, naming the first differing `_id`.
async fn compare_sample(
    source: &Source<'_>,
    client: &Client,
    sample: u32,
    target: &dyn Fn(&Namespace) -> Namespace,
    report: &mut DeepReport,
) -> Result<()> {
    let collections: BTreeSet<&str> =
        source.manifest.namespaces.iter().filter(|r| r.kind == "collection").map(|r| r.namespace.as_str()).collect();
    let (_, plain) = compress::decoder(source.open().await?).await.map_err(|e| Error::Io {
        action: format!("reading backup {} again for sampling", source.manifest.id),
        source: e,
    })?;
    let mut reader = ArchiveReader::open(plain).await?;
    let names: Vec<Namespace> = reader.prelude().iter().map(|e| e.namespace.clone()).collect();
    let mut seen = vec![0u32; names.len()];
    let mut differing: BTreeMap<usize, (u64, String)> = BTreeMap::new();
    while let Some(item) = reader.next().await? {
        let ArchiveItem::Document { ns, document } = item else { continue };
        if seen[ns] >= sample || !collections.contains(names[ns].to_string().as_str()) {
            continue;
        }
        seen[ns] += 1;
        report.documents_sampled += 1;
        let to = target(&names[ns]);
        let original = RawDocumentBuf::from_bytes(document)
            .map_err(|e| Error::Refused(format!("{}: archive holds invalid BSON: {e}", names[ns])))?;
        let id = original
            .get("_id")
            .ok()
            .flatten()
            .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
            .unwrap_or(Bson::Null);
        let restored = client
            .database(&to.db)
            .collection::<RawDocumentBuf>(&to.collection)
            .find_one(doc! {"_id": id.clone()})
            .await
            .map_err(Error::mongo(format!("reading a sampled document of scratch copy {to}")))?;
        let verdict = match restored {
            Some(r) if r.as_bytes() == original.as_bytes() => continue,
            Some(_) => "differs",
            None => "is missing",
        };
        let entry = differing.entry(ns).or_insert_with(|| (0, format!("_id {id} {verdict}")));
        entry.0 += 1;
    }
    for (ns, (count, first)) in differing {
        let detail =
            format!("{count} of {} sampled documents differ from the archive after restore (first: {first})", seen[ns]);
        report.problems.push(Problem::namespace(names[ns].to_string(), Check::Sample, detail));
    }
    Ok(())
}

/// Drops every scratch database, trying all of them; a failure is logged with the way to drop it by hand and the
/// first one returned.
async fn drop_scratch<'a>(client: &Client, names: impl Iterator<Item = &'a String>) -> Result<()> {
    let mut first_error = None;
    for name in names {
        if let Err(e) = client.database(name).drop().await {
            log::error!(
                "verify --deep: could not drop scratch database {name}: {e}; drop it by hand: \
                 db.getSiblingDB(\"{name}\").dropDatabase()"
            );
            first_error.get_or_insert(Error::mongo(format!("dropping scratch database {name}"))(e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_fit_mongodb_and_stay_apart() {
        assert_eq!(scratch_name("a1b2c3", 0, "shop"), "mbaverify_a1b2c3_0_shop");
        let long = "d".repeat(64);
        let (a, b) = (scratch_name("a1b2c3", 0, &long), scratch_name("a1b2c3", 1, &long));
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        // Multi-byte characters are never cut in half.
        assert!(scratch_name("a1b2c3", 0, &"é".repeat(40)).len() <= 63);
    }
}
