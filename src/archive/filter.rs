//! Namespace selection with mongodump's glob syntax (`db.*`, `*.coll`, `db.coll`), shared by backup and restore.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::Namespace;

/// Include and exclude globs; a namespace passes if it matches an include (or there are none) and no exclude.
#[derive(Debug, Clone)]
pub struct NamespaceFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl NamespaceFilter {
    /// Compiles the globs; each must have the form `db.collection` where either side may use `*`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let include = if include.is_empty() { None } else { Some(build(include)?) };
        Ok(NamespaceFilter { include, exclude: build(exclude)? })
    }

    /// A filter that accepts everything.
    pub fn all() -> Self {
        NamespaceFilter { include: None, exclude: GlobSet::empty() }
    }

    /// Whether `ns` is selected. The oplog is never filtered here: its entries are filtered one by one.
    pub fn matches(&self, ns: &Namespace) -> bool {
        let name = ns.to_string();
        self.include.as_ref().is_none_or(|set| set.is_match(&name)) && !self.exclude.is_match(&name)
    }
}

fn build(patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        if !pattern.contains('.') || pattern.starts_with('.') || pattern.ends_with('.') {
            return Err(format!("namespace pattern {pattern:?} must look like db.collection, db.* or *.collection"));
        }
        // Only `*` is special in mongodump's syntax: escape everything globset would otherwise interpret.
        let escaped: String =
            pattern.chars().map(|c| if "?[]{}\\".contains(c) { format!("[{c}]") } else { c.to_string() }).collect();
        builder.add(Glob::new(&escaped).map_err(|e| format!("namespace pattern {pattern:?}: {e}"))?);
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> NamespaceFilter {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NamespaceFilter::new(&own(include), &own(exclude)).unwrap()
    }

    #[test]
    fn mongodump_glob_forms() {
        let ns = |s: &str| Namespace::parse(s).unwrap();
        let f = filter(&["shop.*", "*.audit"], &["shop.tmp*"]);
        assert!(f.matches(&ns("shop.orders")));
        assert!(f.matches(&ns("shop.orders.archive")));
        assert!(f.matches(&ns("hr.audit")));
        assert!(!f.matches(&ns("hr.people")));
        assert!(!f.matches(&ns("shop.tmp_2024")));
        assert!(filter(&[], &[]).matches(&ns("any.thing")));
        assert!(filter(&["a.b?"], &[]).matches(&ns("a.b?")));
        assert!(!filter(&["a.b?"], &[]).matches(&ns("a.bc")));
        assert!(NamespaceFilter::new(&["nodot".into()], &[]).is_err());
    }
}
