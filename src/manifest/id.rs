//! Backup ids that sort by time: `20261123T140000Z-1a2b3c`.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Identifies one backup; its lexical order is its time order, so listings sort without reading manifests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BackupId(String);

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// How far ahead of the reference clock a backup id may be before it counts as made by a wrong clock.
pub const MAX_CLOCK_AHEAD: chrono::Duration = chrono::Duration::hours(1);

impl BackupId {
    /// A new id for a backup starting at `at`. The suffix starts with the millisecond, so two backups in one second
    /// still sort in start order (retention keeps the newest by this order), and ends with random hex that keeps
    /// two agents writing to one store apart.
    pub fn new(at: DateTime<Utc>) -> Self {
        let random = rand::random::<u32>() & 0xfff;
        BackupId(format!("{}-{:03}{random:03x}", at.format(TIME_FORMAT), at.timestamp_subsec_millis()))
    }

    /// Parses an id, checking its shape: `YYYYMMDDTHHMMSSZ-suffix` with exactly four digits of year (chrono alone
    /// would take `+120261123T…` or a five-digit year, which sorts wrongly against every other id).
    pub fn parse(s: &str) -> Option<Self> {
        let (time, suffix) = s.split_once('-')?;
        let shape = time.len() == 16
            && time.char_indices().all(|(i, c)| match i {
                8 => c == 'T',
                15 => c == 'Z',
                _ => c.is_ascii_digit(),
            });
        let ok = shape
            && NaiveDateTime::parse_from_str(time, TIME_FORMAT).is_ok()
            && !suffix.is_empty()
            && suffix.chars().all(|c| c.is_ascii_alphanumeric());
        ok.then(|| BackupId(s.to_string()))
    }

    /// When the backup started (second precision).
    pub fn time(&self) -> DateTime<Utc> {
        let time = self.0.split_once('-').map_or(self.0.as_str(), |(t, _)| t);
        NaiveDateTime::parse_from_str(time, TIME_FORMAT).map(|t| t.and_utc()).unwrap_or_default()
    }

    /// Whether the id's time is more than [`MAX_CLOCK_AHEAD`] after `now`: made by a clock running fast. Such a
    /// backup would sort after every real one, so `list` flags it and a new one is refused.
    pub fn is_from_future(&self, now: DateTime<Utc>) -> bool {
        self.time() > now + MAX_CLOCK_AHEAD
    }

    /// Refuses a new id more than [`MAX_CLOCK_AHEAD`] ahead of `reference` (the MongoDB server's clock), saying
    /// what to fix.
    pub fn check_clock(&self, reference: DateTime<Utc>) -> Result<(), String> {
        if !self.is_from_future(reference) {
            return Ok(());
        }
        let ahead = (self.time() - reference).num_minutes();
        Err(format!(
            "backup id {self} is {}h {}m ahead of MongoDB's clock ({}): fix this host's clock (timedatectl, \
             chrony) and run the backup again; a backup dated in the future would outrank every newer one in `latest` \
             and retention",
            ahead / 60,
            ahead % 60,
            reference.format("%Y-%m-%d %H:%M:%S UTC")
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_within_one_second_sort_by_start() {
        // Regression: with a purely random suffix, prune kept the older of two backups made in one second.
        for _ in 0..50 {
            let early = BackupId::new("2026-11-23T14:00:00.100Z".parse().unwrap());
            let late = BackupId::new("2026-11-23T14:00:00.101Z".parse().unwrap());
            assert!(early < late, "{early} !< {late}");
        }
        assert!(BackupId::parse("20261123T140000Z-1a2b3c").is_some(), "ids of earlier versions still parse");
    }

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let early = BackupId::new("2026-11-23T14:00:00Z".parse().unwrap());
        let late = BackupId::new("2026-11-23T14:00:01Z".parse().unwrap());
        assert!(early < late);
        assert!(early.as_str().starts_with("20261123T140000Z-"));
        assert_eq!(BackupId::parse(late.as_str()), Some(late.clone()));
        assert_eq!(late.time(), "2026-11-23T14:00:01Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(BackupId::parse("latest"), None);
        assert_eq!(BackupId::parse("20261323T140000Z-aa"), None);
    }

    #[test]
    fn only_four_digit_years_parse() {
        assert!(BackupId::parse("99991231T235959Z-aa").is_some());
        for bad in ["120261123T140000Z-aa", "+20261123T140000Z-aa", "0261123T140000Z-aaa", "2026112xT140000Z-aa"] {
            assert_eq!(BackupId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_more_than_an_hour_ahead_are_from_the_future() {
        let now: DateTime<Utc> = "2026-05-01T12:00:00Z".parse().unwrap();
        let id = |t: &str| BackupId::new(t.parse().unwrap());
        assert!(!id("2026-05-01T12:59:59Z").is_from_future(now));
        assert!(id("2026-05-01T13:00:01Z").is_from_future(now));
        assert!(id("2026-05-01T12:30:00Z").check_clock(now).is_ok());
        let refused = id("2026-05-02T12:00:00Z").check_clock(now).unwrap_err();
        assert!(
            refused.contains("24h 0m ahead of MongoDB's clock") && refused.contains("fix this host's clock"),
            "{refused}"
        );
    }
}
