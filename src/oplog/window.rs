//! The oplog window of a backup: where its slice starts and ends, read from what the server reports about its
//! oplog position (`hello.lastWrite`, or `replSetGetStatus.optimes`), which costs the same on an oplog of any size.
//!
//! * Start: the majority-committed last write, taken *before* the collections are listed, so a collection created
//!   after it is either listed or created by the slice. An older open transaction moves the start back to that
//!   transaction's first entry, whose operations the slice must hold.
//! * End: the last write once the dump is over, and only after the majority commit point has reached it, so the
//!   slice holds nothing a failover could roll back.
//! * Rollover: once the slice is read, the oplog must still reach back to the start; otherwise entries are missing
//!   and the backup fails (see [`super::slice`]).

use std::time::{Duration, Instant};

use bson::{Bson, Document, Timestamp, doc};
use mongodb::Client;

use crate::error::{Error, Result};
use crate::mongo::bounded;

/// How long the end waits for the majority commit point to reach the last write.
const MAJORITY_WAIT: Duration = Duration::from_secs(60);

/// Where a slice starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStart {
    /// The majority-committed last write before the dump, or the first entry of the oldest open transaction.
    pub ts: Timestamp,
    /// Whether the entry at `ts` belongs to the slice: true for a transaction's first entry; false for the last
    /// write, whose effect the dump already reads.
    pub inclusive: bool,
}

/// The server's oplog position: the last write applied here and the last one a majority holds.
struct Position {
    applied: Timestamp,
    majority: Timestamp,
}

/// Opens the window: call before listing the collections.
pub async fn open(client: &Client) -> Result<WindowStart> {
    let majority = position(client).await?.majority;
    Ok(match oldest_open_transaction(client).await? {
        Some(txn) if txn <= majority => WindowStart { ts: txn, inclusive: true },
        _ => WindowStart { ts: majority, inclusive: false },
    })
}

/// Closes the window once the dump is over: the last write, once the majority commit point has reached it.
pub async fn close(client: &Client) -> Result<Timestamp> {
    let end = position(client).await?.applied;
    let deadline = Instant::now() + MAJORITY_WAIT;
    loop {
        let now = position(client).await?;
        if now.majority >= end {
            return Ok(end);
        }
        if Instant::now() > deadline {
            return Err(Error::Refused(format!(
                "the majority commit point stayed at {} for {}s after the dump, behind its last write {}: are the \
                 other replica-set members down? A backup only holds majority-committed writes",
                format_ts(now.majority),
                MAJORITY_WAIT.as_secs(),
                format_ts(end)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest majority-committed write: what continuous archiving may store (nothing a failover could roll back).
pub async fn majority(client: &Client) -> Result<Timestamp> {
    Ok(position(client).await?.majority)
}

/// `t:i`, as operators see timestamps in mongosh.
pub fn format_ts(ts: Timestamp) -> String {
    format!("{}:{}", ts.time, ts.increment)
}

async fn position(client: &Client) -> Result<Position> {
    let admin = client.database("admin");
    let hello: Document = bounded("running hello", admin.run_command(doc! {"hello": 1})).await?;
    let last_write = hello.get_document("lastWrite").ok();
    let ts_at = |d: Option<&Document>, key: &str| d.and_then(|d| optime_ts(d.get(key)?));
    if let (Some(applied), Some(majority)) = (ts_at(last_write, "opTime"), ts_at(last_write, "majorityOpTime")) {
        return Ok(Position { applied, majority });
    }
    let status: Document = bounded(
        "running replSetGetStatus (hello reports no lastWrite)",
        admin.run_command(doc! {"replSetGetStatus": 1}),
    )
    .await?;
    let optimes = status.get_document("optimes").ok();
    match (ts_at(optimes, "appliedOpTime"), ts_at(optimes, "lastCommittedOpTime")) {
        (Some(applied), Some(majority)) => Ok(Position { applied, majority }),
        _ => Err(Error::Refused(
            "the server reports no oplog position (hello.lastWrite, replSetGetStatus.optimes); set backup.oplog = \
             \"off\" to back up without point-in-time consistency"
                .into(),
        )),
    }
}

/// An optime is `{ts, t}` on replica sets (a bare timestamp on some old servers).
fn optime_ts(optime: &Bson) -> Option<Timestamp> {
    match optime {
        Bson::Document(d) => d.get_timestamp("ts").ok(),
        Bson::Timestamp(ts) => Some(*ts),
        _ => None,
    }
}

/// First entry of the oldest transaction still open (prepared or in progress). An error here fails the backup: a
/// slice that starts after an open transaction's first entry cannot replay that transaction.
async fn oldest_open_transaction(client: &Client) -> Result<Option<Timestamp>> {
    let transactions = client.database("config").collection::<Document>("transactions");
    let find = transactions
        .find_one(doc! {"state": {"$in": ["prepared", "inProgress"]}, "startOpTime.ts": {"$exists": true}})
        .sort(doc! {"startOpTime.ts": 1});
    let what = "reading open transactions from config.transactions (does the backup user have read on config?)";
    let found = bounded(what, find).await?;
    Ok(found.and_then(|d| d.get_document("startOpTime").ok()?.get_timestamp("ts").ok()))
}
