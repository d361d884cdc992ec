//! The user-facing Flight SQL service (port 32010), for ADBC/JDBC drivers, BI tools and
//! qsql. It is a separate type from the internal executor Flight service and reaches the
//! engine only through the [`QueryService`].
//!
//! Sessions are keyed by bearer token, never by cookie. With authentication on, tokens
//! come from the Basic→Bearer handshake. With it off, a caller without a token is given
//! one in an `authorization` response header, which drivers (ADBC among them) send back
//! on later calls, so `SET` and prepared statements persist across calls.

mod metadata;
mod session_options;
mod support;

use support::{
    Caller, FlightStream, flight_status, handle_of, read_parameters, schema_bytes, status,
};

use std::sync::Arc;

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_common::QuarryError;
use tonic::{Request, Response, Status, Streaming};

use crate::service::{Credentials, QueryService, SessionHandle};

/// The action that tells how far a job is.
const JOB_PROGRESS: &str = "quarry.job_progress";

/// A job's state, tasks done of planned, rows so far and time since it was submitted.
fn job_progress(
    service: &dyn QueryService,
    session: &SessionHandle,
    id: &str,
) -> Result<serde_json::Value, QuarryError> {
    let record = service.get_job(session, id)?;
    let rows = match service.live_job(session, id)? {
        Some(job) => job.rows(),
        None => record.row_count,
    };
    let now = quarry_catalog::now_ms();
    Ok(serde_json::json!({
        "state": record.state,
        "tasks_done": record.tasks_done,
        "tasks_total": record.tasks_total,
        "rows": rows,
        "elapsed_ms": record.finished_ms.unwrap_or(now).saturating_sub(record.submitted_ms),
    }))
}

pub(crate) struct FlightSqlFrontend {
    service: Arc<dyn QueryService>,
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlFrontend {
    type FlightService = FlightSqlFrontend;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<FlightStream<HandshakeResponse>>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let credentials = match Credentials::parse(header).map_err(status)? {
            Credentials::Bearer(_) if self.service.auth_enabled() => {
                return Err(Status::unauthenticated("send Basic credentials to log in"));
            }
            other => other,
        };
        let (principal, session) = self.open_session(credentials).await?;
        let token = principal.token;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let caller_token = Caller {
            session,
            new_token: Some(token),
        };
        let stream: FlightStream<HandshakeResponse> =
            futures::stream::iter(vec![Ok(reply)]).boxed();
        Ok(caller_token.respond(stream))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let job = self
            .service
            .submit(&caller.session, &query.query, None)
            .await
            .map_err(status)?;
        self.query_info(&caller, job, request.into_inner())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        let job = self
            .service
            .submit_prepared(&caller.session, &handle, None)
            .await
            .map_err(status)?;
        self.query_info(&caller, job, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let id = handle_of(&ticket.statement_handle)?;
        let job = self
            .service
            .live_job(&caller.session, &id)
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("results of job {id} are not available")))?;
        let schema = job.schema();
        // A client that drops the stream before its end cancels a job still running.
        let batches = job
            .results_for_reader()
            .map_err(|e| FlightError::from(e.to_status()));
        // Keep dictionaries, so the data matches the schema GetFlightInfo announced.
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(batches)
            .map_err(flight_status)
            .boxed();
        Ok(caller.respond(stream))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(request.metadata()).await?;
        let prepared = self
            .service
            .prepare(&caller.session, &query.query)
            .await
            .map_err(status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared.handle.into(),
            dataset_schema: schema_bytes(&prepared.dataset_schema)?,
            parameter_schema: schema_bytes(&prepared.parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        self.service.close_prepared(&caller.session, &handle);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        let parameters = self
            .service
            .prepared_parameters(&caller.session, &handle)
            .map_err(status)?;
        let values = read_parameters(request.into_inner(), &parameters).await?;
        self.service
            .bind(&caller.session, &handle, values)
            .map_err(status)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(request.metadata()).await?;
        let job = self
            .service
            .submit(&caller.session, &command.query, None)
            .await
            .map_err(status)?;
        Self::update_count(job).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        let parameters = self
            .service
            .prepared_parameters(&caller.session, &handle)
            .map_err(status)?;
        let values = read_parameters(request.into_inner(), &parameters).await?;
        // Values sent with the update win; without any, those last bound.
        let job = self
            .service
            .submit_prepared(
                &caller.session,
                &handle,
                (!values.is_empty()).then_some(values),
            )
            .await
            .map_err(status)?;
        Self::update_count(job).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        caller.rows(metadata::catalogs())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        caller.rows(metadata::schemas(
            self.service.as_ref(),
            &caller.session,
            query.into_builder(),
        ))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        caller.rows(
            metadata::tables(self.service.as_ref(), &caller.session, query.into_builder()).await,
        )
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let mut builder = query.into_builder();
        for table_type in metadata::TABLE_TYPES {
            builder.append(table_type);
        }
        caller.rows(metadata::built(builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = metadata::sql_info().map_err(status)?;
        let schema = query.clone().into_builder(info).schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        caller.rows(
            metadata::sql_info().and_then(|info| metadata::built(query.into_builder(info).build())),
        )
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let types = metadata::xdbc_types().map_err(status)?;
        let schema = query.into_builder(types).schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        caller.rows(
            metadata::xdbc_types()
                .and_then(|types| metadata::built(query.into_builder(types).build())),
        )
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &metadata::primary_keys_schema(), query)
            .await
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        Ok(caller.no_rows(metadata::primary_keys_schema()))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &metadata::foreign_keys_schema(), query)
            .await
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        Ok(caller.no_rows(metadata::foreign_keys_schema()))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &metadata::foreign_keys_schema(), query)
            .await
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        Ok(caller.no_rows(metadata::foreign_keys_schema()))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &metadata::foreign_keys_schema(), query)
            .await
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata()).await?;
        Ok(caller.no_rows(metadata::foreign_keys_schema()))
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let caller = self.caller(request.metadata()).await?;
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|e| Status::invalid_argument(format!("malformed FlightInfo: {e}")))?;
        // 1 = cancelled, 3 = not cancellable (already finished).
        let result = if self.cancel_job(&caller, &info)? {
            1
        } else {
            3
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let action = request.into_inner();
        let body: Vec<u8> = match action.r#type.as_str() {
            "CancelFlightInfo" => {
                let cancel = CancelFlightInfoRequest::decode(action.body.as_ref())
                    .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
                let info = cancel.info.unwrap_or_default();
                let status = if self.cancel_job(&caller, &info)? {
                    CancelStatus::Cancelled
                } else {
                    CancelStatus::NotCancellable
                };
                CancelFlightInfoResult::new(status).encode_to_vec()
            }
            // How far a job of the caller's is (qsql's progress line): the job id in,
            // JSON out.
            JOB_PROGRESS => {
                let id = std::str::from_utf8(&action.body)
                    .map_err(|_| Status::invalid_argument("the job id is not UTF-8"))?;
                job_progress(self.service.as_ref(), &caller.session, id)
                    .map_err(status)?
                    .to_string()
                    .into_bytes()
            }
            session_options::SET_SESSION_OPTIONS => {
                session_options::set_options(self.service.as_ref(), &caller.session, &action.body)
                    .map_err(status)?
            }
            session_options::GET_SESSION_OPTIONS => {
                session_options::get_options(self.service.as_ref(), &caller.session)
            }
            session_options::CLOSE_SESSION => {
                self.service.close_session(&caller.session);
                session_options::closed()
            }
            other => {
                return Err(status(QuarryError::invalid(format!(
                    "unknown action '{other}'"
                ))));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(caller.respond(futures::stream::iter(vec![Ok(result)]).boxed()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
