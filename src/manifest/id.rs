//! Backup ids that sort by time: `20261123T140000Z-1a2b3c`.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Identifies one backup; its lexical order is its time order, so listings sort without reading manifests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BackupId(String);

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl BackupId {
    /// A new id for a backup starting at `at`. The suffix starts with the millisecond, so two backups in one second
    /// still sort in start order (retention keeps the newest by this order), and ends with random hex that keeps
    /// two agents writing to one store apart.
    pub fn new(at: DateTime<Utc>) -> Self {
        let random = rand::random::<u32>() & 0xfff;
        BackupId(format!("{}-{:03}{random:03x}", at.format(TIME_FORMAT), at.timestamp_subsec_millis()))
    }

    /// Parses an id, checking its shape.
    pub fn parse(s: &str) -> Option<Self> {
        let (time, suffix) = s.split_once('-')?;
        let ok = NaiveDateTime::parse_from_str(time, TIME_FORMAT).is_ok()
            && !suffix.is_empty()
            && suffix.chars().all(|c| c.is_ascii_alphanumeric());
        ok.then(|| BackupId(s.to_string()))
    }

    /// When the backup started (second precision).
    pub fn time(&self) -> DateTime<Utc> {
        let time = self.0.split_once('-').map_or(self.0.as_str(), |(t, _)| t);
        NaiveDateTime::parse_from_str(time, TIME_FORMAT).map(|t| t.and_utc()).unwrap_or_default()
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
}
