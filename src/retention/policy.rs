//! The grandfather-father-son rules of `[retention]`, as `restic forget` applies them: which complete backups to
//! keep, and which rule keeps each one. Pure: no store, no clock.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::backup::BackupId;
use crate::config::RetentionConfig;

/// A rule that can keep a backup; its name is what `list` and `prune` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// One of the `keep_last` newest backups.
    Last,
    /// The newest backup of one of the `keep_hourly` newest hours that have backups.
    Hourly,
    /// The newest backup of one of the `keep_daily` newest days that have backups.
    Daily,
    /// The newest backup of one of the `keep_weekly` newest ISO weeks that have backups.
    Weekly,
    /// The newest backup of one of the `keep_monthly` newest months that have backups.
    Monthly,
    /// Younger than `keep_within`, counted back from the newest backup.
    Within,
    /// The newest complete backup, kept even when every rule is zero: prune never leaves a store without a backup.
    Newest,
    /// The backup just made, whose prune this is: never deleted by its own prune, whatever the clocks say (a
    /// backup dated in the future by a wrong clock would otherwise outrank it).
    Current,
}

impl Rule {
    /// The rule's name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Within => "within",
            Rule::Newest => "newest",
            Rule::Current => "current",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one complete backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The backup.
    pub id: BackupId,
    /// When it started, as its manifest records: what the rules bucket and order by.
    pub time: DateTime<Utc>,
    /// The rules that keep it, in [`Rule`] order; empty means the policy lets it go.
    pub reasons: BTreeSet<Rule>,
}

impl Decision {
    /// Whether any rule keeps the backup.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }

    /// The retention class `list` shows: the rules joined with commas ("hourly,daily"), or "prune".
    pub fn class(&self) -> String {
        if self.keep() {
            self.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
        } else {
            "prune".to_string()
        }
    }
}

/// Which time bucket a backup falls into for one rule; backups in the same bucket compete for one slot.
type Bucket = fn(DateTime<Utc>) -> (i32, u32, u32, u32);

/// The bucketed rules, in the order restic applies them. Buckets are UTC hours, days, ISO weeks and months.
const BUCKETS: [(Rule, Bucket); 4] = [
    (Rule::Hourly, |t| (t.year(), t.ordinal(), t.hour(), 0)),
    (Rule::Daily, |t| (t.year(), t.ordinal(), 0, 0)),
    (Rule::Weekly, |t| (t.iso_week().year(), t.iso_week().week(), 0, 0)),
    (Rule::Monthly, |t| (t.year(), t.month(), 0, 0)),
];

/// Applies `policy` to the complete backups `backups` (any order), each with the start time its manifest records.
/// Returns one decision per backup, oldest first by that time (then id). Walking from the newest backup back, a
/// bucketed rule keeps a backup when it is the first (newest) one seen in its bucket and the rule still has slots;
/// the newest backup is always kept, and so is `current` (the backup just made) when given.
pub fn apply(
    policy: &RetentionConfig,
    backups: &[(BackupId, DateTime<Utc>)],
    current: Option<&BackupId>,
) -> Vec<Decision> {
    let mut newest_first: Vec<(&BackupId, DateTime<Utc>)> = backups.iter().map(|(id, t)| (id, *t)).collect();
    newest_first.sort_by(|a, b| (b.1, b.0).cmp(&(a.1, a.0)));
    let newest_time = newest_first.first().map(|(_, time)| *time);
    let mut left = [policy.keep_hourly, policy.keep_daily, policy.keep_weekly, policy.keep_monthly];
    let mut last_bucket: [Option<(i32, u32, u32, u32)>; 4] = [None; 4];
    let mut decisions: Vec<Decision> = newest_first
        .iter()
        .enumerate()
        .map(|(index, (id, time))| {
            let time = *time;
            let mut reasons = BTreeSet::new();
            if index == 0 {
                reasons.insert(Rule::Newest);
            }
            if current == Some(*id) {
                reasons.insert(Rule::Current);
            }
            if (index as u64) < u64::from(policy.keep_last) {
                reasons.insert(Rule::Last);
            }
            for (slot, (rule, bucket_of)) in BUCKETS.iter().enumerate() {
                let bucket = bucket_of(time);
                if left[slot] > 0 && last_bucket[slot] != Some(bucket) {
                    left[slot] -= 1;
                    last_bucket[slot] = Some(bucket);
                    reasons.insert(*rule);
                }
            }
            if let (Some(within), Some(newest)) = (policy.keep_within, newest_time)
                && chrono::Duration::from_std(within).is_ok_and(|within| time > newest - within)
            {
                reasons.insert(Rule::Within);
            }
            Decision { id: (*id).clone(), time, reasons }
        })
        .collect();
    // "newest" only explains a backup no configured rule keeps; otherwise the real rules say it.
    if let Some(first) = decisions.first_mut()
        && first.reasons.len() > 1
    {
        first.reasons.remove(&Rule::Newest);
    }
    decisions.reverse();
    decisions
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    /// Backups timed by their ids, as manifests written by a correct clock record them.
    fn timed(ids: &[BackupId]) -> Vec<(BackupId, DateTime<Utc>)> {
        ids.iter().map(|id| (id.clone(), id.time())).collect()
    }

    fn id(t: DateTime<Utc>, suffix: u32) -> BackupId {
        BackupId::parse(&format!("{}-{suffix:06x}", t.format("%Y%m%dT%H%M%SZ"))).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// One backup per hour (at minute `minute`) from `from` for `hours` hours.
    fn hourly(from: &str, hours: i64, minute: i64) -> Vec<BackupId> {
        let start = at(from) + chrono::Duration::minutes(minute);
        (0..hours).map(|h| id(start + chrono::Duration::hours(h), 0)).collect()
    }

    fn policy(last: u32, hourly: u32, daily: u32, weekly: u32, monthly: u32) -> RetentionConfig {
        RetentionConfig {
            keep_last: last,
            keep_hourly: hourly,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            ..RetentionConfig::default()
        }
    }

    /// The kept backups as "timestamp: reasons", newest first, for readable assertions.
    fn kept(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .rev()
            .filter(|d| d.keep())
            .map(|d| format!("{}: {}", d.time.format("%Y-%m-%d %H:%M"), d.class()))
            .collect()
    }

    #[test]
    fn a_year_of_hourly_backups_with_the_defaults() {
        // 2025-01-01 00:00 .. 2025-12-31 23:00, 8760 backups; the newest is a Wednesday in ISO week 2026-W01.
        let ids = hourly("2025-01-01T00:00:00Z", 365 * 24, 0);
        let decisions = apply(&RetentionConfig::default(), &timed(&ids), None);
        assert_eq!(decisions.len(), 8760);
        let kept = kept(&decisions);
        // 24 hourly (Dec 31), + 6 daily (Dec 25..30 23:00), + 2 weekly (Dec 21 and Dec 14; Dec 28 is already a
        // daily one), + 11 monthly (Jan..Nov 23:00 of the last day) = 43.
        assert_eq!(kept.len(), 43, "{kept:#?}");
        assert_eq!(kept[0], "2025-12-31 23:00: last,hourly,daily,weekly,monthly");
        assert_eq!(kept[1], "2025-12-31 22:00: hourly");
        assert_eq!(kept[23], "2025-12-31 00:00: hourly");
        assert_eq!(kept[24], "2025-12-30 23:00: daily");
        assert_eq!(kept[26], "2025-12-28 23:00: daily,weekly");
        assert_eq!(kept[29], "2025-12-25 23:00: daily");
        assert_eq!(kept[30], "2025-12-21 23:00: weekly");
        assert_eq!(kept[31], "2025-12-14 23:00: weekly");
        assert_eq!(kept[32], "2025-11-30 23:00: monthly");
        assert_eq!(kept[42], "2025-01-31 23:00: monthly");
        let forgotten = decisions.iter().filter(|d| !d.keep()).count();
        assert_eq!(forgotten, 8760 - 43);
        assert!(decisions.windows(2).all(|w| w[0].id < w[1].id), "decisions come back oldest first");
    }

    struct Case {
        name: &'static str,
        ids: Vec<BackupId>,
        policy: RetentionConfig,
        kept: Vec<&'static str>,
    }

    #[test]
    fn timelines() {
        let cases = [
            Case {
                name: "several backups per hour: only each hour's newest is an hourly one",
                ids: [hourly("2026-03-10T10:00:00Z", 3, 5), hourly("2026-03-10T10:00:00Z", 3, 40)].concat(),
                policy: policy(0, 2, 0, 0, 0),
                kept: vec!["2026-03-10 12:40: hourly", "2026-03-10 11:40: hourly"],
            },
            Case {
                name: "gaps: the N newest hours that HAVE backups, not the last N clock hours",
                ids: [hourly("2026-03-01T00:00:00Z", 2, 0), hourly("2026-03-05T08:00:00Z", 1, 0)].concat(),
                policy: policy(0, 3, 0, 0, 0),
                kept: vec!["2026-03-05 08:00: hourly", "2026-03-01 01:00: hourly", "2026-03-01 00:00: hourly"],
            },
            Case {
                name: "all-zero policy still keeps the newest backup",
                ids: hourly("2026-03-01T00:00:00Z", 5, 0),
                policy: policy(0, 0, 0, 0, 0),
                kept: vec!["2026-03-01 04:00: newest"],
            },
            Case {
                name: "keep_last counts backups, not buckets",
                ids: [hourly("2026-03-01T00:00:00Z", 1, 10), hourly("2026-03-01T00:00:00Z", 1, 20)].concat(),
                policy: policy(2, 0, 0, 0, 0),
                kept: vec!["2026-03-01 00:20: last", "2026-03-01 00:10: last"],
            },
            Case {
                name: "keep_within counts back from the newest backup, not from now",
                ids: hourly("2020-06-01T00:00:00Z", 10, 0),
                policy: RetentionConfig { keep_within: Some(Duration::from_secs(3 * 3600)), ..policy(0, 0, 0, 0, 0) },
                kept: vec!["2020-06-01 09:00: within", "2020-06-01 08:00: within", "2020-06-01 07:00: within"],
            },
            Case {
                name: "weekly buckets are ISO weeks: Sunday and the next Monday are different weeks",
                ids: vec![
                    id(at("2026-03-14T12:00:00Z"), 0), // Saturday, W11
                    id(at("2026-03-15T12:00:00Z"), 0), // Sunday, W11
                    id(at("2026-03-16T12:00:00Z"), 0), // Monday, W12
                ],
                policy: policy(0, 0, 0, 2, 0),
                kept: vec!["2026-03-16 12:00: weekly", "2026-03-15 12:00: weekly"],
            },
            Case {
                name: "ISO week across a year end: 2025-12-29 and 2026-01-02 share week 2026-W01",
                ids: vec![id(at("2025-12-29T01:00:00Z"), 0), id(at("2026-01-02T01:00:00Z"), 0)],
                policy: policy(0, 0, 0, 5, 0),
                kept: vec!["2026-01-02 01:00: weekly"],
            },
            Case {
                name: "monthly over a sparse year",
                ids: vec![
                    id(at("2026-01-05T00:00:00Z"), 0),
                    id(at("2026-01-20T00:00:00Z"), 0),
                    id(at("2026-04-01T00:00:00Z"), 0),
                    id(at("2026-07-31T00:00:00Z"), 0),
                ],
                policy: policy(0, 0, 0, 0, 2),
                kept: vec!["2026-07-31 00:00: monthly", "2026-04-01 00:00: monthly"],
            },
            Case { name: "no backups, nothing to decide", ids: vec![], policy: policy(1, 1, 1, 1, 1), kept: vec![] },
        ];
        for case in cases {
            let decisions = apply(&case.policy, &timed(&case.ids), None);
            assert_eq!(decisions.len(), case.ids.len(), "{}", case.name);
            assert_eq!(kept(&decisions), case.kept, "{}", case.name);
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut ids = hourly("2026-02-01T00:00:00Z", 72, 0);
        let sorted = apply(&RetentionConfig::default(), &timed(&ids), None);
        ids.reverse();
        assert_eq!(apply(&RetentionConfig::default(), &timed(&ids), None), sorted);
        assert_eq!(Utc.with_ymd_and_hms(2026, 2, 3, 23, 0, 0).unwrap(), sorted.last().unwrap().id.time());
    }

    #[test]
    fn manifest_times_order_backups_not_ids() {
        // The first backup's id came from a clock running a year fast; its manifest (and the others') record the
        // real start times. By id it would be the newest and keep_last = 1 would keep it alone.
        let skewed = id(at("2027-03-01T10:00:00Z"), 1);
        let real = id(at("2026-03-01T11:00:00Z"), 2);
        let backups = [(skewed.clone(), at("2026-03-01T10:00:00Z")), (real.clone(), at("2026-03-01T11:00:00Z"))];
        let decisions = apply(&policy(1, 0, 0, 0, 0), &backups, None);
        assert_eq!(decisions.iter().map(|d| &d.id).collect::<Vec<_>>(), [&skewed, &real], "oldest first by time");
        assert_eq!(kept(&decisions), ["2026-03-01 11:00: last"]);
    }

    #[test]
    fn the_current_backup_is_kept_whatever_outranks_it() {
        // A backup dated in the future (wrong clock, manifest and id alike) takes the only slot; the one just made
        // is still kept, as "current".
        let future = id(at("2030-01-01T00:00:00Z"), 1);
        let current = id(at("2026-03-01T11:00:00Z"), 2);
        let backups = timed(&[future, current.clone()]);
        assert_eq!(kept(&apply(&policy(1, 0, 0, 0, 0), &backups, None)), ["2030-01-01 00:00: last"]);
        let decisions = apply(&policy(1, 0, 0, 0, 0), &backups, Some(&current));
        assert_eq!(kept(&decisions), ["2030-01-01 00:00: last", "2026-03-01 11:00: current"]);
    }
}
