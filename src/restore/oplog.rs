//! Replays oplog entries through ordinary writes (no `applyOps`), idempotently: applying an entry whose effect
//! is already in the restored data changes nothing.

use bson::{Bson, Document, doc};
use mongodb::Client;

use crate::archive::Namespace;
use crate::error::{Error, Result};

/// Server error codes that mean "already done" for replayed commands.
const NAMESPACE_EXISTS: i32 = 48;
const NAMESPACE_NOT_FOUND: i32 = 26;
const INDEX_NOT_FOUND: i32 = 27;

/// Applies one oplog entry. `target` maps a source namespace to where it is restored, or `None` to skip it.
pub async fn apply(
    client: &Client,
    entry: &Document,
    target: &(dyn Fn(&Namespace) -> Option<Namespace> + Sync),
) -> Result<bool> {
    let op = entry.get_str("op").unwrap_or("n");
    let Some(ns) = entry.get_str("ns").ok().and_then(Namespace::parse) else { return Ok(false) };
    let o = entry.get_document("o").cloned().unwrap_or_default();
    if op == "c" {
        return apply_command(client, &ns.db, o, target).await;
    }
    let Some(to) = target(&ns) else { return Ok(false) };
    let coll = client.database(&to.db).collection::<Document>(&to.collection);
    let what = || Error::mongo(format!("replaying oplog op {op:?} on {to}"));
    match op {
        "i" => {
            let id = o.get("_id").cloned().unwrap_or(Bson::Null);
            coll.replace_one(doc! {"_id": id}, o).upsert(true).await.map_err(what())?;
        }
        "u" => {
            let selector = entry.get_document("o2").cloned().unwrap_or_default();
            match update_from_oplog(&o) {
                Some(updates) => {
                    for update in updates {
                        coll.update_one(selector.clone(), update).await.map_err(what())?;
                    }
                }
                None => {
                    coll.replace_one(selector, o).upsert(true).await.map_err(what())?;
                }
            }
        }
        "d" => {
            coll.delete_one(o).await.map_err(what())?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

async fn apply_command(
    client: &Client,
    db: &str,
    o: Document,
    target: &(dyn Fn(&Namespace) -> Option<Namespace> + Sync),
) -> Result<bool> {
    let Some((name, value)) = o.iter().next().map(|(k, v)| (k.clone(), v.clone())) else { return Ok(false) };
    if name == "applyOps" {
        let mut applied = false;
        for inner in o.get_array("applyOps").cloned().unwrap_or_default() {
            if let Bson::Document(inner) = inner {
                applied |= Box::pin(apply(client, &inner, target)).await?;
            }
        }
        return Ok(applied);
    }
    if !["create", "drop", "createIndexes", "dropIndexes", "collMod"].contains(&name.as_str()) {
        log::warn!("oplog replay: skipping unsupported command {name} on {db}");
        return Ok(false);
    }
    let Bson::String(collection) = value else { return Ok(false) };
    let Some(to) = target(&Namespace::new(db, &collection)) else { return Ok(false) };
    let mut command = doc! {name.as_str(): to.collection.as_str()};
    for (k, v) in o.iter().skip(1) {
        if k != "idIndex" {
            command.insert(k, v.clone());
        }
    }
    match client.database(&to.db).run_command(command).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.sometimes_code(), Some(NAMESPACE_EXISTS | NAMESPACE_NOT_FOUND | INDEX_NOT_FOUND)) => {
            Ok(true)
        }
        Err(e) => Err(Error::Mongo { action: format!("replaying oplog command {name} on {to}"), source: e }),
    }
}

trait ErrorCode {
    fn sometimes_code(&self) -> Option<i32>;
}

impl ErrorCode for mongodb::error::Error {
    fn sometimes_code(&self) -> Option<i32> {
        match &*self.kind {
            mongodb::error::ErrorKind::Command(c) => Some(c.code),
            _ => None,
        }
    }
}

/// Turns the `o` of an update entry into update documents, or `None` for a full-document replacement.
/// Understands `$set`/`$unset` (4.4, `$v:1`), mongod's `$v:2` diffs, and the change-stream style
/// `updatedFields`/`removedFields`/`truncatedArrays` diff some servers log.
pub fn update_from_oplog(o: &Document) -> Option<Vec<Document>> {
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut truncate = Document::new();
    if let Ok(diff) = o.get_document("diff") {
        if diff.contains_key("updatedFields") || diff.contains_key("removedFields") {
            set = diff.get_document("updatedFields").cloned().unwrap_or_default();
            for field in diff.get_array("removedFields").cloned().unwrap_or_default() {
                if let Bson::String(f) = field {
                    unset.insert(f, "");
                }
            }
            for t in diff.get_array("truncatedArrays").cloned().unwrap_or_default() {
                if let Bson::Document(t) = t
                    && let (Ok(field), Some(size)) = (t.get_str("field"), t.get("newSize"))
                {
                    truncate.insert(field, doc! {"$each": [], "$slice": size.clone()});
                }
            }
        } else {
            walk_diff(diff, "", &mut set, &mut unset, &mut truncate);
        }
    } else if o.keys().any(|k| k.starts_with('$') && k != "$v") {
        let mut update = o.clone();
        update.remove("$v");
        return Some(vec![update]);
    } else {
        return None;
    }
    let mut updates = Vec::new();
    if !truncate.is_empty() {
        updates.push(doc! {"$push": truncate});
    }
    let mut main = Document::new();
    if !set.is_empty() {
        main.insert("$set", set);
    }
    if !unset.is_empty() {
        main.insert("$unset", unset);
    }
    if !main.is_empty() {
        updates.push(main);
    }
    Some(updates)
}

/// mongod's `$v:2` diff: `u`/`i` set fields, `d` removes, `s<field>` recurses; arrays (`a: true`) use `u<index>`,
/// `s<index>` and `l` (new length).
fn walk_diff(diff: &Document, prefix: &str, set: &mut Document, unset: &mut Document, truncate: &mut Document) {
    let is_array = diff.get_bool("a").unwrap_or(false);
    for (key, value) in diff {
        let path = |field: &str| if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
        match (key.as_str(), value) {
            ("a", _) => {}
            ("l", len) if is_array => {
                truncate.insert(prefix, doc! {"$each": [], "$slice": len.clone()});
            }
            ("u" | "i", Bson::Document(fields)) if !is_array => {
                for (f, v) in fields {
                    set.insert(path(f), v.clone());
                }
            }
            ("d", Bson::Document(fields)) if !is_array => {
                for (f, _) in fields {
                    unset.insert(path(f), "");
                }
            }
            (k, v) if is_array && k.starts_with('u') => {
                set.insert(path(&k[1..]), v.clone());
            }
            (k, Bson::Document(sub)) if k.starts_with('s') => walk_diff(sub, &path(&k[1..]), set, unset, truncate),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_become_updates() {
        let v1 = doc! {"$v": 1, "$set": {"a": 2}};
        assert_eq!(update_from_oplog(&v1), Some(vec![doc! {"$set": {"a": 2}}]));
        assert_eq!(update_from_oplog(&doc! {"_id": 1, "b": 5}), None);
        let v2 = doc! {"$v": 2, "diff": {"u": {"a": 1}, "d": {"b": false}, "sc": {"i": {"x": 1}}, "sarr": {"a": true, "l": 2, "u1": 9}}};
        assert_eq!(
            update_from_oplog(&v2),
            Some(vec![
                doc! {"$push": {"arr": {"$each": [], "$slice": 2}}},
                doc! {"$set": {"a": 1, "c.x": 1, "arr.1": 9}, "$unset": {"b": ""}},
            ])
        );
        let stream = doc! {"$v": 2, "diff": {"updatedFields": {"n": 1}, "removedFields": ["a"], "truncatedArrays": []}};
        assert_eq!(update_from_oplog(&stream), Some(vec![doc! {"$set": {"n": 1}, "$unset": {"a": ""}}]));
    }
}
