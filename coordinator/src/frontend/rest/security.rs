//! Users, roles, grants and personal access tokens over REST: the same operations (and
//! the same privilege checks) as their SQL statements, which they are turned into.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quarry_catalog::{GranteeKind, Privilege};
use quarry_common::QuarryError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::encode::{json_error, ndjson};
use super::{ApiResult, AppState, Caller, ErrorBody, Named, parse_body, with_status};
use crate::service::SessionHandle;
use crate::sql::security::{Grantee, Securable, SecurityStatement};

/// Rows of a system table or a statement's answer, as JSON objects keyed by column.
pub(super) type Rows = Vec<Value>;

/// A batch's rows as JSON objects.
pub(super) fn batch_values(batch: &arrow::array::RecordBatch) -> ApiResult<Rows> {
    ndjson(batch)?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| json_error(e).into()))
        .collect()
}

/// Run a statement and answer its rows as JSON objects.
async fn run(
    state: &AppState,
    session: &SessionHandle,
    statement: SecurityStatement,
) -> ApiResult<Rows> {
    let batch = state.service.security(session, statement).await?;
    batch_values(&batch)
}

/// Rows of a system table the caller may see (`sys.users`, `sys.roles`).
pub(super) async fn system_rows(
    state: &AppState,
    session: &SessionHandle,
    table: &str,
) -> ApiResult<Rows> {
    let job = state
        .service
        .submit(session, &format!("SELECT * FROM sys.{table}"), None)
        .await?;
    let batches: Vec<arrow::array::RecordBatch> =
        futures::TryStreamExt::try_collect(job.results(0, None)).await?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(batch_values(batch)?);
    }
    Ok(rows)
}

#[derive(Serialize, ToSchema)]
pub(super) struct UserList {
    /// Rows of `sys.users`.
    #[schema(value_type = Vec<Object>)]
    users: Rows,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RoleList {
    /// Rows of `sys.roles`.
    #[schema(value_type = Vec<Object>)]
    roles: Rows,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Membership {
    role: String,
    user: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct GrantList {
    /// Rows of `SHOW GRANTS`.
    #[schema(value_type = Vec<Object>)]
    grants: Rows,
}

#[derive(Serialize, ToSchema)]
pub(super) struct GrantResult {
    /// What the statement answered.
    #[schema(value_type = Object)]
    result: Value,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TokenList {
    /// Rows of `SHOW TOKENS` (never the tokens themselves).
    #[schema(value_type = Vec<Object>)]
    tokens: Rows,
}

// ---- users ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    password: String,
}

/// Users (non-admins: themselves).
#[utoipa::path(get, path = "/api/v1/users", tag = "security", responses((status = 200, body = UserList)))]
pub(super) async fn list_users(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let users = system_rows(&state, &session, "users").await?;
    Ok(axum::Json(UserList { users }).into_response())
}

/// Create a user (MANAGE GRANTS).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "security",
    request_body = NewUser,
    responses((status = 201, body = Named), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let new: NewUser = parse_body(&body)?;
    let statement = SecurityStatement::CreateUser {
        name: new.name.clone(),
        password: new.password,
        if_not_exists: false,
    };
    run(&state, &session, statement).await?;
    Ok(with_status(StatusCode::CREATED, Named { name: new.name }))
}

/// Set a user's password.
#[utoipa::path(
    put,
    path = "/api/v1/users/{name}",
    tag = "security",
    params(("name" = String, Path, description = "The user's name")),
    request_body = PasswordChange,
    responses((status = 200, body = Named), (status = 404, body = ErrorBody))
)]
pub(super) async fn update_user(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let change: PasswordChange = parse_body(&body)?;
    let statement = SecurityStatement::AlterUser {
        name: name.clone(),
        password: change.password,
    };
    run(&state, &session, statement).await?;
    Ok(axum::Json(Named { name }).into_response())
}

/// Drop a user.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{name}",
    tag = "security",
    params(("name" = String, Path, description = "The user's name")),
    responses((status = 204, description = "Dropped"), (status = 404, body = ErrorBody))
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let statement = SecurityStatement::DropUser {
        name,
        if_exists: false,
    };
    run(&state, &session, statement).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- roles ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRole {
    name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Member {
    user: String,
}

/// Roles and their members.
#[utoipa::path(get, path = "/api/v1/roles", tag = "security", responses((status = 200, body = RoleList)))]
pub(super) async fn list_roles(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let roles = system_rows(&state, &session, "roles").await?;
    Ok(axum::Json(RoleList { roles }).into_response())
}

/// Create a role.
#[utoipa::path(
    post,
    path = "/api/v1/roles",
    tag = "security",
    request_body = NewRole,
    responses((status = 201, body = Named), (status = 409, body = ErrorBody))
)]
pub(super) async fn create_role(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let new: NewRole = parse_body(&body)?;
    let statement = SecurityStatement::CreateRole {
        name: new.name.clone(),
        if_not_exists: false,
    };
    run(&state, &session, statement).await?;
    Ok(with_status(StatusCode::CREATED, Named { name: new.name }))
}

/// Drop a role.
#[utoipa::path(
    delete,
    path = "/api/v1/roles/{name}",
    tag = "security",
    params(("name" = String, Path, description = "The role's name")),
    responses((status = 204, description = "Dropped"), (status = 404, body = ErrorBody))
)]
pub(super) async fn delete_role(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let statement = SecurityStatement::DropRole {
        name,
        if_exists: false,
    };
    run(&state, &session, statement).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Grant the role to a user.
#[utoipa::path(
    post,
    path = "/api/v1/roles/{name}/members",
    tag = "security",
    params(("name" = String, Path, description = "The role's name")),
    request_body = Member,
    responses((status = 201, body = Membership), (status = 404, body = ErrorBody))
)]
pub(super) async fn add_member(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(role): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let member: Member = parse_body(&body)?;
    let statement = SecurityStatement::GrantRole {
        role: role.clone(),
        user: member.user.clone(),
        revoke: false,
    };
    run(&state, &session, statement).await?;
    let body = Membership {
        role,
        user: member.user,
    };
    Ok(with_status(StatusCode::CREATED, body))
}

/// Revoke the role from a user.
#[utoipa::path(
    delete,
    path = "/api/v1/roles/{name}/members/{user}",
    tag = "security",
    params(("name" = String, Path, description = "The role's name"), ("user" = String, Path, description = "The member's name")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody))
)]
pub(super) async fn remove_member(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path((role, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let statement = SecurityStatement::GrantRole {
        role,
        user,
        revoke: true,
    };
    run(&state, &session, statement).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- grants ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    /// `SELECT`, `INSERT`, `ALTER`, `CREATE TABLE`, `MANAGE GRANTS` or `ALL`.
    privileges: Vec<String>,
    on: ObjectRef,
    to: GranteeRef,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ObjectRef {
    /// `system`, `source`, `schema`, `table` or `view`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GranteeRef {
    /// `user` or `role`.
    #[serde(rename = "type")]
    kind: String,
    name: String,
}

fn privileges(names: &[String]) -> Result<Vec<Privilege>, QuarryError> {
    let mut out = Vec::new();
    for name in names {
        let normal = name.trim().to_ascii_uppercase().replace('_', " ");
        match normal.as_str() {
            "ALL" | "ALL PRIVILEGES" => out.extend(Privilege::ALL),
            other => match Privilege::ALL.iter().find(|p| p.as_sql() == other) {
                Some(p) => out.push(*p),
                None => {
                    return Err(QuarryError::invalid(format!(
                        "unknown privilege '{name}': use SELECT, INSERT, ALTER, CREATE TABLE, MANAGE GRANTS or ALL"
                    )));
                }
            },
        }
    }
    if out.is_empty() {
        return Err(QuarryError::invalid("name at least one privilege"));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn securable(object: &ObjectRef) -> Result<Securable, QuarryError> {
    let name = || {
        object.name.clone().ok_or_else(|| {
            QuarryError::invalid(format!("a grant on a {} needs its name", object.kind))
        })
    };
    match object.kind.to_ascii_lowercase().as_str() {
        "system" => Ok(Securable::System),
        "source" => Ok(Securable::Source(name()?)),
        "schema" => Ok(Securable::Schema(name()?)),
        kind @ ("table" | "view") => Ok(Securable::Dataset {
            name: name()?.split('.').map(str::to_string).collect(),
            view: kind == "view",
        }),
        other => Err(QuarryError::invalid(format!(
            "unknown object type '{other}': use system, source, schema, table or view"
        ))),
    }
}

fn grantee(to: &GranteeRef) -> Result<Grantee, QuarryError> {
    let kind = match to.kind.to_ascii_lowercase().as_str() {
        "user" => GranteeKind::User,
        "role" => GranteeKind::Role,
        other => {
            return Err(QuarryError::invalid(format!(
                "unknown grantee type '{other}': use user or role"
            )));
        }
    };
    Ok(Grantee {
        kind,
        name: to.name.clone(),
    })
}

async fn change_grant(
    state: &AppState,
    session: &SessionHandle,
    body: &Bytes,
    revoke: bool,
) -> ApiResult<Value> {
    let grant: GrantBody = parse_body(body)?;
    let statement = SecurityStatement::Grant {
        privileges: privileges(&grant.privileges)?,
        object: securable(&grant.on)?,
        grantee: grantee(&grant.to)?,
        revoke,
    };
    let rows = run(state, session, statement).await?;
    Ok(rows
        .first()
        .and_then(|r| r.get("result").cloned())
        .unwrap_or(Value::Null))
}

/// Grants (non-admins: their own and their roles').
#[utoipa::path(get, path = "/api/v1/grants", tag = "security", responses((status = 200, body = GrantList)))]
pub(super) async fn list_grants(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let statement = SecurityStatement::ShowGrants { on: None, to: None };
    let grants = run(&state, &session, statement).await?;
    Ok(axum::Json(GrantList { grants }).into_response())
}

/// Grant privileges.
#[utoipa::path(
    post,
    path = "/api/v1/grants",
    tag = "security",
    request_body = GrantBody,
    responses((status = 201, body = GrantResult), (status = 403, body = ErrorBody))
)]
pub(super) async fn grant(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let result = change_grant(&state, &session, &body, false).await?;
    Ok(with_status(StatusCode::CREATED, GrantResult { result }))
}

/// Revoke privileges.
#[utoipa::path(
    post,
    path = "/api/v1/grants/revoke",
    tag = "security",
    request_body = GrantBody,
    responses((status = 200, body = GrantResult), (status = 403, body = ErrorBody))
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let result = change_grant(&state, &session, &body, true).await?;
    Ok(axum::Json(GrantResult { result }).into_response())
}

// ---- personal access tokens ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    #[serde(default)]
    name: Option<String>,
    /// `30 days`, `12h`; 30 days when absent.
    #[serde(default, rename = "expiresIn")]
    expires_in: Option<String>,
}

/// Personal access tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "security", responses((status = 200, body = TokenList)))]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let tokens = run(&state, &session, SecurityStatement::ShowTokens).await?;
    Ok(axum::Json(TokenList { tokens }).into_response())
}

/// Create a personal access token; the response shows it once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "security",
    request_body(content = Option<NewToken>, description = "Optional: a name and a lifetime"),
    responses((status = 201, description = "The token, shown this once", body = Object))
)]
pub(super) async fn create_token(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let new: NewToken = if body.is_empty() {
        NewToken {
            name: None,
            expires_in: None,
        }
    } else {
        parse_body(&body)?
    };
    let statement = SecurityStatement::CreateToken {
        name: new.name,
        expires_in: new.expires_in,
    };
    let rows = run(&state, &session, statement).await?;
    let token = rows.into_iter().next().unwrap_or(Value::Null);
    Ok(with_status(StatusCode::CREATED, token))
}

/// Revoke a personal access token.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "security",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody))
)]
pub(super) async fn delete_token(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    run(&state, &session, SecurityStatement::DropToken { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
