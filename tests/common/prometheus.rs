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
