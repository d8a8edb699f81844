//! The oplog slice that makes a backup of a live replica set consistent as of one point in time.

use bson::{Document, RawDocumentBuf, Timestamp, doc};
use mongodb::{Client, Collection, Cursor};

use crate::error::{Error, Result};

fn oplog(client: &Client) -> Collection<Document> {
    client.database("local").collection("oplog.rs")
}

/// The `ts` of the newest oplog entry. Asks in natural order first (cheap on mongod, which keeps the oplog in
/// insertion order), then for anything newer by `ts` (servers whose natural order differs, like SecantusDB).
pub async fn newest_timestamp(client: &Client) -> Result<Timestamp> {
    let action = || Error::mongo("reading the newest oplog entry (does the backup user have read on local?)");
    let mut newest = oplog(client)
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .projection(doc! {"ts": 1})
        .await
        .map_err(action())?
        .and_then(|d| d.get_timestamp("ts").ok());
    if let Some(candidate) = newest {
        let later = oplog(client)
            .find_one(doc! {"ts": {"$gt": candidate}})
            .sort(doc! {"ts": -1})
            .projection(doc! {"ts": 1})
            .await
            .map_err(action())?;
        if let Some(ts) = later.and_then(|d| d.get_timestamp("ts").ok()) {
            newest = Some(ts);
        }
    }
    newest.ok_or_else(|| Error::Refused("the oplog is empty; cannot take a point-in-time backup".into()))
}

/// Start of the oldest transaction still open, whose earlier writes the oplog slice must include.
pub async fn oldest_open_transaction(client: &Client) -> Option<Timestamp> {
    let transactions = client.database("config").collection::<Document>("transactions");
    let found = transactions
        .find_one(doc! {"state": {"$in": ["prepared", "inProgress"]}, "startOpTime.ts": {"$exists": true}})
        .sort(doc! {"startOpTime.ts": 1})
        .await;
    match found {
        Ok(doc) => doc.and_then(|d| d.get_document("startOpTime").ok()?.get_timestamp("ts").ok()),
        Err(e) => {
            log::warn!("cannot read config.transactions ({e}); assuming no transaction is open");
            None
        }
    }
}

/// A cursor over oplog entries with `from < ts <= to` (or `from <= ts` when `inclusive`: the start of an open
/// transaction belongs to the slice, whereas the newest entry before the dump is already in the data).
pub async fn entries_between(
    client: &Client,
    from: Timestamp,
    inclusive: bool,
    to: Timestamp,
) -> Result<Cursor<RawDocumentBuf>> {
    let lower = if inclusive { "$gte" } else { "$gt" };
    client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs")
        .find(doc! {"ts": {lower: from, "$lte": to}})
        .sort(doc! {"ts": 1})
        .await
        .map_err(Error::mongo("reading the oplog slice"))
}
