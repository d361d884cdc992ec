//! `sys.users`, `sys.roles` and `sys.privileges`: who may log in, the roles they hold and
//! every grant. A viewer who is not an admin sees only their own user, roles and grants.

use std::sync::Arc;

use arrow::array::{BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::error::Result;
use quarry_catalog::{GranteeKind, SecurableKind};

use super::table;
use crate::access::{ADMIN_ROLE, AccessControl, UserAccess};

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

pub(crate) fn users(
    access: &AccessControl,
    viewer: Option<&UserAccess>,
) -> Result<Arc<dyn TableProvider>> {
    let users: Vec<(String, Vec<String>)> = access
        .users()
        .into_iter()
        .filter(|(name, _)| viewer.is_none_or(|v| &v.user == name))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        utf8("name"),
        utf8("roles"),
        Field::new("admin", DataType::Boolean, false),
    ]));
    table(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                users.iter().map(|(n, _)| n.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                users.iter().map(|(_, r)| r.join(", ")),
            )),
            Arc::new(BooleanArray::from(
                users
                    .iter()
                    .map(|(_, r)| r.iter().any(|r| r == ADMIN_ROLE))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
}

pub(crate) fn roles(
    access: &AccessControl,
    viewer: Option<&UserAccess>,
) -> Result<Arc<dyn TableProvider>> {
    let users = access.users();
    let roles: Vec<(String, String)> = access
        .roles()
        .into_iter()
        .filter(|role| viewer.is_none_or(|v| v.roles.contains(role)))
        .map(|role| {
            let members: Vec<&str> = users
                .iter()
                .filter(|(_, roles)| roles.contains(&role))
                .map(|(name, _)| name.as_str())
                .collect();
            let members = members.join(", ");
            (role, members)
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![utf8("name"), utf8("members")]));
    table(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                roles.iter().map(|(n, _)| n.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                roles.iter().map(|(_, m)| m.as_str()),
            )),
        ],
    )
}

/// One row per privilege held: grantee, object and privilege.
pub(crate) fn privilege_rows(
    access: &AccessControl,
    viewer: Option<&UserAccess>,
) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    for grant in access.grants() {
        let mine = viewer.is_none_or(|v| match grant.grantee_kind {
            GranteeKind::User => grant.grantee == v.user,
            GranteeKind::Role => v.roles.contains(&grant.grantee),
        });
        if !mine {
            continue;
        }
        let (kind, object) = match grant.object_kind {
            SecurableKind::System => ("system", String::new()),
            SecurableKind::Source => ("source", grant.object.clone()),
            SecurableKind::Schema => ("schema", grant.object.clone()),
            SecurableKind::Dataset => ("dataset", grant.object.replace('\u{1f}', ".")),
        };
        for privilege in &grant.privileges {
            rows.push([
                grant.grantee_kind.as_str().to_string(),
                grant.grantee.clone(),
                kind.to_string(),
                object.clone(),
                privilege.as_sql().to_string(),
            ]);
        }
    }
    rows.sort();
    rows
}

pub(crate) fn privilege_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        utf8("grantee_type"),
        utf8("grantee"),
        utf8("object_type"),
        utf8("object"),
        utf8("privilege"),
    ]))
}

pub(crate) fn privileges(
    access: &AccessControl,
    viewer: Option<&UserAccess>,
) -> Result<Arc<dyn TableProvider>> {
    let rows = privilege_rows(access, viewer);
    let column = |i: usize| {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r[i].as_str()),
        )) as _
    };
    table(privilege_schema(), (0..5).map(column).collect())
}
