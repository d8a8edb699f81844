//! `--nsFrom`/`--nsTo` renames with mongorestore's `$var$` wildcards: `shop.$c$` → `shop_copy.$c$`.

use regex::Regex;

use crate::archive::Namespace;

/// One rename rule.
#[derive(Debug, Clone)]
pub struct Rename {
    from: Regex,
    to: String,
    vars: Vec<String>,
}

impl Rename {
    /// Compiles a rule; every `$var$` used in `to` must appear in `from`.
    pub fn new(from: &str, to: &str) -> Result<Self, String> {
        let mut pattern = String::from("^");
        let mut vars = Vec::new();
        for (i, part) in from.split('$').enumerate() {
            if i % 2 == 1 {
                if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("--nsFrom {from:?}: ${part}$ is not a valid variable name"));
                }
                pattern.push_str(&format!("(?P<{part}>.*?)"));
                vars.push(part.to_string());
            } else {
                pattern.push_str(&regex::escape(part));
            }
        }
        if from.matches('$').count() % 2 == 1 {
            return Err(format!("--nsFrom {from:?}: unbalanced $"));
        }
        pattern.push('$');
        for (i, part) in to.split('$').enumerate() {
            if i % 2 == 1 && !vars.iter().any(|v| v == part) {
                return Err(format!("--nsTo {to:?} uses ${part}$ which --nsFrom {from:?} does not define"));
            }
        }
        let from = Regex::new(&pattern).map_err(|e| format!("--nsFrom {from:?}: {e}"))?;
        Ok(Rename { from, to: to.to_string(), vars })
    }

    /// The renamed namespace, if this rule applies.
    pub fn apply(&self, ns: &Namespace) -> Option<Namespace> {
        let name = ns.to_string();
        let caps = self.from.captures(&name)?;
        let mut out = self.to.clone();
        for var in &self.vars {
            out = out.replace(&format!("${var}$"), caps.name(var).map_or("", |m| m.as_str()));
        }
        Namespace::parse(&out)
    }
}

/// Applies the first matching rule, or keeps the name.
pub fn rename(rules: &[Rename], ns: &Namespace) -> Namespace {
    rules.iter().find_map(|r| r.apply(ns)).unwrap_or_else(|| ns.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_renames_like_mongorestore() {
        let ns = |s: &str| Namespace::parse(s).unwrap();
        let r = Rename::new("shop.$coll$", "shop_copy.$coll$").unwrap();
        assert_eq!(r.apply(&ns("shop.orders.2024")), Some(ns("shop_copy.orders.2024")));
        assert_eq!(r.apply(&ns("hr.people")), None);
        let r = Rename::new("$db$.users", "$db$.people").unwrap();
        assert_eq!(rename(&[r], &ns("a.users")), ns("a.people"));
        let exact = Rename::new("a.b", "c.d").unwrap();
        assert_eq!(exact.apply(&ns("a.bb")), None);
        assert!(Rename::new("a.$x$", "b.$y$").is_err());
        assert!(Rename::new("a.$x", "b.c").is_err());
    }
}
