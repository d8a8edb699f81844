//! Update entries applied to a document held in memory, so replay needs no update operators on the target and
//! converges over a fuzzy snapshot the way initial sync does.
//!
//! Forms understood: the `$v:1` modifier form (`$set`/`$unset` with dotted paths), mongod's `$v:2` diffs (`d`, `u`,
//! `i`, `s<field>`, and for arrays `a`, `l`, `u<index>`, `s<index>`), and the change-stream style diff
//! (`updatedFields`, `removedFields`, `truncatedArrays`) some servers log. A diff addresses fields by name one level at
//! a time, so names holding `.` or `$` are safe; a step that meets a value of another type than the entry expects
//! (the snapshot already holds a later state of the document) is skipped, as a server's oplog applier skips it
//! during initial sync: the later entries bring the document to its final state.

use bson::{Bson, Document};

/// What an update entry's `o` is.
#[derive(Debug, PartialEq)]
pub enum Update<'a> {
    /// A whole new document.
    Replacement(&'a Document),
    /// A change to apply to the current document.
    Change(&'a Document),
}

/// Classifies `o` of a `u` entry.
pub fn classify(o: &Document) -> Update<'_> {
    if o.contains_key("diff") || o.keys().any(|k| k.starts_with('$')) {
        Update::Change(o)
    } else {
        Update::Replacement(o)
    }
}

/// Applies a change (`Update::Change`) to `doc`. Returns the names of operators it does not know, which the caller
/// must treat as a failure: an update it cannot apply would leave a wrong document.
pub fn apply(doc: &mut Document, o: &Document) -> Result<(), String> {
    if let Ok(diff) = o.get_document("diff") {
        if diff.contains_key("updatedFields")
            || diff.contains_key("removedFields")
            || diff.contains_key("truncatedArrays")
        {
            return apply_change_stream_diff(doc, diff);
        }
        apply_document_diff(doc, diff);
        return Ok(());
    }
    for (operator, fields) in o {
        let Bson::Document(fields) = fields else {
            if operator == "$v" {
                continue;
            }
            return Err(format!("update operator {operator} without a document"));
        };
        match operator.as_str() {
            "$set" => set_paths(doc, fields),
            "$unset" => fields.keys().for_each(|path| unset_path(doc, path)),
            other => return Err(format!("update operator {other}")),
        }
    }
    Ok(())
}

fn apply_change_stream_diff(doc: &mut Document, diff: &Document) -> Result<(), String> {
    for t in diff.get_array("truncatedArrays").map(|a| a.as_slice()).unwrap_or_default() {
        let Some(t) = t.as_document() else { return Err("truncatedArrays entry is not a document".into()) };
        let (Ok(field), Some(size)) = (t.get_str("field"), t.get("newSize").and_then(as_index)) else {
            return Err(format!("truncatedArrays entry {t}"));
        };
        if let Some(Bson::Array(items)) = get_path_mut(doc, field) {
            items.truncate(size);
        }
    }
    if let Ok(set) = diff.get_document("updatedFields") {
        set_paths(doc, set);
    }
    for path in diff.get_array("removedFields").map(|a| a.as_slice()).unwrap_or_default() {
        if let Bson::String(path) = path {
            unset_path(doc, path);
        }
    }
    Ok(())
}

/// mongod's `$v:2` document diff: existing fields keep their place (deleted, updated in place, or changed by a
/// sub-diff); `u` fields not present and all `i` fields are appended in the diff's order.
fn apply_document_diff(doc: &mut Document, diff: &Document) {
    let section = |name: &str| diff.get_document(name).ok();
    let deleted = section("d");
    let updated = section("u");
    let inserted = section("i");
    let mut out = Document::new();
    for (name, value) in std::mem::take(doc) {
        if deleted.is_some_and(|d| d.contains_key(&name)) || inserted.is_some_and(|i| i.contains_key(&name)) {
            continue;
        }
        if let Some(new) = updated.and_then(|u| u.get(&name)) {
            out.insert(name, new.clone());
            continue;
        }
        let mut value = value;
        if let Some(Bson::Document(sub)) = diff.get(format!("s{name}")) {
            apply_sub_diff(&mut value, sub);
        }
        out.insert(name, value);
    }
    for (name, value) in updated.into_iter().flatten().chain(inserted.into_iter().flatten()) {
        if !out.contains_key(name) {
            out.insert(name, value.clone());
        }
    }
    *doc = out;
}

fn apply_sub_diff(value: &mut Bson, diff: &Document) {
    match value {
        Bson::Array(items) if diff.get_bool("a").unwrap_or(false) => apply_array_diff(items, diff),
        Bson::Document(sub) if !diff.get_bool("a").unwrap_or(false) => apply_document_diff(sub, diff),
        // The snapshot holds a later shape of this field: leave it to later entries.
        _ => {}
    }
}

/// An array diff: `u<i>` sets element i (padding with nulls), `s<i>` changes it, `l` resizes.
fn apply_array_diff(items: &mut Vec<Bson>, diff: &Document) {
    for (key, value) in diff {
        let Some(index) = key.get(1..).and_then(|i| i.parse::<usize>().ok()) else { continue };
        match (key.as_bytes()[0], value) {
            (b'u', value) => {
                if items.len() <= index {
                    items.resize(index + 1, Bson::Null);
                }
                items[index] = value.clone();
            }
            (b's', Bson::Document(sub)) => {
                if let Some(item) = items.get_mut(index) {
                    apply_sub_diff(item, sub);
                }
            }
            _ => {}
        }
    }
    if let Some(len) = diff.get("l").and_then(as_index) {
        items.resize(len, Bson::Null);
    }
}

fn as_index(value: &Bson) -> Option<usize> {
    match value {
        Bson::Int32(n) => usize::try_from(*n).ok(),
        Bson::Int64(n) => usize::try_from(*n).ok(),
        Bson::Double(n) if *n >= 0.0 => Some(*n as usize),
        _ => None,
    }
}

/// Sets several paths the way the server applies one update: in field-name order, component by component, so
/// that new fields land in the order the server gives them whatever order the entry lists them in.
fn set_paths(doc: &mut Document, fields: &Document) {
    let mut paths: Vec<(&String, &Bson)> = fields.iter().collect();
    paths.sort_by(|a, b| a.0.split('.').cmp(b.0.split('.')));
    paths.into_iter().for_each(|(path, value)| set_path(doc, path, value.clone()));
}

/// `$set` of a dotted path: missing documents on the way are created; array elements addressed by index (padding
/// with nulls, as the server does); a scalar on the way means a later shape of the document: skipped.
fn set_path(doc: &mut Document, path: &str, value: Bson) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    match rest {
        None => {
            if let Some(slot) = doc.get_mut(head) {
                *slot = value;
            } else {
                doc.insert(head, value);
            }
        }
        Some(rest) => {
            let child = match doc.get_mut(head) {
                Some(child) => child,
                None => {
                    doc.insert(head, Document::new());
                    doc.get_mut(head).expect("just inserted")
                }
            };
            set_in_value(child, rest, value);
        }
    }
}

fn set_in_value(target: &mut Bson, path: &str, value: Bson) {
    match target {
        Bson::Document(sub) => set_path(sub, path, value),
        Bson::Array(items) => {
            let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
            let Ok(index) = head.parse::<usize>() else { return };
            if items.len() <= index {
                items.resize(index + 1, Bson::Null);
            }
            match rest {
                None => items[index] = value,
                Some(rest) => {
                    if items[index] == Bson::Null {
                        items[index] = Bson::Document(Document::new());
                    }
                    set_in_value(&mut items[index], rest, value);
                }
            }
        }
        _ => {}
    }
}

/// `$unset` of a dotted path; an array element becomes null, as on the server.
fn unset_path(doc: &mut Document, path: &str) {
    match path.rsplit_once('.') {
        None => {
            doc.remove(path);
        }
        Some((parent, last)) => match get_path_mut(doc, parent) {
            Some(Bson::Document(sub)) => {
                sub.remove(last);
            }
            Some(Bson::Array(items)) => {
                if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    *item = Bson::Null;
                }
            }
            _ => {}
        },
    }
}

fn get_path_mut<'a>(doc: &'a mut Document, path: &str) -> Option<&'a mut Bson> {
    let mut parts = path.split('.');
    let mut current = doc.get_mut(parts.next()?)?;
    for part in parts {
        current = match current {
            Bson::Document(sub) => sub.get_mut(part)?,
            Bson::Array(items) => items.get_mut(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn applied(mut d: Document, o: Document) -> Document {
        apply(&mut d, &o).unwrap();
        d
    }

    #[test]
    fn v1_modifiers_with_paths_and_array_indexes() {
        let d = doc! {"_id": 1, "a": {"b": 1}, "arr": [1, 2], "z": 0};
        let got = applied(
            d,
            doc! {"$v": 1, "$set": {"a.c": 2, "arr.3": 9, "n.m": true}, "$unset": {"z": true, "arr.0": true}},
        );
        assert_eq!(
            got,
            doc! {"_id": 1, "a": {"b": 1, "c": 2}, "arr": [Bson::Null, 2, Bson::Null, 9], "n": {"m": true}}
        );
    }

    #[test]
    fn v2_diffs_keep_field_order_and_dotted_names() {
        let d = doc! {"_id": 1, "a.b": 1, "gone": 0, "sub": {"x": 1, "y": [1, 2, 3]}, "keep": "k"};
        let diff = doc! {"$v": 2, "diff": {
            "d": {"gone": false},
            "u": {"a.b": 2},
            "i": {"$odd": 1, "new": 3},
            "ssub": {"u": {"x": 5}, "sy": {"a": true, "l": 2, "u1": 20}},
        }};
        let got = applied(d, diff);
        assert_eq!(got, doc! {"_id": 1, "a.b": 2, "sub": {"x": 5, "y": [1, 20]}, "keep": "k", "$odd": 1, "new": 3});
        // An array grown by an element past its end, and a nested document inside an array changed in place.
        let got = applied(
            doc! {"_id": 1, "v": [{"p": 1}]},
            doc! {"$v": 2, "diff": {"sv": {"a": true, "s0": {"i": {"q": 2}}, "u2": 7}}},
        );
        assert_eq!(got, doc! {"_id": 1, "v": [{"p": 1, "q": 2}, Bson::Null, 7]});
    }

    #[test]
    fn fuzzy_snapshots_skip_steps_that_no_longer_fit() {
        // The snapshot already holds `a` as a string: a $set below it and a sub-diff into it are skipped.
        let got = applied(doc! {"_id": 1, "a": "later"}, doc! {"$v": 1, "$set": {"a.b": 1}});
        assert_eq!(got, doc! {"_id": 1, "a": "later"});
        let got = applied(doc! {"_id": 1, "a": "later"}, doc! {"$v": 2, "diff": {"sa": {"u": {"b": 1}}}});
        assert_eq!(got, doc! {"_id": 1, "a": "later"});
    }

    #[test]
    fn new_fields_land_in_field_name_order_as_on_the_server() {
        let got =
            applied(doc! {"_id": 1}, doc! {"$v": 2, "diff": {"updatedFields": {"q": 1, "p": 2, "a.z": 1, "a.b": 2}}});
        assert_eq!(got, doc! {"_id": 1, "a": {"b": 2, "z": 1}, "p": 2, "q": 1});
    }

    #[test]
    fn change_stream_style_diffs() {
        let d = doc! {"_id": 1, "a": 1, "arr": [1, 2, 3], "r": 0};
        let o = doc! {"$v": 2, "diff": {"updatedFields": {"a": 2, "arr.1": 7}, "removedFields": ["r"], "truncatedArrays": [{"field": "arr", "newSize": 2}]}};
        assert_eq!(applied(d, o), doc! {"_id": 1, "a": 2, "arr": [1, 7]});
    }

    #[test]
    fn unknown_operators_are_refused() {
        let mut d = doc! {"_id": 1};
        assert!(apply(&mut d, &doc! {"$inc": {"a": 1}}).is_err());
        assert_eq!(classify(&doc! {"_id": 1, "x": 2}), Update::Replacement(&doc! {"_id": 1, "x": 2}));
    }
}
