//! Reads the Prometheus text format the agent serves, strictly enough that a malformed line fails the test.

use std::collections::HashMap;

/// One scrape: each family's declared type, and each sample's value keyed by `name{labels}` as written.
#[derive(Debug)]
pub struct Scrape {
    pub types: HashMap<String, String>,
    pub samples: HashMap<String, f64>,
}

impl Scrape {
    /// The value of `series` (e.g. `mongo_backup_agent_backups_total{outcome="success"}`); panics when absent.
    pub fn get(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| panic!("no series {series} in {:?}", self.samples.keys()))
    }
}

/// The text the agent's metrics endpoint at `listen` (`host:port`) serves now.
pub async fn fetch(listen: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://{listen}/metrics")).await.unwrap().text().await.unwrap()
}

/// Parses exposition text 0.0.4: every sample must follow a `# TYPE` for its family, and parse as a float.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape { types: HashMap::new(), samples: HashMap::new() };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(["gauge", "counter", "untyped", "summary", "histogram"].contains(&kind), "type in {line:?}");
            assert!(scrape.types.insert(name.to_string(), kind.to_string()).is_none(), "second TYPE for {name}");
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let family = series.split('{').next().unwrap();
            assert!(scrape.types.contains_key(family), "sample {series} has no # TYPE before it");
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("value in {line:?}: {e}"));
            assert!(scrape.samples.insert(series.to_string(), value).is_none(), "duplicate series {series}");
        }
    }
    scrape
}

/// Asserts that `scrape` has every series the shipped alert rules and Grafana dashboard use, except those starting
/// with one of `absent_here` (series of a mode the scraped agent is not in).
pub fn assert_exports_what_monitoring_uses(scrape: &Scrape, absent_here: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["monitoring/prometheus/mongo-backup-agent.rules.yml", "monitoring/grafana/mongo-backup-agent.json"] {
        let used = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let words = used.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let expected =
            words.filter(|w| w.starts_with("mongo_backup_agent_") && !absent_here.iter().any(|p| w.starts_with(p)));
        for name in expected {
            assert!(scrape.types.contains_key(name), "{file} uses {name}, which the agent does not export");
        }
    }
}
