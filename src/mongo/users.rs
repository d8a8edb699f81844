//! Users and custom roles, which a full backup carries as `admin.system.users` / `admin.system.roles`.

use bson::{Document, doc};
use mongodb::Client;

use crate::error::Result;

/// Fields of `usersInfo`/`rolesInfo` output that the server derives and `system.*` documents do not have.
const DERIVED_FIELDS: &[&str] = &["mechanisms", "isBuiltin", "inheritedRoles", "inheritedPrivileges"];

/// Every user with its credentials, in `admin.system.users` document form. Uses `usersInfo`, which works where
/// `admin.system.users` is not readable directly.
pub async fn users(client: &Client) -> Result<Vec<Document>> {
    let admin = client.database("admin");
    let reply = super::bounded(
        "reading users with usersInfo (the backup user needs the backup role)",
        admin.run_command(doc! {"usersInfo": {"forAllDBs": true}, "showCredentials": true}),
    )
    .await?;
    Ok(stored_form(reply.get_array("users").cloned().unwrap_or_default()))
}

/// Every user-defined role of every database, in `admin.system.roles` document form.
pub async fn roles(client: &Client, databases: &[String]) -> Result<Vec<Document>> {
    let mut roles = Vec::new();
    for db in databases {
        let database = client.database(db);
        let reply = super::bounded(
            &format!("reading roles of {db} with rolesInfo"),
            database.run_command(doc! {"rolesInfo": 1, "showPrivileges": true}),
        )
        .await?;
        roles.extend(stored_form(reply.get_array("roles").cloned().unwrap_or_default()));
    }
    Ok(roles)
}

fn stored_form(items: Vec<bson::Bson>) -> Vec<Document> {
    items
        .into_iter()
        .filter_map(|item| match item {
            bson::Bson::Document(mut d) => {
                for field in DERIVED_FIELDS {
                    d.remove(*field);
                }
                Some(d)
            }
            _ => None,
        })
        .collect()
}
