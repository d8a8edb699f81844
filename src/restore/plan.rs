//! The restore plan: what will be created, dropped and inserted, decided before anything is written, and
//! printed as-is by `--dry-run`.

use bson::{Document, doc};
use mongodb::Client;

use super::staging::Staging;
use super::{RestoreOptions, rename};
use crate::archive::{CollectionKind, CollectionMetadata, Namespace, PreludeEntry};
use crate::error::{Error, Result};
use crate::mongo::{self, is_backed_up};

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
    /// Where its data is written: the target, or in a `--drop` restore its staging collection, which replaces the
    /// target only once the whole archive has been restored.
    pub write_to: Namespace,
    /// Parsed metadata.
    pub metadata: CollectionMetadata,
    /// What will be done.
    pub action: Action,
    /// The target exists and will be replaced (`--drop`).
    pub drop_first: bool,
}

/// The whole plan, in prelude order.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// One entry per archive namespace except the oplog.
    pub namespaces: Vec<PlannedNamespace>,
    /// The archive has an oplog slice that will be replayed after the data.
    pub replay_oplog: bool,
    /// User documents the restore writes, filled in as the archive is read (they are data, not prelude).
    pub users: Vec<Document>,
    /// Custom role documents the restore writes, filled in as the archive is read.
    pub roles: Vec<Document>,
}

/// Why users and roles are left alone unless asked for: merging them rolls back changed passwords and brings back
/// deleted users.
const AUTH_SKIPPED: &str = "users and roles are restored only by a full restore (no --nsInclude/--nsExclude/--nsFrom) or with --with-users-and-roles";

impl std::fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.namespaces {
            let renamed = if p.source == p.target { String::new() } else { format!(" (from {})", p.source) };
            match &p.action {
                Action::Restore => {
                    let verb = if p.drop_first { "replace" } else { "create" };
                    let indexes = p.metadata.indexes.len();
                    writeln!(f, "{verb} {} {}{renamed} with {indexes} indexes", p.metadata.kind.as_str(), p.target)?
                }
                Action::Users => writeln!(f, "restore users from {}: {}", p.source, names(&self.users))?,
                Action::Roles => writeln!(f, "restore roles from {}: {}", p.source, names(&self.roles))?,
                Action::Skip(why) => writeln!(f, "skip {}: {why}", p.source)?,
            }
        }
        if self.replay_oplog {
            writeln!(f, "replay the oplog slice up to the backup's end timestamp")?;
        }
        if let Some(p) = self.namespaces.iter().find(|p| p.write_to != p.target) {
            writeln!(
                f,
                "--drop: everything is restored into staging collections ({}, ...) first; the targets are replaced \
                 only after the whole archive has been read and checked",
                p.write_to
            )?;
        }
        Ok(())
    }
}

/// The `_id`s (`db.name`) of user or role documents.
fn names(list: &[Document]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter().map(|d| d.get_str("_id").unwrap_or("(no _id)")).collect::<Vec<_>>().join(", ")
}

/// Builds the plan and checks it against the target before anything is written: refuses rename rules that rename
/// nothing or badly, and non-empty targets without `drop`.
pub async fn plan(
    client: &Client,
    prelude: &[PreludeEntry],
    options: &RestoreOptions,
    staging: Option<&Staging>,
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
            ("admin", "system.users") if options.users_and_roles => Action::Users,
            ("admin", "system.roles") if options.users_and_roles => Action::Roles,
            ("admin", "system.users" | "system.roles") => Action::Skip(AUTH_SKIPPED),
            _ if !options.filter.matches(&source) => Action::Skip("not selected by --nsInclude/--nsExclude"),
            _ if !is_backed_up(&source) => Action::Skip("server-internal namespace"),
            _ => Action::Restore,
        };
        namespaces.push(PlannedNamespace {
            target: source.clone(),
            write_to: source.clone(),
            source,
            metadata,
            action,
            drop_first: false,
        });
    }
    let restored = || namespaces.iter().filter(|p| p.action == Action::Restore);
    rename::check(&options.renames, restored().map(|p| &p.source)).map_err(Error::Usage)?;
    let mut occupied = Vec::new();
    for p in namespaces.iter_mut().filter(|p| p.action == Action::Restore) {
        p.target = rename::rename(&options.renames, &p.source).map_err(Error::Usage)?;
        p.write_to = p.target.clone();
        if let Some(staging) = staging {
            if p.metadata.kind == CollectionKind::Timeseries {
                return Err(Error::Usage(format!(
                    "--drop cannot replace time-series collection {} safely (the server cannot rename one into \
                     place): drop it yourself and restore without --drop, or exclude it with --nsExclude",
                    p.target
                )));
            }
            p.write_to = staging.name(&p.target);
            if p.write_to.to_string().len() > rename::MAX_NAMESPACE_BYTES {
                return Err(Error::Usage(format!(
                    "{} is too long to restore with --drop: its staging name {} exceeds {} bytes; restore it \
                     without --drop into an empty target",
                    p.target,
                    p.write_to,
                    rename::MAX_NAMESPACE_BYTES
                )));
            }
        }
        let exists = mongo::collection_exists(client, &p.target).await?;
        if exists && staging.is_some() {
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
    if !options.dry_run {
        super::timeseries::check_target(client, &namespaces).await?;
    }
    Ok(RestorePlan { namespaces, replay_oplog, users: Vec::new(), roles: Vec::new() })
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
