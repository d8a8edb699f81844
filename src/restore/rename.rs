//! `--nsFrom`/`--nsTo` renames, in both of mongorestore's syntaxes: `*` wildcards (`shop.*` → `shop_r.*`) and named
//! `$var$` variables (`$db$.users` → `$db$.people`), so a command line that works with stock mongorestore does the
//! same here. Rules are checked against the archive before anything is written ([`check`]): one that matches nothing,
//! or yields a name the server would refuse, is an error rather than a restore over the original namespaces.
//!
//! The syntax, as mongorestore 100.x reads it:
//! * If `--nsFrom` contains a `$`, it uses variables: `$name$` matches any text (shortest first), every variable of
//!   `--nsTo` must appear in `--nsFrom`, a variable may appear in `--nsFrom` once, and `*` is an ordinary character.
//! * Otherwise each `*` is a wildcard; `--nsFrom` and `--nsTo` need as many, and they pair up in order. `\*` is a
//!   literal asterisk, `\\` a literal backslash.
//! * A rule matches the whole `db.collection`. When several rules match, the one given last wins.

use regex::Regex;

use crate::archive::Namespace;

/// MongoDB's limit on `db.collection` (4.4 and later), in bytes.
pub(super) const MAX_NAMESPACE_BYTES: usize = 255;
/// Database names are shorter than 64 bytes.
const MAX_DB_BYTES: usize = 63;
/// Characters a database name may not contain (mongod on Linux).
const DB_FORBIDDEN: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0'];

/// One `--nsFrom`/`--nsTo` rule.
#[derive(Debug, Clone)]
pub struct Rename {
    /// The rule as given, for messages.
    from_text: String,
    to_text: String,
    /// `from` as an anchored regex; each variable is a capture group.
    from: Regex,
    /// `to`, with each variable replaced by its capture group number.
    to: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Group(usize),
}

/// A pattern split into literal characters and variables (named, or numbered for `*` wildcards).
#[derive(Debug, PartialEq)]
enum Token {
    Char(char),
    Var(String),
}

impl Rename {
    /// Compiles a rule, refusing what mongorestore refuses (unbalanced `$`, an undefined or repeated variable,
    /// unequal `*` counts), with a message naming both patterns.
    pub fn new(from: &str, to: &str) -> Result<Self, String> {
        let fail = |why: String| format!("--nsFrom {from:?} --nsTo {to:?}: {why}");
        let variables = from.contains('$');
        let (from_tokens, to_tokens) = if variables {
            (variable_tokens(from).map_err(fail)?, variable_tokens(to).map_err(fail)?)
        } else {
            if to.contains('$') {
                return Err(fail("--nsTo uses $variables$ but --nsFrom defines none".into()));
            }
            let (f, t) = (wildcard_tokens(from), wildcard_tokens(to));
            let count = |tokens: &[Token]| tokens.iter().filter(|t| matches!(t, Token::Var(_))).count();
            if count(&f) != count(&t) {
                return Err(fail(format!("different numbers of * wildcards ({} and {})", count(&f), count(&t))));
            }
            (f, t)
        };
        let mut pattern = String::from("(?s)^");
        let mut groups: Vec<String> = Vec::new();
        for token in from_tokens {
            match token {
                Token::Char(c) => pattern.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
                Token::Var(name) if groups.contains(&name) => {
                    return Err(fail(format!("variable ${name}$ appears more than once in --nsFrom")));
                }
                Token::Var(name) => {
                    pattern.push_str("(.*?)");
                    groups.push(name);
                }
            }
        }
        pattern.push('$');
        let mut parts = Vec::new();
        for token in to_tokens {
            match token {
                Token::Char(c) => match parts.last_mut() {
                    Some(Part::Literal(s)) => s.push(c),
                    _ => parts.push(Part::Literal(c.to_string())),
                },
                Token::Var(name) => match groups.iter().position(|g| *g == name) {
                    Some(i) => parts.push(Part::Group(i + 1)),
                    None => return Err(fail(format!("--nsTo uses ${name}$, which --nsFrom does not define"))),
                },
            }
        }
        let regex = Regex::new(&pattern).map_err(|e| fail(e.to_string()))?;
        Ok(Rename { from_text: from.to_string(), to_text: to.to_string(), from: regex, to: parts })
    }

    /// The new full name if this rule matches `name` (not yet checked to be a valid namespace).
    fn apply(&self, name: &str) -> Option<String> {
        let caps = self.from.captures(name)?;
        Some(
            self.to
                .iter()
                .map(|part| match part {
                    Part::Literal(s) => s.as_str(),
                    Part::Group(i) => caps.get(*i).map_or("", |m| m.as_str()),
                })
                .collect(),
        )
    }
}

impl std::fmt::Display for Rename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--nsFrom {:?} --nsTo {:?}", self.from_text, self.to_text)
    }
}

/// `$name$` variables; everything else literal.
fn variable_tokens(pattern: &str) -> Result<Vec<Token>, String> {
    if pattern.matches('$').count() % 2 == 1 {
        return Err(format!("odd number of $ in {pattern:?}: variables are written $name$"));
    }
    let mut tokens = Vec::new();
    for (i, piece) in pattern.split('$').enumerate() {
        if i % 2 == 1 {
            tokens.push(Token::Var(piece.to_string()));
        } else {
            tokens.extend(piece.chars().map(Token::Char));
        }
    }
    Ok(tokens)
}

/// `*` wildcards numbered in order, with `\*` and `\\` escapes (a backslash before anything else is dropped).
fn wildcard_tokens(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => tokens.extend(chars.next().map(Token::Char)),
            '*' => tokens.push(Token::Var(tokens.iter().filter(|t| matches!(t, Token::Var(_))).count().to_string())),
            c => tokens.push(Token::Char(c)),
        }
    }
    tokens
}

/// Where `ns` is restored to: renamed by the last rule that matches it, or unchanged when none does. An error when
/// the rule yields a name that is not a valid namespace.
pub fn rename(rules: &[Rename], ns: &Namespace) -> Result<Namespace, String> {
    let name = ns.to_string();
    let Some((rule, renamed)) = rules.iter().rev().find_map(|r| r.apply(&name).map(|n| (r, n))) else {
        return Ok(ns.clone());
    };
    let target = Namespace::parse(&renamed)
        .ok_or_else(|| "it has no database or no collection part (db.collection)".to_string())
        .and_then(|target| invalid(ns, &target).map_or(Ok(target), Err));
    target.map_err(|why| format!("{rule} renames {ns} to {renamed:?}, which is not a valid namespace: {why}"))
}

/// Why `target` cannot be created, if it cannot.
fn invalid(source: &Namespace, target: &Namespace) -> Option<String> {
    let Namespace { db, collection } = target;
    if let Some(c) = db.chars().find(|c| DB_FORBIDDEN.contains(c)) {
        return Some(format!("a database name may not contain {c:?}"));
    }
    if db.len() > MAX_DB_BYTES {
        return Some(format!("a database name has at most {MAX_DB_BYTES} bytes"));
    }
    if let Some(c) = collection.chars().find(|c| ['$', '\0'].contains(c)) {
        return Some(format!("a collection name may not contain {c:?}"));
    }
    if collection.starts_with("system.") && collection != &source.collection {
        return Some("system.* collection names are reserved for the server".into());
    }
    if db.len() + 1 + collection.len() > MAX_NAMESPACE_BYTES {
        return Some(format!("a namespace has at most {MAX_NAMESPACE_BYTES} bytes"));
    }
    None
}

/// Checks every rule against the namespaces the restore will write, before anything is written: each rule must
/// match at least one of them (a rule that matches nothing is a typo that would restore over the originals), and
/// every new name must be valid.
pub fn check<'a>(rules: &[Rename], namespaces: impl IntoIterator<Item = &'a Namespace>) -> Result<(), String> {
    let mut matched = vec![false; rules.len()];
    let mut databases: Vec<&str> = Vec::new();
    for ns in namespaces {
        let name = ns.to_string();
        for (rule, matched) in rules.iter().zip(matched.iter_mut()) {
            *matched |= rule.from.is_match(&name);
        }
        rename(rules, ns)?;
        if !databases.contains(&ns.db.as_str()) {
            databases.push(&ns.db);
        }
    }
    match matched.iter().position(|m| !m) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{} matches nothing in the archive (its selected databases: {}): check the pattern, or drop the rule",
            rules[i],
            if databases.is_empty() { "none".to_string() } else { databases.join(", ") }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).unwrap()
    }

    fn renamed(rules: &[(&str, &str)], from: &str) -> Result<Namespace, String> {
        let rules: Vec<Rename> = rules.iter().map(|(f, t)| Rename::new(f, t).unwrap()).collect();
        rename(&rules, &ns(from))
    }

    #[test]
    fn asterisk_wildcards_rename_like_mongorestore() {
        assert_eq!(renamed(&[("shop.*", "shop_r.*")], "shop.orders"), Ok(ns("shop_r.orders")));
        assert_eq!(renamed(&[("shop.*", "shop_r.*")], "shop.orders.2024"), Ok(ns("shop_r.orders.2024")));
        assert_eq!(renamed(&[("shop.*", "shop_r.*")], "shopping.x"), Ok(ns("shopping.x")));
        assert_eq!(renamed(&[("*.users", "*.people")], "a.users"), Ok(ns("a.people")));
        assert_eq!(renamed(&[("*.log_*", "archive_*.*")], "app.log_2024"), Ok(ns("archive_app.2024")));
        assert_eq!(renamed(&[(r"a.b\*", "c.d")], "a.b*"), Ok(ns("c.d")));
        assert_eq!(renamed(&[(r"a.b\*", "c.d")], "a.bx"), Ok(ns("a.bx")));
        assert!(Rename::new("shop.*", "shop_r.x").unwrap_err().contains("different numbers of * wildcards"));
        assert!(Rename::new("shop.*", "shop_r.$c$").unwrap_err().contains("defines none"));
    }

    #[test]
    fn dollar_variables_rename_like_mongorestore() {
        assert_eq!(renamed(&[("shop.$c$", "shop_copy.$c$")], "shop.orders.2024"), Ok(ns("shop_copy.orders.2024")));
        assert_eq!(renamed(&[("$db$.users", "$db$.people")], "a.users"), Ok(ns("a.people")));
        assert_eq!(renamed(&[("$db$.$c$", "$c$.$db$")], "a.b"), Ok(ns("b.a")));
        // With variables, `*` is an ordinary character.
        assert_eq!(renamed(&[("a.*$x$", "b.$x$")], "a.*q"), Ok(ns("b.q")));
        assert_eq!(renamed(&[("a.*$x$", "b.$x$")], "a.zq"), Ok(ns("a.zq")));
        assert_eq!(renamed(&[("a.b", "c.d")], "a.bb"), Ok(ns("a.bb")));
        assert!(Rename::new("a.$x$", "b.$y$").unwrap_err().contains("$y$"));
        assert!(Rename::new("a.$x", "b.c").unwrap_err().contains("odd number of $"));
        assert!(Rename::new("$x$.$x$", "b.$x$").unwrap_err().contains("more than once"));
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let rules = [("shop.*", "one.*"), ("shop.orders", "two.orders")];
        assert_eq!(renamed(&rules, "shop.orders"), Ok(ns("two.orders")));
        assert_eq!(renamed(&rules, "shop.items"), Ok(ns("one.items")));
    }

    #[test]
    fn invalid_targets_are_errors() {
        for (from, to, why) in [
            ("shop.*", "shop_r*", "no database or no collection"),
            ("shop.*", "sh op.*", "may not contain ' '"),
            ("shop.*", "shop_r.system.*", "reserved"),
            ("shop.*", &format!("{}.*", "d".repeat(64)), "at most 63 bytes"),
            ("shop.*", &format!("s.{}*", "c".repeat(260)), "at most 255 bytes"),
        ] {
            let err = renamed(&[(from, to)], "shop.orders").unwrap_err();
            assert!(err.contains(why) && err.contains("shop.orders"), "{err}");
        }
        assert_eq!(renamed(&[("a.$c$", "b.$c$")], "a.system.js"), Ok(ns("b.system.js")));
    }

    #[test]
    fn check_refuses_rules_that_match_nothing_or_rename_badly() {
        let rules =
            |pairs: &[(&str, &str)]| -> Vec<Rename> { pairs.iter().map(|(f, t)| Rename::new(f, t).unwrap()).collect() };
        let archive = [ns("shop.orders"), ns("shop.items"), ns("hr.people")];
        assert_eq!(check(&rules(&[("shop.*", "shop_r.*")]), &archive), Ok(()));
        let err = check(&rules(&[("shop.*", "shop_r.*"), ("shpo.*", "x.*")]), &archive).unwrap_err();
        assert!(err.contains("\"shpo.*\"") && err.contains("matches nothing") && err.contains("shop, hr"), "{err}");
        // A rule that matches but is overridden by a later one is harmless: nothing is restored over the originals.
        assert_eq!(check(&rules(&[("hr.people", "a.b"), ("hr.*", "c.*")]), &archive), Ok(()));
        let err = check(&rules(&[("shop.*", "shop_r*")]), &archive).unwrap_err();
        assert!(err.contains("not a valid namespace"), "{err}");
        assert_eq!(check(&[], &archive), Ok(()));
    }
}
