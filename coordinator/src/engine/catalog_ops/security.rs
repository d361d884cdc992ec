//! Running the statements for users, roles, grants and tokens (`sql::security`).
//!
//! Changes to users, roles and grants need MANAGE GRANTS on the system (admins have it),
//! except grants on one object, which MANAGE GRANTS on that object (or its schema) allows.
//! Every change is written on a blocking thread and then reloads the access snapshot, so
//! the next statement of any user sees it.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::TableReference;
use quarry_catalog::{
    CatalogError, DatasetDefinition, GranteeKind, Privilege, RoleRecord, SecurableKind, UserRecord,
};
use quarry_common::{ErrorCode, QuarryError};

use super::CatalogOps;
use crate::access::auth::blocking;
use crate::access::{ADMIN_ROLE, UserAccess, dataset_object};
use crate::engine::result_batches::message_batch;
use crate::engine::session::{Session, parse_duration};
use crate::error::CoordinatorError;
use crate::sql::security::{Grantee, Securable, SecurityStatement};
use crate::system::access::{privilege_rows, privilege_schema};

/// Personal access tokens last this long unless EXPIRES IN says otherwise.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

fn done(message: String) -> Result<RecordBatch, CoordinatorError> {
    message_batch("result", &[message]).map_err(CoordinatorError::from)
}

fn batch(schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<RecordBatch, CoordinatorError> {
    RecordBatch::try_new(schema, columns)
        .map_err(CoordinatorError::batch("a result"))
        .map_err(QuarryError::from)
        .map_err(CoordinatorError::from)
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl CatalogOps {
    pub(crate) async fn run_security(
        &self,
        session: &Arc<Session>,
        actor: &Arc<UserAccess>,
        statement: SecurityStatement,
    ) -> Result<RecordBatch, CoordinatorError> {
        match statement {
            SecurityStatement::CreateUser {
                name,
                password,
                if_not_exists,
            } => {
                actor.require_system(Privilege::ManageGrants, "create users")?;
                if self.access.user_exists(&name) {
                    return self.existing("user", &name, if_not_exists);
                }
                self.set_password(&name, password, true).await?;
                done(format!("User {name} created"))
            }
            SecurityStatement::AlterUser { name, password } => {
                if name != actor.user {
                    actor.require_system(Privilege::ManageGrants, "change other users")?;
                }
                self.require_user(&name)?;
                self.set_password(&name, password, false).await?;
                done(format!("User {name} changed"))
            }
            SecurityStatement::DropUser { name, if_exists } => {
                actor.require_system(Privilege::ManageGrants, "drop users")?;
                if name == actor.user {
                    return Err(QuarryError::invalid("you cannot drop the user you are").into());
                }
                if !self.access.user_exists(&name) {
                    return self.missing("user", &name, if_exists);
                }
                self.change_access(move |c| {
                    c.delete_user(&name).map(|_| format!("User {name} dropped"))
                })
                .await
            }
            SecurityStatement::CreateRole {
                name,
                if_not_exists,
            } => {
                actor.require_system(Privilege::ManageGrants, "create roles")?;
                if self.access.role_exists(&name) {
                    return self.existing("role", &name, if_not_exists);
                }
                self.change_access(move |c| {
                    c.create_role(RoleRecord { name: name.clone() })
                        .map(|_| format!("Role {name} created"))
                })
                .await
            }
            SecurityStatement::DropRole { name, if_exists } => {
                actor.require_system(Privilege::ManageGrants, "drop roles")?;
                if name == ADMIN_ROLE {
                    return Err(QuarryError::invalid("the admin role cannot be dropped").into());
                }
                if !self.access.role_exists(&name) {
                    return self.missing("role", &name, if_exists);
                }
                self.change_access(move |c| {
                    c.delete_role(&name).map(|_| format!("Role {name} dropped"))
                })
                .await
            }
            SecurityStatement::GrantRole { role, user, revoke } => {
                actor.require_system(Privilege::ManageGrants, "grant roles")?;
                self.require_user(&user)?;
                if !self.access.role_exists(&role) {
                    return Err(
                        QuarryError::not_found(format!("role {role} does not exist")).into(),
                    );
                }
                if role == ADMIN_ROLE && revoke && user == actor.user {
                    return Err(QuarryError::invalid(
                        "you cannot take the admin role from yourself",
                    )
                    .into());
                }
                self.change_access(move |c| {
                    c.modify_user(&user, |u| {
                        u.roles.retain(|r| r != &role);
                        if !revoke {
                            u.roles.push(role.clone());
                            u.roles.sort();
                        }
                    })
                    .map(|_| {
                        if revoke {
                            format!("Role {role} revoked from user {user}")
                        } else {
                            format!("Role {role} granted to user {user}")
                        }
                    })
                })
                .await
            }
            SecurityStatement::Grant {
                privileges,
                object,
                grantee,
                revoke,
            } => {
                let (kind, object_name, shown) = self.resolve_securable(session, &object)?;
                actor.require_manage_grants(kind, &object_name)?;
                self.require_grantee(&grantee)?;
                let listed: Vec<&str> = privileges.iter().map(|p| p.as_sql()).collect();
                let message = if revoke {
                    format!(
                        "Revoked {} on {shown} from {} {}",
                        listed.join(", "),
                        grantee.kind.as_str(),
                        grantee.name
                    )
                } else {
                    format!(
                        "Granted {} on {shown} to {} {}",
                        listed.join(", "),
                        grantee.kind.as_str(),
                        grantee.name
                    )
                };
                self.change_access(move |c| {
                    if revoke {
                        c.revoke(grantee.kind, &grantee.name, kind, &object_name, &privileges)
                    } else {
                        c.grant(grantee.kind, &grantee.name, kind, &object_name, &privileges)
                    }
                    .map(|_| message)
                })
                .await
            }
            SecurityStatement::ShowGrants { on, to } => {
                let on = match on {
                    Some(object) => {
                        let (kind, name, _) = self.resolve_securable(session, &object)?;
                        Some((kind.as_str().to_string(), name.replace('\u{1f}', ".")))
                    }
                    None => None,
                };
                let viewer = (!actor.admin).then_some(actor.as_ref());
                let rows: Vec<[String; 5]> = privilege_rows(&self.access, viewer)
                    .into_iter()
                    .filter(|r| on.as_ref().is_none_or(|(k, n)| &r[2] == k && &r[3] == n))
                    .filter(|r| {
                        to.as_ref()
                            .is_none_or(|g| r[0] == g.kind.as_str() && r[1] == g.name)
                    })
                    .collect();
                let column = |i: usize| {
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r[i].as_str()),
                    )) as ArrayRef
                };
                batch(privilege_schema(), (0..5).map(column).collect())
            }
            SecurityStatement::CreateToken { name, expires_in } => {
                let lifetime = match expires_in {
                    Some(text) => parse_duration("EXPIRES IN", &text)?,
                    None => DEFAULT_TOKEN_LIFETIME,
                };
                let name = name.unwrap_or_else(|| "token".to_string());
                let (token, listed) = self
                    .auth
                    .create_personal_token(&actor.user, &name, lifetime)
                    .await?;
                let schema = Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Utf8, false),
                    Field::new("name", DataType::Utf8, false),
                    Field::new("token", DataType::Utf8, false),
                    Field::new("expires", timestamp(), false),
                ]));
                batch(
                    schema,
                    vec![
                        Arc::new(StringArray::from(vec![listed.id])),
                        Arc::new(StringArray::from(vec![listed.name])),
                        Arc::new(StringArray::from(vec![token])),
                        Arc::new(
                            TimestampMillisecondArray::from(vec![listed.expires_ms as i64])
                                .with_timezone("UTC"),
                        ),
                    ],
                )
            }
            SecurityStatement::ShowTokens => {
                let owner = (!actor.admin).then(|| actor.user.clone());
                let tokens = self.auth.personal_tokens(owner).await?;
                let schema = Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Utf8, false),
                    Field::new("user", DataType::Utf8, false),
                    Field::new("name", DataType::Utf8, false),
                    Field::new("created", timestamp(), false),
                    Field::new("expires", timestamp(), false),
                ]));
                let ms = |f: &dyn Fn(&crate::access::auth::PersonalToken) -> u64| {
                    Arc::new(
                        TimestampMillisecondArray::from_iter_values(
                            tokens.iter().map(|(_, t)| f(t) as i64),
                        )
                        .with_timezone("UTC"),
                    ) as ArrayRef
                };
                batch(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from_iter_values(
                            tokens.iter().map(|(_, t)| t.id.as_str()),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            tokens.iter().map(|(_, t)| t.user.as_str()),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            tokens.iter().map(|(_, t)| t.name.as_str()),
                        )),
                        ms(&|t| t.created_ms),
                        ms(&|t| t.expires_ms),
                    ],
                )
            }
            SecurityStatement::DropToken { id } => {
                self.auth
                    .revoke_personal_token(&id, &actor.user, actor.admin)
                    .await?;
                done(format!("Token {id} revoked"))
            }
        }
    }

    /// Write a change to users, roles or grants, then reload the snapshot.
    async fn change_access(
        &self,
        change: impl FnOnce(&quarry_catalog::Catalog) -> Result<String, CatalogError> + Send + 'static,
    ) -> Result<RecordBatch, CoordinatorError> {
        let access = Arc::clone(&self.access);
        let message = blocking(move || {
            let message = change(access.catalog()).map_err(CoordinatorError::from)?;
            access.reload()?;
            Ok(message)
        })
        .await?;
        done(message)
    }

    /// Create a user with `password`, or set an existing user's: hashed (PBKDF2) and
    /// written on a blocking thread, then the snapshot reloaded.
    async fn set_password(
        &self,
        name: &str,
        password: String,
        create: bool,
    ) -> Result<(), CoordinatorError> {
        let (auth, access, user) = (
            Arc::clone(&self.auth),
            Arc::clone(&self.access),
            name.to_string(),
        );
        blocking(move || {
            let (password_hash, salt) = auth.hash(&password)?;
            let catalog = access.catalog();
            if create {
                catalog.create_user(UserRecord {
                    name: user,
                    password_hash,
                    salt,
                    roles: Vec::new(),
                })
            } else {
                catalog.modify_user(&user, |u| {
                    u.password_hash = password_hash.clone();
                    u.salt = salt.clone();
                })
            }
            .map_err(CoordinatorError::from)?;
            access.reload()
        })
        .await
        .map_err(CoordinatorError::from)
    }

    /// CREATE of something that exists: done with IF NOT EXISTS, an error without.
    fn existing(
        &self,
        kind: &str,
        name: &str,
        if_not_exists: bool,
    ) -> Result<RecordBatch, CoordinatorError> {
        if if_not_exists {
            done(format!("{} {name} already exists", capitalized(kind)))
        } else {
            Err(QuarryError::new(
                ErrorCode::AlreadyExists,
                format!("{kind} {name} already exists"),
            )
            .into())
        }
    }

    fn missing(
        &self,
        kind: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<RecordBatch, CoordinatorError> {
        if if_exists {
            done(format!("{} {name} does not exist", capitalized(kind)))
        } else {
            Err(QuarryError::not_found(format!("{kind} {name} does not exist")).into())
        }
    }

    fn require_user(&self, name: &str) -> Result<(), CoordinatorError> {
        if self.access.user_exists(name) {
            Ok(())
        } else {
            Err(QuarryError::not_found(format!("user {name} does not exist")).into())
        }
    }

    fn require_grantee(&self, grantee: &Grantee) -> Result<(), CoordinatorError> {
        match grantee.kind {
            GranteeKind::User => self.require_user(&grantee.name),
            GranteeKind::Role if self.access.role_exists(&grantee.name) => Ok(()),
            GranteeKind::Role => {
                Err(QuarryError::not_found(format!("role {} does not exist", grantee.name)).into())
            }
        }
    }

    /// The kind and catalog name of a grant's object, checking that it exists; and how
    /// messages name it.
    fn resolve_securable(
        &self,
        session: &Session,
        object: &Securable,
    ) -> Result<(SecurableKind, String, String), CoordinatorError> {
        let catalog = self.datasets.catalog();
        match object {
            Securable::System => Ok((SecurableKind::System, String::new(), "SYSTEM".to_string())),
            Securable::Source(name) => {
                if catalog.get_source(name)?.is_none() {
                    return Err(
                        QuarryError::not_found(format!("source {name} does not exist")).into(),
                    );
                }
                Ok((
                    SecurableKind::Source,
                    name.clone(),
                    format!("SOURCE {name}"),
                ))
            }
            Securable::Schema(name) => {
                if catalog.get_schema(name)?.is_none() {
                    return Err(
                        QuarryError::not_found(format!("schema {name} does not exist")).into(),
                    );
                }
                Ok((
                    SecurableKind::Schema,
                    name.clone(),
                    format!("SCHEMA {name}"),
                ))
            }
            Securable::Dataset { name, view } => {
                let reference = match name.as_slice() {
                    [table] => TableReference::bare(table.as_str()),
                    [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
                    [catalog, schema, table] => {
                        TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
                    }
                    _ => {
                        return Err(
                            QuarryError::invalid("a dataset name has at most three parts").into(),
                        );
                    }
                };
                let (schema, table) = session.dataset_name(&reference)?;
                let what = if *view { "view" } else { "table" };
                let stored = catalog.get_dataset(&schema, &table)?.ok_or_else(|| {
                    QuarryError::not_found(format!("{what} {schema}.{table} does not exist"))
                })?;
                // TABLE and VIEW both name any dataset; messages say what it is.
                let what = match stored.record.definition {
                    DatasetDefinition::View(_) => "VIEW",
                    DatasetDefinition::Table(_) => "TABLE",
                };
                Ok((
                    SecurableKind::Dataset,
                    dataset_object(&schema, &table),
                    format!("{what} {schema}.{table}"),
                ))
            }
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
