//! The restore plan: what will be created, dropped and inserted, decided before anything is written, and
//! printed as-is by `--dry-run`.

use bson::doc;
use mongodb::Client;

use super::rename::{Rename, rename};
use crate::archive::{CollectionKind, CollectionMetadata, Namespace, PreludeEntry};
use crate::error::{Error, Result};
use crate::mongo::{NamespaceFilter, is_backed_up};

/// What happens to one namespace of the archive.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the collection (or view) at the target and insert its documents.
    Restore,
    /// Users, merged into the target's users.
    Users,
    /// Custom roles, merged into the target's roles.
    Roles,
    /// Read (and checked) but not written; the reason is given.
    Skip(&'static str),
}

/// One archive namespace and its fate.
#[derive(Debug, Clone)]
pub struct PlannedNamespace {
    /// Name in the archive.
    pub source: Namespace,
    /// Name it is restored to (after `--nsFrom/--nsTo`).
    pub target: Namespace,
    /// Parsed metadata.
    pub metadata: CollectionMetadata,
    /// What will be done.
    pub action: Action,
    /// The target exists and will be dropped first (`--drop`).
    pub drop_first: bool,
}

/// The whole plan, in prelude order.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// One entry per archive namespace except the oplog.
    pub namespaces: Vec<PlannedNamespace>,
    /// The archive has an oplog slice that will be replayed after the data.
    pub replay_oplog: bool,
}

impl std::fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.namespaces {
            let renamed = if p.source == p.target { String::new() } else { format!(" (from {})", p.source) };
            match &p.action {
                Action::Restore => {
                    let drop = if p.drop_first { "drop and " } else { "" };
                    let indexes = p.metadata.indexes.len();
                    writeln!(
                        f,
                        "{drop}create {} {}{renamed} with {indexes} indexes",
                        p.metadata.kind.as_str(),
                        p.target
                    )?
                }
                Action::Users => writeln!(f, "merge users from {}", p.source)?,
                Action::Roles => writeln!(f, "merge roles from {}", p.source)?,
                Action::Skip(why) => writeln!(f, "skip {}: {why}", p.source)?,
            }
        }
        if self.replay_oplog {
            writeln!(f, "replay the oplog slice up to the backup's end timestamp")?;
        }
        Ok(())
    }
}

/// Builds the plan and checks it against the target: refuses to write into non-empty collections without `drop`.
pub async fn plan(
    client: &Client,
    prelude: &[PreludeEntry],
    filter: &NamespaceFilter,
    renames: &[Rename],
    drop: bool,
) -> Result<RestorePlan> {
    let mut namespaces = Vec::new();
    let mut replay_oplog = false;
    for entry in prelude {
        if entry.namespace.is_oplog() {
            replay_oplog = true;
            continue;
        }
        let metadata = CollectionMetadata::parse(&entry.namespace, &entry.metadata, &entry.kind)?;
        let source = entry.namespace.clone();
        let action = match (source.db.as_str(), source.collection.as_str()) {
            _ if !filter.matches(&source) => Action::Skip("not selected by --nsInclude/--nsExclude"),
            ("admin", "system.users") => Action::Users,
            ("admin", "system.roles") => Action::Roles,
            _ if !is_backed_up(&source) => Action::Skip("server-internal namespace"),
            _ => Action::Restore,
        };
        namespaces.push(PlannedNamespace {
            target: rename(renames, &source),
            source,
            metadata,
            action,
            drop_first: false,
        });
    }
    let mut occupied = Vec::new();
    for p in namespaces.iter_mut().filter(|p| p.action == Action::Restore) {
        let exists = collection_exists(client, &p.target).await?;
        if exists && drop {
            p.drop_first = true;
        } else if exists && p.metadata.kind == CollectionKind::View {
            occupied.push(format!("{} (a view with that name exists)", p.target));
        } else if exists && has_documents(client, &p.target).await? {
            occupied.push(p.target.to_string());
        }
    }
    if !occupied.is_empty() {
        return Err(Error::Refused(format!(
            "refusing to restore into non-empty {}; pass --drop to replace them, or --nsFrom/--nsTo to restore elsewhere",
            occupied.join(", ")
        )));
    }
    Ok(RestorePlan { namespaces, replay_oplog })
}

async fn collection_exists(client: &Client, ns: &Namespace) -> Result<bool> {
    let names = client
        .database(&ns.db)
        .list_collection_names()
        .filter(doc! {"name": &ns.collection})
        .await
        .map_err(Error::mongo(format!("checking whether {ns} exists")))?;
    Ok(!names.is_empty())
}

async fn has_documents(client: &Client, ns: &Namespace) -> Result<bool> {
    let one = client
        .database(&ns.db)
        .collection::<bson::Document>(&ns.collection)
        .find_one(doc! {})
        .await
        .map_err(Error::mongo(format!("checking whether {ns} is empty")))?;
    Ok(one.is_some())
}
