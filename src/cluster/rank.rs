//! Which member should back up: a pure function of what the member's own server says about itself (`hello`,
//! `replSetGetStatus`) and the operator's `priority`.
//!
//! Backups belong on a secondary, hidden ones first (they serve no reads), and the primary only when nothing else
//! is left; among equals, the member closer to the primary holds fresher data. Members that cannot serve a
//! consistent read (arbiters, members in `RECOVERING`, `STARTUP2`, `ROLLBACK`, or an unreachable server) do not
//! contend at all.

use std::cmp::Ordering;

use bson::Document;
use serde::{Deserialize, Serialize};

/// What a member is in its replica set, as far as backing up goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A hidden secondary: no client reads from it, so a backup loads no one.
    Hidden,
    /// A secondary.
    Secondary,
    /// The primary (or a standalone server, which is its own primary).
    Primary,
    /// Anything that must not back up, with the state it reported.
    Unfit(String),
}

impl Role {
    /// The default rank: hidden 2.0, secondary 1.0, primary 0.5 (Percona Backup for MongoDB's weights).
    fn default_score(&self) -> Option<f64> {
        match self {
            Role::Hidden => Some(2.0),
            Role::Secondary => Some(1.0),
            Role::Primary => Some(0.5),
            Role::Unfit(_) => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Hidden => f.write_str("hidden secondary"),
            Role::Secondary => f.write_str("secondary"),
            Role::Primary => f.write_str("primary"),
            Role::Unfit(why) => f.write_str(why),
        }
    }
}

/// A member's standing: its role, how far it trails the primary, and the score it contends with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// What its server says it is.
    pub role: Role,
    /// Seconds behind the primary's last write; `None` when unknown (no primary visible).
    pub lag_secs: Option<f64>,
    /// Higher wins; `None`: does not contend.
    pub score: Option<f64>,
}

impl Standing {
    /// The standing of a member whose server did not answer.
    pub fn unreachable(why: &str) -> Standing {
        Standing { role: Role::Unfit(format!("server unreachable: {why}")), lag_secs: None, score: None }
    }

    /// Whether it may contend at all.
    pub fn eligible(&self) -> bool {
        self.score.is_some()
    }

    /// `Less` when `self` should win over `other`: higher score, then lower lag (unknown lag last).
    pub fn compare(&self, other: &Standing) -> Ordering {
        let score = |s: &Standing| s.score.unwrap_or(f64::NEG_INFINITY);
        let lag = |s: &Standing| s.lag_secs.unwrap_or(f64::INFINITY);
        score(other).total_cmp(&score(self)).then(lag(self).total_cmp(&lag(other)))
    }
}

/// The standing of the member that answered `hello` (and `replSetGetStatus`, which a server may refuse; then the
/// lag is unknown for secondaries). `priority` overrides the role's score but never makes an unfit member fit.
pub fn standing(hello: &Document, status: Option<&Document>, priority: Option<f64>) -> Standing {
    let role = role(hello, status);
    let lag_secs = match role {
        Role::Primary => Some(0.0),
        _ => status.and_then(lag_behind_primary),
    };
    let score = role.default_score().map(|default| priority.unwrap_or(default));
    Standing { role, lag_secs, score }
}

fn flag(doc: &Document, key: &str) -> bool {
    doc.get_bool(key).unwrap_or(false)
}

fn role(hello: &Document, status: Option<&Document>) -> Role {
    if flag(hello, "arbiterOnly") {
        return Role::Unfit("arbiter (holds no data)".into());
    }
    // `ismaster` is what servers before 4.4.2 (and the legacy command) call it.
    if flag(hello, "isWritablePrimary") || flag(hello, "ismaster") {
        return Role::Primary;
    }
    if flag(hello, "secondary") {
        return if flag(hello, "hidden") { Role::Hidden } else { Role::Secondary };
    }
    let state = status.and_then(|s| self_member(s)).and_then(|m| m.get_str("stateStr").ok()).unwrap_or("unknown");
    Role::Unfit(format!("member state {state}"))
}

/// The `members` entry describing the member that answered.
fn self_member(status: &Document) -> Option<&Document> {
    status.get_array("members").ok()?.iter().filter_map(|m| m.as_document()).find(|m| flag(m, "self"))
}

/// Seconds between the primary's `optimeDate` and this member's, from `replSetGetStatus`.
fn lag_behind_primary(status: &Document) -> Option<f64> {
    let members: Vec<&Document> = status.get_array("members").ok()?.iter().filter_map(|m| m.as_document()).collect();
    let optime = |m: &Document| m.get_datetime("optimeDate").ok().map(|d| d.timestamp_millis());
    let primary = members.iter().find(|m| m.get_i32("state").ok() == Some(1)).and_then(|m| optime(m))?;
    let own = members.iter().find(|m| flag(m, "self")).and_then(|m| optime(m))?;
    Some(((primary - own).max(0)) as f64 / 1000.0)
}

/// How many of `others` (live members' standings) rank strictly better than `own`: the number of contention
/// delays this member waits before it tries for a lease.
pub fn position(own: &Standing, others: &[Standing]) -> usize {
    others.iter().filter(|o| o.eligible() && o.compare(own) == Ordering::Less).count()
}

#[cfg(test)]
mod tests {
    use bson::{DateTime, doc};

    use super::*;

    /// `hello` from each member of a three-member set, shaped as MongoDB's documentation shows it.
    fn hello(primary: bool, hidden: bool) -> Document {
        let mut reply = doc! {
            "topologyVersion": {"processId": bson::oid::ObjectId::new(), "counter": 6_i64},
            "hosts": ["mongo-1:27017", "mongo-2:27017"],
            "setName": "rs0",
            "setVersion": 1,
            "isWritablePrimary": primary,
            "secondary": !primary,
            "primary": "mongo-1:27017",
            "me": if primary { "mongo-1:27017" } else if hidden { "mongo-3:27017" } else { "mongo-2:27017" },
            "maxBsonObjectSize": 16_777_216,
            "ok": 1.0,
        };
        if hidden {
            reply.insert("hidden", true);
            reply.insert("passive", true);
        }
        reply
    }

    /// `replSetGetStatus` as seen from member `me` (1-based), with each member's `optimeDate` in ms.
    fn status(me: usize, optimes_ms: [i64; 3]) -> Document {
        let states = [(1, "PRIMARY"), (2, "SECONDARY"), (2, "SECONDARY")];
        let members: Vec<bson::Bson> = (0..3)
            .map(|i| {
                bson::Bson::Document(doc! {
                    "_id": i as i32,
                    "name": format!("mongo-{}:27017", i + 1),
                    "health": 1.0,
                    "state": states[i].0,
                    "stateStr": states[i].1,
                    "optime": {"ts": bson::Timestamp { time: (optimes_ms[i] / 1000) as u32, increment: 1 }, "t": 1_i64},
                    "optimeDate": DateTime::from_millis(optimes_ms[i]),
                    "self": i + 1 == me,
                })
            })
            .collect();
        doc! {"set": "rs0", "myState": states[me - 1].0, "members": members, "ok": 1.0}
    }

    const T: i64 = 1_764_000_000_000;

    #[test]
    fn hidden_beats_secondary_beats_primary() {
        let optimes = [T, T - 1500, T - 4000];
        let primary = standing(&hello(true, false), Some(&status(1, optimes)), None);
        let secondary = standing(&hello(false, false), Some(&status(2, optimes)), None);
        let hidden = standing(&hello(false, true), Some(&status(3, optimes)), None);
        assert_eq!((primary.role.clone(), primary.lag_secs, primary.score), (Role::Primary, Some(0.0), Some(0.5)));
        assert_eq!(
            (secondary.role.clone(), secondary.lag_secs, secondary.score),
            (Role::Secondary, Some(1.5), Some(1.0))
        );
        assert_eq!((hidden.role.clone(), hidden.lag_secs, hidden.score), (Role::Hidden, Some(4.0), Some(2.0)));
        let all = [primary.clone(), secondary.clone(), hidden.clone()];
        assert_eq!([position(&hidden, &all), position(&secondary, &all), position(&primary, &all)], [0, 1, 2]);
    }

    #[test]
    fn among_secondaries_the_one_closer_to_the_primary_wins() {
        let optimes = [T, T - 9000, T - 2000];
        let far = standing(&hello(false, false), Some(&status(2, optimes)), None);
        let near = standing(&hello(false, false), Some(&status(3, optimes)), None);
        assert_eq!((far.lag_secs, near.lag_secs), (Some(9.0), Some(2.0)));
        assert_eq!(near.compare(&far), Ordering::Less);
        let both = [far.clone(), near.clone()];
        assert_eq!((position(&near, &both), position(&far, &both)), (0, 1));
        // A secondary whose lag is unknown (no primary visible, or replSetGetStatus refused) comes last.
        let unknown = standing(&hello(false, false), None, None);
        assert_eq!(unknown.lag_secs, None);
        assert_eq!(position(&unknown, &[far, near, unknown.clone()]), 2);
    }

    #[test]
    fn priority_overrides_the_role_but_not_fitness() {
        let optimes = [T, T, T];
        let primary = standing(&hello(true, false), Some(&status(1, optimes)), Some(3.0));
        let hidden = standing(&hello(false, true), Some(&status(3, optimes)), None);
        assert_eq!(position(&primary, &[primary.clone(), hidden.clone()]), 0);
        assert_eq!(position(&hidden, &[primary, hidden.clone()]), 1);

        let arbiter =
            standing(&doc! {"arbiterOnly": true, "secondary": false, "isWritablePrimary": false}, None, Some(9.0));
        assert!(!arbiter.eligible(), "{arbiter:?}");
        let mut recovering_status = status(2, optimes);
        let members = recovering_status.get_array_mut("members").unwrap();
        members[1].as_document_mut().unwrap().insert("stateStr", "RECOVERING");
        let recovering = standing(
            &doc! {"isWritablePrimary": false, "secondary": false, "setName": "rs0"},
            Some(&recovering_status),
            Some(9.0),
        );
        assert_eq!(recovering.role, Role::Unfit("member state RECOVERING".into()));
        assert!(!recovering.eligible());
        // Unfit members never outrank a fit one, and do not count ahead of anyone.
        assert_eq!(position(&hidden, &[arbiter.clone(), recovering.clone()]), 0);
        assert!(!Standing::unreachable("connection refused").eligible());
    }

    #[test]
    fn a_legacy_ismaster_reply_is_a_primary() {
        let reply = doc! {"ismaster": true, "secondary": false, "setName": "rs0"};
        assert_eq!(standing(&reply, None, None).role, Role::Primary);
    }
}
