//! Users, roles, grants and tokens: who may log in, and what each may do.
//!
//! Grants are one record per (grantee, object), holding the set of privileges, so a
//! GRANT or REVOKE is one compare-and-swap. Dropping a user or a role removes its grants;
//! dropping a role also takes it from its members.

use crate::catalog::{Catalog, decode, display_key, encode, envelope, now_ms, validate_name};
use crate::error::{CatalogError, ObjectKind};
use crate::records::{
    GrantRecord, GranteeKind, Privilege, RoleRecord, SecurableKind, Stored, TokenRecord, UserRecord,
};
use crate::store::Keyspace;

/// Separates the parts of a grant's key; it cannot appear in a name.
const SEP: char = '\u{1f}';

fn grant_key(kind: GranteeKind, grantee: &str, object_kind: SecurableKind, object: &str) -> String {
    format!(
        "{}{SEP}{grantee}{SEP}{}{SEP}{object}",
        kind.as_str(),
        object_kind.as_str()
    )
}

fn grantee_prefix(kind: GranteeKind, grantee: &str) -> String {
    format!("{}{SEP}{grantee}{SEP}", kind.as_str())
}

impl Catalog {
    // ---- users ----

    pub fn get_user(&self, name: &str) -> Result<Option<Stored<UserRecord>>, CatalogError> {
        self.get(Keyspace::Users, name.as_bytes())
    }

    pub fn list_users(&self) -> Result<Vec<Stored<UserRecord>>, CatalogError> {
        self.list(Keyspace::Users, b"")
    }

    pub fn create_user(&self, record: UserRecord) -> Result<Stored<UserRecord>, CatalogError> {
        validate_name(ObjectKind::User, &record.name)?;
        let key = record.name.clone();
        self.create(Keyspace::Users, ObjectKind::User, &key, record)
    }

    /// Change a user with `change`, retrying when a concurrent change won.
    pub fn modify_user(
        &self,
        name: &str,
        change: impl Fn(&mut UserRecord),
    ) -> Result<Stored<UserRecord>, CatalogError> {
        loop {
            let current = self.get_user(name)?.ok_or_else(|| CatalogError::NotFound {
                kind: ObjectKind::User,
                name: name.to_string(),
            })?;
            let mut record = current.record.clone();
            change(&mut record);
            match self.update(
                Keyspace::Users,
                ObjectKind::User,
                name,
                record,
                current.version,
            ) {
                Err(CatalogError::Conflict { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Create the user, or set the password of an existing one.
    pub fn put_user(&self, record: UserRecord) -> Result<Stored<UserRecord>, CatalogError> {
        loop {
            match self.create_user(record.clone()) {
                Err(CatalogError::AlreadyExists { .. }) => {}
                other => return other,
            }
            let (hash, salt) = (record.password_hash.clone(), record.salt.clone());
            match self.modify_user(&record.name, |user| {
                user.password_hash = hash.clone();
                user.salt = salt.clone();
                for role in &record.roles {
                    if !user.roles.contains(role) {
                        user.roles.push(role.clone());
                    }
                }
            }) {
                Err(CatalogError::NotFound { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Drop a user with its grants and tokens.
    pub fn delete_user(&self, name: &str) -> Result<(), CatalogError> {
        self.delete::<UserRecord>(Keyspace::Users, ObjectKind::User, name, None)?;
        self.remove_grants_of(GranteeKind::User, name)?;
        for (key, token) in self.list_tokens()? {
            if token.user == name {
                self.delete_token(&key)?;
            }
        }
        Ok(())
    }

    // ---- roles ----

    pub fn list_roles(&self) -> Result<Vec<Stored<RoleRecord>>, CatalogError> {
        self.list(Keyspace::Roles, b"")
    }

    pub fn create_role(&self, record: RoleRecord) -> Result<Stored<RoleRecord>, CatalogError> {
        validate_name(ObjectKind::Role, &record.name)?;
        let key = record.name.clone();
        self.create(Keyspace::Roles, ObjectKind::Role, &key, record)
    }

    /// Drop a role: its grants go, and its members lose it.
    pub fn delete_role(&self, name: &str) -> Result<(), CatalogError> {
        self.delete::<RoleRecord>(Keyspace::Roles, ObjectKind::Role, name, None)?;
        self.remove_grants_of(GranteeKind::Role, name)?;
        for user in self.list_users()? {
            if user.record.roles.iter().any(|r| r == name) {
                self.modify_user(&user.record.name, |u| u.roles.retain(|r| r != name))?;
            }
        }
        Ok(())
    }

    // ---- grants ----

    pub fn list_grants(&self) -> Result<Vec<GrantRecord>, CatalogError> {
        Ok(self
            .list::<GrantRecord>(Keyspace::Grants, b"")?
            .into_iter()
            .map(|s| s.record)
            .collect())
    }

    /// Add `privileges` to what `grantee` holds on the object.
    pub fn grant(
        &self,
        grantee_kind: GranteeKind,
        grantee: &str,
        object_kind: SecurableKind,
        object: &str,
        privileges: &[Privilege],
    ) -> Result<(), CatalogError> {
        self.change_grant(grantee_kind, grantee, object_kind, object, |held| {
            for p in privileges {
                if !held.contains(p) {
                    held.push(*p);
                }
            }
            held.sort();
        })
    }

    /// Take `privileges` from what `grantee` holds on the object.
    pub fn revoke(
        &self,
        grantee_kind: GranteeKind,
        grantee: &str,
        object_kind: SecurableKind,
        object: &str,
        privileges: &[Privilege],
    ) -> Result<(), CatalogError> {
        self.change_grant(grantee_kind, grantee, object_kind, object, |held| {
            held.retain(|p| !privileges.contains(p))
        })
    }

    /// Remove every grant on an object (it was dropped).
    pub fn remove_grants_on(
        &self,
        object_kind: SecurableKind,
        object: &str,
    ) -> Result<(), CatalogError> {
        for grant in self.list_grants()? {
            if grant.object_kind == object_kind && grant.object == object {
                let key = grant_key(grant.grantee_kind, &grant.grantee, object_kind, object);
                self.store.remove(Keyspace::Grants, key.as_bytes(), true)?;
            }
        }
        Ok(())
    }

    fn remove_grants_of(&self, kind: GranteeKind, grantee: &str) -> Result<(), CatalogError> {
        let prefix = grantee_prefix(kind, grantee);
        for (key, _) in self
            .store
            .scan_prefix(Keyspace::Grants, prefix.as_bytes())?
        {
            self.store.remove(Keyspace::Grants, &key, true)?;
        }
        Ok(())
    }

    fn change_grant(
        &self,
        grantee_kind: GranteeKind,
        grantee: &str,
        object_kind: SecurableKind,
        object: &str,
        change: impl Fn(&mut Vec<Privilege>),
    ) -> Result<(), CatalogError> {
        let key = grant_key(grantee_kind, grantee, object_kind, object);
        loop {
            let current = self.store.get(Keyspace::Grants, key.as_bytes())?;
            let (mut record, version, created) = match &current {
                Some(bytes) => {
                    let stored: Stored<GrantRecord> = decode(&key, bytes)?;
                    (stored.record, stored.version + 1, stored.created_ms)
                }
                None => (
                    GrantRecord {
                        grantee_kind,
                        grantee: grantee.to_string(),
                        object_kind,
                        object: object.to_string(),
                        privileges: Vec::new(),
                    },
                    1,
                    now_ms(),
                ),
            };
            change(&mut record.privileges);
            let new = if record.privileges.is_empty() {
                None
            } else {
                let mut stored = envelope(record, version, created);
                stored.updated_ms = now_ms();
                Some(encode(&key, &stored)?)
            };
            if current.is_none() && new.is_none() {
                return Ok(());
            }
            match self.store.compare_and_swap(
                Keyspace::Grants,
                key.as_bytes(),
                current.as_deref(),
                new,
                true,
            )? {
                Ok(()) => return Ok(()),
                Err(_) => continue,
            }
        }
    }

    // ---- tokens ----

    pub fn get_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, CatalogError> {
        Ok(self
            .get::<TokenRecord>(Keyspace::Tokens, token_hash.as_bytes())?
            .map(|s| s.record))
    }

    /// Every stored token, by the hash it is kept under.
    pub fn list_tokens(&self) -> Result<Vec<(String, TokenRecord)>, CatalogError> {
        self.store
            .scan_prefix(Keyspace::Tokens, b"")?
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).to_string();
                let stored: Stored<TokenRecord> = decode(&key, &v)?;
                Ok((key, stored.record))
            })
            .collect()
    }

    pub fn put_token(&self, token_hash: &str, record: TokenRecord) -> Result<(), CatalogError> {
        let stored = envelope(record, 1, now_ms());
        self.store.put(
            Keyspace::Tokens,
            token_hash.as_bytes(),
            encode(token_hash, &stored)?,
            true,
        )
    }

    pub fn delete_token(&self, token_hash: &str) -> Result<(), CatalogError> {
        self.store
            .remove(Keyspace::Tokens, token_hash.as_bytes(), true)
    }
}

/// How a grant's object reads in messages: `schema demo`, `the system`.
pub fn describe_securable(kind: SecurableKind, object: &str) -> String {
    match kind {
        SecurableKind::System => "the system".to_string(),
        other => format!("{} {}", other.as_str(), display_key(object)),
    }
}
