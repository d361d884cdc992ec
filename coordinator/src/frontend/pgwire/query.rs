//! Statements over the PostgreSQL protocol: the simple protocol (a query string of one or
//! more statements, each run and answered before the next starts) and the extended one
//! (parse, bind with typed parameters, describe, execute with a row limit). Rows stream
//! from the job as the client reads them; a portal with a row limit or a cursor holds the
//! rest of the stream until the client fetches more.
//!
//! Catalog queries that PostgreSQL clients send are rewritten first (`catalog_sql.rs`).

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    SimpleQueryHandler, send_execution_response, send_query_response, send_ready_for_query,
};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::simplequery::Query;

use super::catalog_sql;
use super::encode::{self, pg_error, protocol_error};
use super::statements::{self, Kind, Local};
use super::{Connection, lock};
use crate::service::JobHandle;
use crate::service::SETTING_DEFAULTS;

/// A statement as a client parsed it: the SQL the engine runs and what kind it is. Its
/// result and parameter schemas are planned for only when a client asks to describe it
/// (psycopg describes portals, not statements, so most statements are planned once: when
/// they run). A cursor's statement knows its result from the job it started.
#[derive(Debug, Clone)]
pub(crate) struct PgStatement {
    pub(super) sql: String,
    pub(super) kind: Kind,
    pub(super) result: Option<SchemaRef>,
    pub(super) described: Arc<tokio::sync::OnceCell<(SchemaRef, SchemaRef)>>,
}

pub(super) type Store = MemPortalStore<PgStatement>;

/// The connection's statements and portals (cursors live there as portals).
pub(super) fn store_of<C: ClientPortalStore>(client: &C) -> Option<&Store>
where
    C::PortalStore: PortalStore,
{
    client.portal_store().as_any().downcast_ref::<Store>()
}

/// A PostgreSQL setting's value before the client changes it: the session's own, or the
/// server's default.
fn default_setting(name: &str, connection: &Connection) -> Option<String> {
    let session = || lock(&connection.session).clone();
    match name {
        "search_path" => Some(connection.service.default_schema(&session()?)),
        "session_authorization" => Some(connection.service.access(&session()?).user.clone()),
        "is_superuser" => {
            let admin = connection.service.access(&session()?).admin;
            Some(if admin { "on" } else { "off" }.to_string())
        }
        _ => SETTING_DEFAULTS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| value.to_string()),
    }
}

impl Connection {
    /// A statement of the client's.
    pub(super) fn statement(&self, sql: &str) -> PgStatement {
        let kind = statements::classify(sql);
        let sql = match kind {
            Kind::Query => catalog_sql::adapt(sql),
            _ => sql.to_string(),
        };
        PgStatement {
            sql,
            kind,
            result: None,
            described: Arc::default(),
        }
    }

    /// The result and parameter schemas of a statement the engine runs (planned, not
    /// run, once per statement); none for those answered here.
    pub(super) async fn described(
        &self,
        statement: &PgStatement,
    ) -> PgWireResult<Option<(SchemaRef, SchemaRef)>> {
        if matches!(statement.kind, Kind::Local(_)) {
            return Ok(None);
        }
        let session = self.session()?;
        let described = statement
            .described
            .get_or_try_init(|| async {
                self.service
                    .describe(&session, &statement.sql)
                    .await
                    .map_err(pg_error)
            })
            .await?;
        Ok(Some(described.clone()))
    }

    /// The values a Bind gave, typed for the engine: by the types the client sent, and
    /// where it sent none, by the types the engine infers for the statement.
    pub(super) async fn parameters(
        &self,
        portal: &Portal<PgStatement>,
    ) -> PgWireResult<Option<Vec<ScalarValue>>> {
        let given = portal.parameter_len();
        if given == 0 {
            return Ok(None);
        }
        let stored = &portal.statement;
        let typed_by_client = (0..given).all(|i| {
            stored
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .is_some_and(|t| t != Type::UNKNOWN)
        });
        let inferred = if typed_by_client {
            None
        } else {
            self.described(&stored.statement).await?.map(|(_, p)| p)
        };
        let mut types: Vec<Option<&DataType>> = vec![None; given];
        if let Some(schema) = &inferred {
            for (index, data_type) in placeholders(schema) {
                match types.get_mut(index) {
                    Some(slot) => *slot = Some(data_type).filter(|t| **t != DataType::Null),
                    None => {
                        return Err(protocol_error(
                            "08P01",
                            format!(
                                "bind message supplies {given} parameters, but the statement uses ${}",
                                index + 1
                            ),
                        ));
                    }
                }
            }
        }
        match arrow_pg::datatypes::df::deserialize_parameters(portal, &types)? {
            ParamValues::List(values) => Ok(Some(values.into_iter().map(|v| v.value).collect())),
            ParamValues::Map(_) => Err(protocol_error(
                "08P01",
                "parameters are positional ($1, $2, ...)",
            )),
        }
    }

    pub(super) async fn submit(
        &self,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> PgWireResult<JobHandle> {
        let session = self.session()?;
        let job = self
            .service
            .submit(&session, sql, parameters)
            .await
            .map_err(pg_error)?;
        *lock(&self.running) = Some((session, job.id().to_string()));
        Ok(job)
    }

    /// Run a statement; rows are encoded in `format`.
    pub(super) async fn execute(
        &self,
        store: Option<&Store>,
        statement: &PgStatement,
        parameters: Option<Vec<ScalarValue>>,
        format: &Format,
    ) -> PgWireResult<Response> {
        match &statement.kind {
            Kind::Query => {
                let job = self.submit(&statement.sql, parameters).await?;
                Ok(Response::Query(rows_of(&job, format)?))
            }
            Kind::Command(command) => {
                let job = self.submit(&statement.sql, parameters).await?;
                let record = job.finished().await.map_err(pg_error)?;
                let mut tag = Tag::new(&command.tag);
                if command.counts_rows {
                    tag = tag.with_rows(
                        rows_written(&job)
                            .await
                            .unwrap_or(record.row_count as usize),
                    );
                }
                Ok(Response::Execution(tag))
            }
            Kind::Local(local) => self.local(store, local).await,
        }
    }

    /// Answer a statement this door handles itself.
    async fn local(&self, store: Option<&Store>, local: &Local) -> PgWireResult<Response> {
        let execution = |tag: &str| Ok(Response::Execution(Tag::new(tag)));
        match local {
            Local::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Local::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Local::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Local::Savepoint(tag) => execution(tag),
            Local::Discard => {
                if let Some(store) = store {
                    store.clear_portals();
                }
                lock(&self.settings).clear();
                execution("DISCARD ALL")
            }
            Local::Set { name, value } => {
                if name == "search_path"
                    && let Some(schema) = value
                        .split(',')
                        .map(str::trim)
                        .find(|s| !s.is_empty() && *s != "$user" && *s != "pg_catalog")
                {
                    // PostgreSQL accepts a path naming schemas that do not exist.
                    let session = self.session()?;
                    let _ = self.service.use_schema(&session, schema);
                }
                lock(&self.settings).insert(name.clone(), value.clone());
                execution("SET")
            }
            Local::Reset(name) => {
                if name == "all" {
                    lock(&self.settings).clear();
                } else {
                    lock(&self.settings).remove(name);
                }
                execution("RESET")
            }
            Local::Show(name) => {
                let value = lock(&self.settings)
                    .get(name)
                    .cloned()
                    .or_else(|| default_setting(name, self))
                    .ok_or_else(|| {
                        protocol_error(
                            "42704",
                            format!("unrecognized configuration parameter \"{name}\""),
                        )
                    })?;
                Ok(Response::Query(encode::text_result(name, vec![value])?))
            }
            Local::Declare { cursor, query } => {
                let store = store.ok_or_else(no_cursors)?;
                let statement = self.statement(query);
                if statement.kind != Kind::Query {
                    return Err(protocol_error(
                        "42601",
                        "DECLARE CURSOR can only be used with a query",
                    ));
                }
                let job = self.submit(&statement.sql, None).await?;
                let rows = rows_of(&job, &Format::UnifiedText)?;
                let statement = PgStatement {
                    result: Some(job.schema()),
                    ..statement
                };
                let portal = Portal::new_cursor(
                    cursor.clone(),
                    Arc::new(StoredStatement::new(cursor.clone(), statement, Vec::new())),
                );
                portal.start(rows).await;
                store.put_portal(Arc::new(portal));
                execution("DECLARE CURSOR")
            }
            Local::Fetch {
                cursor,
                count,
                skip,
            } => {
                let store = store.ok_or_else(no_cursors)?;
                let Some(Entry::Value(portal)) = store.get_portal(cursor) else {
                    return Err(protocol_error(
                        "34000",
                        format!("cursor \"{cursor}\" does not exist"),
                    ));
                };
                // A count of 0 fetches everything left.
                let fetched = portal.fetch(count.unwrap_or(0)).await?;
                let mut response = fetched.response;
                if *skip {
                    let mut moved = 0;
                    while response.data_rows().next().await.is_some() {
                        moved += 1;
                    }
                    return Ok(Response::Execution(Tag::new("MOVE").with_rows(moved)));
                }
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            Local::Close(cursor) => {
                let store = store.ok_or_else(no_cursors)?;
                match cursor {
                    Some(name) => store.rm_portal(name),
                    None => store.clear_portals(),
                }
                execution("CLOSE CURSOR")
            }
            Local::Ignored(tag) if tag.is_empty() => Ok(Response::EmptyQuery),
            Local::Ignored(tag) => execution(tag),
        }
    }
}

/// The columns a statement answers, in `format` (none for commands).
pub(super) fn fields_of(
    store: Option<&Store>,
    statement: &PgStatement,
    format: &Format,
) -> PgWireResult<Vec<FieldInfo>> {
    match &statement.kind {
        Kind::Query => match statement
            .result
            .as_ref()
            .or_else(|| statement.described.get().map(|(r, _)| r))
        {
            Some(schema) => Ok(encode::fields(schema, format)?.to_vec()),
            None => Ok(Vec::new()),
        },
        Kind::Local(Local::Show(name)) => Ok(encode::fields(
            &Schema::new(vec![arrow::datatypes::Field::new(
                name.as_str(),
                DataType::Utf8,
                true,
            )]),
            format,
        )?
        .to_vec()),
        Kind::Local(Local::Fetch {
            cursor,
            skip: false,
            ..
        }) => {
            let portal = store.and_then(|s| s.get_portal(cursor));
            match portal {
                Some(Entry::Value(portal)) => {
                    fields_of(None, &portal.statement.statement, &Format::UnifiedText)
                }
                _ => Ok(Vec::new()),
            }
        }
        _ => Ok(Vec::new()),
    }
}

/// Parameter types of a statement: the client's where it gave them, else the engine's.
pub(super) fn parameter_types(statement: &StoredStatement<PgStatement>) -> Vec<Type> {
    let mut ours: Vec<Type> = Vec::new();
    if let Some((_, schema)) = statement.statement.described.get() {
        for (index, data_type) in placeholders(schema) {
            if ours.len() <= index {
                ours.resize(index + 1, Type::TEXT);
            }
            ours[index] = match data_type {
                DataType::Null => Type::TEXT,
                other => arrow_pg::datatypes::into_pg_type(other).unwrap_or(Type::TEXT),
            };
        }
    }
    let count = ours.len().max(statement.parameter_types.len());
    (0..count)
        .map(|i| {
            statement
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| ours.get(i).cloned())
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

/// The placeholders of a parameter schema by position (`$3` is 2) with their types.
fn placeholders(schema: &Schema) -> Vec<(usize, &DataType)> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let index = f
                .name()
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .unwrap_or(i);
            (index, f.data_type())
        })
        .collect()
}

fn no_cursors() -> PgWireError {
    protocol_error("0A000", "cursors are not available on this connection")
}

/// A job's rows as a PostgreSQL result, streamed as the client reads.
pub(super) fn rows_of(job: &JobHandle, format: &Format) -> PgWireResult<QueryResponse> {
    let fields = encode::fields(&job.schema(), format)?;
    let rows = encode::rows(Arc::clone(&fields), job.results_for_reader());
    Ok(QueryResponse::new(fields, rows))
}

/// The count a write statement's result reports (its first value), if it has one.
async fn rows_written(job: &JobHandle) -> Option<usize> {
    let mut results = job.results(0, Some(1));
    let batch = results.next().await?.ok()?;
    let column = batch.columns().first()?;
    let counts = arrow::compute::cast(column, &DataType::UInt64).ok()?;
    let counts = counts
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()?;
    (!counts.is_empty() && counts.is_valid(0)).then(|| counts.value(0) as usize)
}

/// Send one statement's response in the simple protocol; errors are for the caller.
async fn send_response<C>(
    client: &mut C,
    response: Response,
    status: &mut pgwire::messages::response::TransactionStatus,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match response {
        Response::EmptyQuery => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        Response::Query(results) => send_query_response(client, results, true).await?,
        Response::Execution(tag) => send_execution_response(client, tag).await?,
        Response::TransactionStart(tag) => {
            send_execution_response(client, tag).await?;
            *status = status.to_in_transaction_state();
        }
        Response::TransactionEnd(tag) => {
            send_execution_response(client, tag).await?;
            *status = status.to_idle_state();
        }
        Response::Error(e) => return Err(PgWireError::UserError(e)),
        Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
            return Err(protocol_error(
                "0A000",
                "COPY over the PostgreSQL protocol is not supported",
            ));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl SimpleQueryHandler for Connection {
    /// Each statement of the string is run and answered before the next one starts; the
    /// first error ends the string, as in PostgreSQL.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut status = client.transaction_status();
        let statements = statements::split(&query.query);
        if statements.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for sql in statements {
            let statement = self.statement(&sql);
            let response = self
                .execute(store_of(client), &statement, None, &Format::UnifiedText)
                .await;
            let sent = match response {
                Ok(response) => send_response(client, response, &mut status).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => {}
                Err(e @ PgWireError::IoError(_)) => return Err(e),
                Err(e) => {
                    let info: ErrorInfo = e.into();
                    client
                        .feed(PgWireBackendMessage::ErrorResponse(info.into()))
                        .await?;
                    status = status.to_error_state();
                    break;
                }
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await?;
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` runs statements one at a time; this answers a single one.
        let statement = self.statement(query);
        let response = self
            .execute(store_of(client), &statement, None, &Format::UnifiedText)
            .await?;
        Ok(vec![response])
    }
}
