//! A collection's metadata string: options, indexes, UUID and type, as canonical Extended JSON.

use bson::{Bson, Document};

use super::{ArchiveError, Namespace};

/// What kind of collection a prelude entry describes; decides how restore creates it and whether it has documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionKind {
    /// An ordinary (possibly capped or clustered) collection.
    Collection,
    /// A view: options hold `viewOn` and `pipeline`; never has documents.
    View,
    /// A time-series collection (MongoDB 5.0+); its documents are the buckets.
    Timeseries,
}

impl CollectionKind {
    /// The `type` string listCollections and mongodump use.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionKind::Collection => "collection",
            CollectionKind::View => "view",
            CollectionKind::Timeseries => "timeseries",
        }
    }

    /// Parses a `type` string; empty (old mongodumps) means an ordinary collection.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "collection" => Some(CollectionKind::Collection),
            "view" => Some(CollectionKind::View),
            "timeseries" => Some(CollectionKind::Timeseries),
            _ => None,
        }
    }
}

/// Everything needed to recreate a collection before its documents are inserted.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMetadata {
    /// `create` options as listCollections reports them (capped, validator, collation, viewOn…).
    pub options: Document,
    /// Raw `listIndexes` documents, key order preserved.
    pub indexes: Vec<Document>,
    /// The collection UUID as lowercase hex, when the server has one.
    pub uuid: Option<String>,
    /// The collection name (mongodump repeats it here).
    pub collection_name: String,
    /// Collection, view or time-series.
    pub kind: CollectionKind,
}

impl CollectionMetadata {
    /// Renders the metadata string mongodump writes: canonical Extended JSON, empty options and absent UUID omitted.
    pub fn to_extended_json(&self) -> String {
        let mut doc = Document::new();
        if !self.options.is_empty() {
            doc.insert("options", self.options.clone());
        }
        doc.insert("indexes", self.indexes.iter().cloned().map(Bson::Document).collect::<Vec<_>>());
        if let Some(uuid) = &self.uuid {
            doc.insert("uuid", uuid.as_str());
        }
        doc.insert("collectionName", self.collection_name.as_str());
        doc.insert("type", self.kind.as_str());
        Bson::Document(doc).into_canonical_extjson().to_string()
    }

    /// Parses a metadata string; `namespace` only names the collection in the error.
    pub fn parse(namespace: &Namespace, json: &str, kind: &str) -> Result<Self, ArchiveError> {
        let bad = |problem: String| ArchiveError::BadMetadata { namespace: namespace.to_string(), problem };
        let kind = CollectionKind::parse(kind).ok_or_else(|| bad(format!("unknown collection type {kind:?}")))?;
        if json.is_empty() {
            return Ok(CollectionMetadata {
                options: Document::new(),
                indexes: Vec::new(),
                uuid: None,
                collection_name: namespace.collection.clone(),
                kind,
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON ({e}): {}", excerpt(json))))?;
        let Ok(Bson::Document(doc)) = Bson::try_from(value) else {
            return Err(bad(format!("not a valid Extended JSON object: {}", excerpt(json))));
        };
        let options = match doc.get("options") {
            None => Document::new(),
            Some(Bson::Document(d)) => d.clone(),
            Some(other) => return Err(bad(format!("options is not an object: {other}"))),
        };
        let indexes = match doc.get("indexes") {
            None => Vec::new(),
            Some(Bson::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Bson::Document(d) => Ok(d.clone()),
                    other => Err(bad(format!("index spec is not an object: {other}"))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(bad(format!("indexes is not an array: {other}"))),
        };
        let kind = match doc.get_str("type") {
            Ok(t) => CollectionKind::parse(t).ok_or_else(|| bad(format!("unknown collection type {t:?}")))?,
            Err(_) => kind,
        };
        Ok(CollectionMetadata {
            options,
            indexes,
            uuid: doc.get_str("uuid").ok().map(str::to_string),
            collection_name: doc.get_str("collectionName").unwrap_or(&namespace.collection).to_string(),
            kind,
        })
    }
}

fn excerpt(s: &str) -> String {
    let cut: String = s.chars().take(120).collect();
    if cut.len() < s.len() { format!("{cut}…") } else { cut }
}
