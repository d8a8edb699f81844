//! Retention: which backups to keep (grandfather-father-son, like `restic forget`) and removing the rest.
//!
//! [`policy`] decides from backup times alone; [`prune`](mod@prune) turns the decisions into a plan against a
//! store and carries it out. The daemon calls [`prune()`] after every successful backup; `list` shows each
//! backup's class with [`PrunePlan::class_of`].

pub mod policy;
pub mod prune;

pub use policy::{Decision, Rule};
pub use prune::{Doomed, LeftAlone, Partial, PrunePlan, PruneReport, execute, plan, prune};
