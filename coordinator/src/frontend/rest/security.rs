//! Users, roles, grants and personal access tokens over REST: the same operations (and
//! the same privilege checks) as their SQL statements, which they are turned into.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quarry_catalog::{GranteeKind, Privilege};
use quarry_common::QuarryError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{json_error, ndjson};
use super::{ApiResult, AppState, Caller, parse_body};
use crate::service::SessionHandle;
use crate::sql::security::{Grantee, Securable, SecurityStatement};

/// A batch's rows as JSON objects.
pub(super) fn batch_values(batch: &arrow::array::RecordBatch) -> ApiResult<Vec<Value>> {
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
) -> ApiResult<Vec<Value>> {
    let batch = state.service.security(session, statement).await?;
    batch_values(&batch)
}

/// Rows of a system table the caller may see (`sys.users`, `sys.roles`).
pub(super) async fn system_rows(
    state: &AppState,
    session: &SessionHandle,
    table: &str,
) -> ApiResult<Value> {
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
    Ok(Value::Array(rows))
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

// ---- users ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    password: String,
}

pub(super) async fn list_users(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let users = system_rows(&state, &session, "users").await?;
    Ok(axum::Json(json!({ "users": users })).into_response())
}

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
    Ok(created(json!({ "name": new.name })))
}

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
    Ok(axum::Json(json!({ "name": name })).into_response())
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    user: String,
}

pub(super) async fn list_roles(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let roles = system_rows(&state, &session, "roles").await?;
    Ok(axum::Json(json!({ "roles": roles })).into_response())
}

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
    Ok(created(json!({ "name": new.name })))
}

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
    Ok(created(json!({ "role": role, "user": member.user })))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// `SELECT`, `INSERT`, `ALTER`, `CREATE TABLE`, `MANAGE GRANTS` or `ALL`.
    privileges: Vec<String>,
    on: ObjectRef,
    to: GranteeRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectRef {
    /// `system`, `source`, `schema`, `table` or `view`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GranteeRef {
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

pub(super) async fn list_grants(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let statement = SecurityStatement::ShowGrants { on: None, to: None };
    let grants = run(&state, &session, statement).await?;
    Ok(axum::Json(json!({ "grants": grants })).into_response())
}

pub(super) async fn grant(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let result = change_grant(&state, &session, &body, false).await?;
    Ok(created(json!({ "result": result })))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Caller(session): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let result = change_grant(&state, &session, &body, true).await?;
    Ok(axum::Json(json!({ "result": result })).into_response())
}

// ---- personal access tokens ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    name: Option<String>,
    /// `30 days`, `12h`; 30 days when absent.
    #[serde(default, rename = "expiresIn")]
    expires_in: Option<String>,
}

pub(super) async fn list_tokens(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Response> {
    let tokens = run(&state, &session, SecurityStatement::ShowTokens).await?;
    Ok(axum::Json(json!({ "tokens": tokens })).into_response())
}

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
    Ok(created(rows.into_iter().next().unwrap_or(Value::Null)))
}

pub(super) async fn delete_token(
    State(state): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    run(&state, &session, SecurityStatement::DropToken { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
