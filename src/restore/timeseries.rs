//! Time-series collections, restored as mongorestore restores them: the collection created with its options and
//! indexes (both in the collection's own terms), its buckets inserted as they are into `system.buckets.<name>`, and
//! a target server that cannot take buckets found out before anything is written.

use bson::{Document, doc};
use mongodb::Client;

use super::plan::{Action, PlannedNamespace};
use crate::archive::{CollectionKind, Namespace, TIMESERIES_BUCKETS_PREFIX};
use crate::error::{Error, Result};

/// Where a planned namespace's documents are inserted: a time-series collection's archived documents are its
/// buckets.
pub(super) fn data_target(planned: &PlannedNamespace) -> Namespace {
    if planned.metadata.kind == CollectionKind::Timeseries {
        buckets(&planned.write_to)
    } else {
        planned.write_to.clone()
    }
}

fn buckets(ns: &Namespace) -> Namespace {
    Namespace::new(&ns.db, format!("{TIMESERIES_BUCKETS_PREFIX}{}", ns.collection))
}

/// The `create` options for a collection from its archived ones. Servers from 6.3 list a time-series collection's
/// `bucketMaxSpanSeconds` next to its `granularity`, which implies it; a server that then wants
/// `bucketRoundingSeconds` with it (SecantusDB) refuses the listed options as they are, so the implied value is
/// left for the server to derive again. Anything else passes unchanged.
pub(super) fn create_options(options: &Document) -> Document {
    let mut options = options.clone();
    if let Ok(ts) = options.get_document_mut("timeseries")
        && ts.contains_key("granularity")
        && !ts.contains_key("bucketRoundingSeconds")
    {
        ts.remove("bucketMaxSpanSeconds");
    }
    options
}

/// Checks, before the restore writes anything, that the target takes the buckets of the time-series collections
/// the plan restores (`planned` is the whole plan): in each target database a scratch time-series collection is created, one bucket inserted
/// into it and the collection dropped again. A server without time-series collections (before 5.0), or one that
/// keeps measurements but refuses buckets, fails the restore here naming the collection.
pub(super) async fn check_target(client: &Client, planned: &[PlannedNamespace]) -> Result<()> {
    let mut checked: Vec<&str> = Vec::new();
    for p in planned.iter().filter(|p| p.action == Action::Restore && p.metadata.kind == CollectionKind::Timeseries) {
        if checked.contains(&p.target.db.as_str()) {
            continue;
        }
        checked.push(&p.target.db);
        if let Err(why) = probe(client, &p.target.db).await {
            return Err(Error::Refused(format!(
                "cannot restore time-series collection {} (from {}): the target server does not take a time-series \
                 collection's buckets ({why}); nothing was written: restore it into MongoDB 5.0 or newer, or leave it \
                 out with --nsExclude '{}'",
                p.target, p.source, p.source
            )));
        }
    }
    Ok(())
}

/// Creates `__mba_tsprobe_<random>` in `db`, inserts one minimal bucket into it and drops it, whatever happened.
async fn probe(client: &Client, db: &str) -> std::result::Result<(), String> {
    let name = format!("__mba_tsprobe_{:08x}", rand::random::<u32>());
    let database = client.database(db);
    let created = database.run_command(doc! {"create": &name, "timeseries": {"timeField": "t"}}).await;
    let inserted = match created {
        Ok(_) => database
            .collection::<Document>(&buckets(&Namespace::new(db, &name)).collection)
            .insert_one(probe_bucket())
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    // Dropping the collection drops its buckets; a probe that could not be created has nothing to drop.
    let dropped = database.collection::<Document>(&name).drop().await;
    match (inserted, dropped) {
        (Err(e), _) => Err(reason(&e)),
        (Ok(()), Err(e)) => Err(format!("could not drop the probe collection {db}.{name}: {e}")),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// The server's own words for a refused write or command.
fn reason(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("error {}: {}", w.code, w.message),
        _ => crate::mongo::describe(e),
    }
}

/// The smallest bucket MongoDB 5.0+ accepts: one measurement, uncompressed (control version 1).
fn probe_bucket() -> Document {
    let t = bson::DateTime::from_millis(0);
    let id = bson::oid::ObjectId::from_bytes([0; 12]);
    doc! {
        "_id": id,
        "control": {"version": 1, "min": {"_id": id, "t": t}, "max": {"_id": id, "t": t}},
        "data": {"_id": {"0": id}, "t": {"0": t}},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_implies_the_bucket_span() {
        let listed = doc! {"timeseries": {"timeField": "t", "granularity": "seconds", "bucketMaxSpanSeconds": 3600}};
        assert_eq!(create_options(&listed), doc! {"timeseries": {"timeField": "t", "granularity": "seconds"}});
        // Custom buckets (both values, no granularity) and other collections' options pass unchanged.
        let custom = doc! {"timeseries": {"timeField": "t", "bucketMaxSpanSeconds": 60, "bucketRoundingSeconds": 60}};
        assert_eq!(create_options(&custom), custom);
        let capped = doc! {"capped": true, "size": 4096};
        assert_eq!(create_options(&capped), capped);
    }
}
