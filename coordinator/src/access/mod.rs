//! Who is asking and what they may do: logins and tokens ([`auth`]), and the privileges
//! users hold through grants to them and to their roles.
//!
//! ```text
//!  request ─► auth (Basic or Bearer) ─► user name ─► AccessControl::for_user ─► UserAccess
//!                                                    (snapshot of users, roles, grants)
//!  planning: every dataset a statement names ─► UserAccess::require_dataset
//!  listings: SHOW TABLES, information_schema, Flight SQL and REST catalogs ─► can_see_*
//! ```
//!
//! The snapshot is rebuilt from the catalog after every change to users, roles or grants
//! (this coordinator is the only writer), so checks never read sled on a request path.
//! A view is a security boundary, as in Dremio: reading through a view needs SELECT on
//! the view only, because the view's own query is planned without the reader's limits.

pub(crate) mod auth;
mod reader;

pub(crate) use reader::{Viewer, can_read, source_of};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use quarry_catalog::{
    Catalog, GrantRecord, GranteeKind, Privilege, SecurableKind, describe_securable,
};
use quarry_common::{ErrorCode, QuarryError};

use crate::error::catalog_error;

/// The role whose members may do everything.
pub(crate) const ADMIN_ROLE: &str = "admin";

/// Separates schema and name in a dataset's grant object (as the catalog keys them).
const DATASET_SEPARATOR: char = '\u{1f}';

/// The object name of a dataset in grants.
pub(crate) fn dataset_object(schema: &str, name: &str) -> String {
    format!("{schema}{DATASET_SEPARATOR}{name}")
}

#[derive(Debug, Default)]
struct Snapshot {
    /// User name → roles.
    users: HashMap<String, Vec<String>>,
    roles: HashSet<String>,
    grants: Vec<GrantRecord>,
}

/// Users, roles and grants as of the last change, for checks on request paths.
#[derive(Debug)]
pub struct AccessControl {
    enabled: bool,
    catalog: Catalog,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl AccessControl {
    /// Load the snapshot (blocking: call at start, or from a blocking thread).
    pub fn new(enabled: bool, catalog: Catalog) -> Result<Arc<Self>, QuarryError> {
        let control = Arc::new(AccessControl {
            enabled,
            catalog,
            snapshot: RwLock::new(Arc::default()),
        });
        control.reload()?;
        Ok(control)
    }

    /// Is authentication on? Without it everyone is the one local admin.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Re-read users, roles and grants after a change (blocking).
    pub fn reload(&self) -> Result<(), QuarryError> {
        let users = self
            .catalog
            .list_users()
            .map_err(catalog_error)?
            .into_iter()
            .map(|u| (u.record.name, u.record.roles))
            .collect();
        let mut roles: HashSet<String> = self
            .catalog
            .list_roles()
            .map_err(catalog_error)?
            .into_iter()
            .map(|r| r.record.name)
            .collect();
        roles.insert(ADMIN_ROLE.to_string());
        let grants = self.catalog.list_grants().map_err(catalog_error)?;
        let snapshot = Arc::new(Snapshot {
            users,
            roles,
            grants,
        });
        match self.snapshot.write() {
            Ok(mut current) => *current = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn user_exists(&self, name: &str) -> bool {
        self.snapshot().users.contains_key(name)
    }

    pub fn role_exists(&self, name: &str) -> bool {
        self.snapshot().roles.contains(name)
    }

    /// Every grant, for `SHOW GRANTS` and `sys.privileges`.
    pub fn grants(&self) -> Vec<GrantRecord> {
        self.snapshot().grants.clone()
    }

    /// Users and their roles, sorted by name.
    pub fn users(&self) -> Vec<(String, Vec<String>)> {
        let mut users: Vec<_> = self
            .snapshot()
            .users
            .iter()
            .map(|(name, roles)| (name.clone(), roles.clone()))
            .collect();
        users.sort();
        users
    }

    pub fn roles(&self) -> Vec<String> {
        let mut roles: Vec<_> = self.snapshot().roles.iter().cloned().collect();
        roles.sort();
        roles
    }

    /// What `user` may do now.
    pub fn for_user(&self, user: &str) -> Arc<UserAccess> {
        if !self.enabled {
            return Arc::new(UserAccess::unrestricted(user));
        }
        let snapshot = self.snapshot();
        let roles = snapshot.users.get(user).cloned().unwrap_or_default();
        let admin = roles.iter().any(|r| r == ADMIN_ROLE);
        let mut held: HashMap<(SecurableKind, String), BTreeSet<Privilege>> = HashMap::new();
        for grant in &snapshot.grants {
            let applies = match grant.grantee_kind {
                GranteeKind::User => grant.grantee == user,
                GranteeKind::Role => roles.contains(&grant.grantee),
            };
            if applies {
                held.entry((grant.object_kind, grant.object.clone()))
                    .or_default()
                    .extend(grant.privileges.iter().copied());
            }
        }
        Arc::new(UserAccess {
            user: user.to_string(),
            admin,
            roles,
            held,
        })
    }
}

/// The privileges of one user at one moment (a statement plans against one of these).
#[derive(Debug, Clone)]
pub struct UserAccess {
    pub user: String,
    pub admin: bool,
    pub roles: Vec<String>,
    held: HashMap<(SecurableKind, String), BTreeSet<Privilege>>,
}

fn denied(message: String) -> QuarryError {
    QuarryError::new(ErrorCode::PermissionDenied, message)
}

impl UserAccess {
    /// Everything allowed: authentication off, or the coordinator's own work.
    pub fn unrestricted(user: &str) -> Self {
        UserAccess {
            user: user.to_string(),
            admin: true,
            roles: vec![ADMIN_ROLE.to_string()],
            held: HashMap::new(),
        }
    }

    fn holds(&self, privilege: Privilege, kind: SecurableKind, object: &str) -> bool {
        self.held
            .get(&(kind, object.to_string()))
            .is_some_and(|p| p.contains(&privilege))
    }

    /// On the system itself (or as an admin).
    pub fn on_system(&self, privilege: Privilege) -> bool {
        self.admin || self.holds(privilege, SecurableKind::System, "")
    }

    pub fn on_schema(&self, privilege: Privilege, schema: &str) -> bool {
        self.on_system(privilege) || self.holds(privilege, SecurableKind::Schema, schema)
    }

    pub fn on_source(&self, privilege: Privilege, source: &str) -> bool {
        self.on_system(privilege) || self.holds(privilege, SecurableKind::Source, source)
    }

    /// On a dataset, through a grant on it, its schema, the source its files are in, or
    /// the system.
    pub fn on_dataset(
        &self,
        privilege: Privilege,
        schema: &str,
        name: &str,
        source: Option<&str>,
    ) -> bool {
        self.on_schema(privilege, schema)
            || self.holds(
                privilege,
                SecurableKind::Dataset,
                &dataset_object(schema, name),
            )
            || source.is_some_and(|s| self.holds(privilege, SecurableKind::Source, s))
    }

    pub fn require_admin(&self, what: &str) -> Result<(), QuarryError> {
        if self.admin {
            return Ok(());
        }
        Err(denied(format!(
            "user {} may not {what}: only admins may",
            self.user
        )))
    }

    pub fn require_system(&self, privilege: Privilege, what: &str) -> Result<(), QuarryError> {
        if self.on_system(privilege) {
            return Ok(());
        }
        Err(denied(format!(
            "user {} may not {what}: it needs {} on the system",
            self.user,
            privilege.as_sql()
        )))
    }

    pub fn require_schema(&self, privilege: Privilege, schema: &str) -> Result<(), QuarryError> {
        if self.on_schema(privilege, schema) {
            return Ok(());
        }
        Err(denied(format!(
            "user {} has no {} privilege on schema {schema}",
            self.user,
            privilege.as_sql()
        )))
    }

    pub fn require_source(&self, privilege: Privilege, source: &str) -> Result<(), QuarryError> {
        if self.on_source(privilege, source) {
            return Ok(());
        }
        Err(denied(format!(
            "user {} has no {} privilege on source {source}",
            self.user,
            privilege.as_sql()
        )))
    }

    pub fn require_dataset(
        &self,
        privilege: Privilege,
        schema: &str,
        name: &str,
        source: Option<&str>,
    ) -> Result<(), QuarryError> {
        if self.on_dataset(privilege, schema, name, source) {
            return Ok(());
        }
        Err(denied(format!(
            "user {} has no {} privilege on {schema}.{name}",
            self.user,
            privilege.as_sql()
        )))
    }

    /// May this user change grants on the object?
    pub fn require_manage_grants(
        &self,
        kind: SecurableKind,
        object: &str,
    ) -> Result<(), QuarryError> {
        let allowed = self.on_system(Privilege::ManageGrants)
            || match kind {
                SecurableKind::System => false,
                SecurableKind::Schema | SecurableKind::Source => {
                    self.holds(Privilege::ManageGrants, kind, object)
                }
                SecurableKind::Dataset => {
                    self.holds(Privilege::ManageGrants, kind, object)
                        || object.split_once(DATASET_SEPARATOR).is_some_and(|(s, _)| {
                            self.holds(Privilege::ManageGrants, SecurableKind::Schema, s)
                        })
                }
            };
        if allowed {
            return Ok(());
        }
        Err(denied(format!(
            "user {} has no MANAGE GRANTS privilege on {}",
            self.user,
            describe_securable(kind, object)
        )))
    }

    /// Does a listing of schemas show this one? Only if something in it may be read.
    pub fn can_see_schema(
        &self,
        schema: &str,
        datasets_in_it: &[(String, Option<String>)],
    ) -> bool {
        self.on_schema(Privilege::Select, schema)
            || self
                .held
                .keys()
                .any(|(kind, object)| *kind == SecurableKind::Schema && object == schema)
            || datasets_in_it.iter().any(|(name, source)| {
                self.on_dataset(Privilege::Select, schema, name, source.as_deref())
            })
    }

    /// Is the job's SQL, results and cancellation this user's to see?
    pub fn owns_job(&self, job_user: &str) -> bool {
        self.admin || job_user == self.user
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_catalog::{RoleRecord, UserRecord};

    #[test]
    fn privileges_come_from_user_and_role_grants_at_every_level() -> Result<(), QuarryError> {
        let dir = tempfile::tempdir().map_err(|e| QuarryError::io("temp dir", &e))?;
        let catalog = Catalog::open(dir.path()).map_err(catalog_error)?;
        let user = |name: &str, roles: &[&str]| UserRecord {
            name: name.to_string(),
            password_hash: String::new(),
            salt: String::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        catalog
            .create_user(user("ada", &["analyst"]))
            .map_err(catalog_error)?;
        catalog
            .create_user(user("root", &[ADMIN_ROLE]))
            .map_err(catalog_error)?;
        catalog
            .create_role(RoleRecord {
                name: "analyst".to_string(),
            })
            .map_err(catalog_error)?;
        catalog
            .grant(
                GranteeKind::Role,
                "analyst",
                SecurableKind::Schema,
                "sales",
                &[Privilege::Select],
            )
            .map_err(catalog_error)?;
        catalog
            .grant(
                GranteeKind::User,
                "ada",
                SecurableKind::Source,
                "lake",
                &[Privilege::Select],
            )
            .map_err(catalog_error)?;
        let control = AccessControl::new(true, catalog)?;
        let ada = control.for_user("ada");
        assert!(!ada.admin);
        assert!(ada.on_dataset(Privilege::Select, "sales", "orders", None));
        assert!(!ada.on_dataset(Privilege::Alter, "sales", "orders", None));
        assert!(!ada.on_dataset(Privilege::Select, "hr", "pay", None));
        assert!(ada.on_dataset(Privilege::Select, "hr", "events", Some("lake")));
        assert!(
            ada.require_dataset(Privilege::Select, "hr", "pay", None)
                .is_err()
        );
        assert!(
            control
                .for_user("root")
                .on_dataset(Privilege::Alter, "hr", "pay", None)
        );
        assert!(!control.for_user("stranger").on_system(Privilege::Select));
        let off = AccessControl::new(false, control.catalog().clone())?;
        assert!(off.for_user("anyone").admin);
        Ok(())
    }
}
