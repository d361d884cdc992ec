//! The extended protocol: Parse (statements are only classified then), Describe (a
//! statement is planned for its parameter and result types; a portal's query is started so
//! its columns are exactly those it returns), Bind with typed parameters, Execute with a
//! row limit, Sync. The statements themselves run as in `query.rs`.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{FieldDescription, NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Describe, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::ReadyForQuery;

use super::encode;
use super::query::{PgStatement, fields_of, parameter_types, rows_of, store_of};
use super::statements::Kind;
use super::{Connection, lock};
use crate::service::JobHandle;

/// Parses statements for the extended protocol, in its connection's session. pgwire asks
/// for it by `Arc`, apart from the connection; it holds the connection weakly so as not to
/// keep it alive.
pub(crate) struct Parser(pub(super) std::sync::Weak<Connection>);

#[async_trait::async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let connection = self
            .0
            .upgrade()
            .ok_or_else(|| encode::fatal("08006", "the connection is closing"))?;
        Ok(Some(connection.statement(sql)))
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(parameter_types(&StoredStatement::new(
            String::new(),
            statement.clone(),
            Vec::new(),
        )))
    }

    fn get_result_schema(
        &self,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        fields_of(None, statement, format.unwrap_or(&Format::UnifiedText))
    }
}

/// Send a description: the columns, or NoData for a statement without rows.
async fn send_fields<C>(client: &mut C, fields: &[FieldInfo]) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if fields.is_empty() {
        client
            .send(PgWireBackendMessage::NoData(NoData::new()))
            .await?;
    } else {
        let description = RowDescription::new(fields.iter().map(FieldDescription::from).collect());
        client
            .send(PgWireBackendMessage::RowDescription(description))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Parser(self.me.clone()))
    }

    /// Statement descriptions name their parameters and then say NoData when the statement
    /// returns no rows (pgwire's default sends an empty row description instead).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let statement = client.portal_store().get_statement(name);
                if let Some(Entry::Value(statement)) = &statement {
                    self.described(&statement.statement).await?;
                }
                let (parameters, fields) = match statement {
                    Some(Entry::Value(statement)) => (
                        parameter_types(&statement),
                        fields_of(store_of(client), &statement.statement, &Format::UnifiedText)?,
                    ),
                    Some(Entry::Empty) => (Vec::new(), Vec::new()),
                    None => return Err(PgWireError::StatementNotFound(name.to_string())),
                };
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(parameters.iter().map(Type::oid).collect()),
                    ))
                    .await?;
                send_fields(client, &fields).await
            }
            TARGET_TYPE_BYTE_PORTAL => {
                let portal = client.portal_store().get_portal(name);
                let fields = match portal {
                    // A query's columns are known for sure once it runs: start it now
                    // (with the portal's parameters); Execute reads from this job.
                    Some(Entry::Value(portal))
                        if portal.statement.statement.kind == Kind::Query
                            && portal.statement.statement.result.is_none()
                            && matches!(
                                *portal.state().lock().await,
                                PortalExecutionState::Initial
                            ) =>
                    {
                        let parameters = self.parameters(&portal).await?;
                        let job = self
                            .submit(&portal.statement.statement.sql, parameters)
                            .await?;
                        let fields = encode::fields(&job.schema(), &portal.result_column_format)?;
                        lock(&self.started).insert(portal.name.clone(), job);
                        fields.to_vec()
                    }
                    Some(Entry::Value(portal)) => fields_of(
                        store_of(client),
                        &portal.statement.statement,
                        &portal.result_column_format,
                    )?,
                    Some(Entry::Empty) => Vec::new(),
                    None => return Err(PgWireError::PortalNotFound(name.to_string())),
                };
                send_fields(client, &fields).await
            }
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    /// A Sync ends the client's batch: a query started for a Describe but never executed
    /// is cancelled.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let abandoned: Vec<JobHandle> = lock(&self.started).drain().map(|(_, job)| job).collect();
        for job in abandoned {
            job.cancel("the client never read its results");
        }
        client.portal_store().rm_portal(DEFAULT_NAME);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                client.transaction_status(),
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<PgStatement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(DescribeStatementResponse::new(
            parameter_types(target),
            fields_of(None, &target.statement, &Format::UnifiedText)?,
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<PgStatement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(DescribePortalResponse::new(fields_of(
            store_of(client),
            &target.statement.statement,
            &target.result_column_format,
        )?))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(job) = lock(&self.started).remove(&portal.name) {
            return Ok(Response::Query(rows_of(
                &job,
                &portal.result_column_format,
            )?));
        }
        let parameters = self.parameters(portal).await?;
        self.execute(
            store_of(client),
            &portal.statement.statement,
            parameters,
            &portal.result_column_format,
        )
        .await
    }
}
