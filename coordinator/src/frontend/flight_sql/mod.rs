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

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket, decode::FlightRecordBatchStream,
};
use bytes::Bytes;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use quarry_common::QuarryError;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::access::auth::Credentials;
use crate::engine::{PreparedStatement, Session};
use crate::error::CoordinatorError;
use crate::service::QueryService;

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct FlightSqlFrontend {
    service: Arc<dyn QueryService>,
}

/// Who is calling, and the token to hand back when one was issued for this call.
struct Caller {
    session: Arc<Session>,
    new_token: Option<String>,
}

impl Caller {
    /// What the caller may see, for catalog listings.
    fn respond<T>(&self, value: T) -> Response<T> {
        let mut response = Response::new(value);
        if let Some(token) = &self.new_token
            && let Ok(header) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            response.metadata_mut().insert("authorization", header);
        }
        response
    }
}

fn status(e: QuarryError) -> Status {
    e.for_client().to_status()
}

/// The schema as the IPC bytes Flight SQL messages carry.
fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::from(CoordinatorError::encode("a schema", e))
        })?;
    Ok(message.0)
}

/// An encoder's error: the job's own error passes through, anything else is ours.
fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => CoordinatorError::encode("Flight data", other).into(),
    }
}

fn batch_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> FlightStream<FlightData> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(flight_status)
        .boxed()
}

fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::from(CoordinatorError::encode("a schema", e)))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor))
}

impl FlightSqlFrontend {
    pub fn new(service: Arc<dyn QueryService>) -> Self {
        FlightSqlFrontend { service }
    }

    /// The gRPC service, refusing messages larger than `message_bytes` either way
    /// (`--max-message-size`).
    pub fn into_service(self, message_bytes: usize) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(message_bytes)
            .max_encoding_message_size(message_bytes)
    }

    /// Authenticate a call and find its session.
    async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let credentials = Credentials::parse(header).map_err(status)?;
        let principal = self
            .service
            .authenticate(credentials)
            .await
            .map_err(status)?;
        let session = self.service.session(&principal, true);
        Ok(Caller {
            session,
            new_token: principal.issued.then_some(principal.token),
        })
    }

    /// Run SQL as a job and describe where its results are.
    async fn start_query(
        &self,
        caller: &Caller,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let job = self
            .service
            .submit(&caller.session, sql, parameters)
            .await
            .map_err(status)?;
        // The client reads the results with DoGet; a client that never does is gone.
        job.expect_reader(self.service.fetch_timeout());
        let schema = job
            .spool
            .schema()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let ticket = TicketStatementQuery {
            statement_handle: job.id.clone().into(),
        };
        let mut info = flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)?
            .with_total_records(-1)
            .with_ordered(true);
        // Which reflections answered, and how old their data is, for clients to show.
        let record = job.record();
        if let Some(as_of) = record.data_as_of_ms {
            let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(as_of as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            let metadata = serde_json::json!({
                "job_id": record.id,
                "data_as_of": when,
                "reflections": record.reflections,
            });
            info = info.with_app_metadata(metadata.to_string().into_bytes());
        }
        Ok(caller.respond(info))
    }

    /// Run SQL to completion and report its row count (for updates and DDL).
    async fn run_update(
        &self,
        session: &Arc<Session>,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<i64, Status> {
        let job = self
            .service
            .submit(session, sql, parameters)
            .await
            .map_err(status)?;
        let record = job.wait().await;
        if let Some(error) = record.error {
            return Err(QuarryError::new(
                quarry_common::ErrorCode::parse(&error.code),
                error.message,
            )
            .to_status());
        }
        // INSERT answers one `count` row: that is the update count. Other statements
        // change no rows.
        let batches: Vec<RecordBatch> = job
            .spool
            .read(0, None)
            .try_collect()
            .await
            .map_err(status)?;
        let counted = batches
            .iter()
            .filter(|b| b.num_columns() == 1 && b.schema().field(0).name() == "count")
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt64Array>()
            })
            .map(|counts| counts.iter().flatten().sum::<u64>())
            .sum::<u64>();
        Ok(counted as i64)
    }

    /// The FlightInfo of a metadata command: its result schema, and the command itself
    /// as the ticket.
    async fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(request.metadata()).await?;
        Ok(caller.respond(flight_info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )?))
    }

    /// Cancel the jobs a FlightInfo describes; only their owner (or an admin) may.
    fn cancel_job(&self, caller: &Caller, info: &FlightInfo) -> Result<bool, Status> {
        let mut cancelled = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let Ok(any) = Any::decode(ticket.ticket.as_ref()) else {
                continue;
            };
            if let Ok(Some(query)) = any.unpack::<TicketStatementQuery>()
                && let Ok(id) = std::str::from_utf8(&query.statement_handle)
            {
                cancelled |= self
                    .service
                    .cancel(&caller.session, id, "cancelled by the client")
                    .map_err(status)?;
            }
        }
        Ok(cancelled)
    }
}

/// The parameters a client bound to a prepared statement: one row.
async fn read_parameters(
    stream: PeekableFlightDataStream,
    expected: &Schema,
) -> Result<Vec<ScalarValue>, Status> {
    let batches: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from))
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read bound parameters: {e}")))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let Some(batch) = batches.into_iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    if rows > 1 {
        return Err(Status::invalid_argument(
            "bind one row of parameters per execution",
        ));
    }
    let mut values = Vec::with_capacity(batch.num_columns());
    for (i, column) in batch.columns().iter().enumerate() {
        let value = ScalarValue::try_from_array(column, 0)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let value = match expected.fields().get(i).map(|f| f.data_type()) {
            Some(target) if target != &value.data_type() && !target.is_null() => value
                .cast_to(target)
                .map_err(|e| Status::invalid_argument(format!("parameter ${}: {e}", i + 1)))?,
            _ => value,
        };
        values.push(value);
    }
    Ok(values)
}

fn handle_of(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("malformed statement handle"))
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
        let principal = self
            .service
            .authenticate(credentials)
            .await
            .map_err(status)?;
        let session = self.service.session(&principal, true);
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
        self.start_query(&caller, &query.query, None, request.into_inner())
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        let prepared = caller.session.prepared(&handle).ok_or_else(|| {
            Status::not_found(format!(
                "prepared statement {handle} does not exist in this session"
            ))
        })?;
        self.start_query(
            &caller,
            &prepared.sql,
            prepared.parameters,
            request.into_inner(),
        )
        .await
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
        let schema = job
            .spool
            .schema()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        // A client that drops the stream before its end cancels a job still running.
        let batches = job
            .watched(job.spool.read(0, None).boxed())
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
        let (dataset_schema, parameter_schema) = self
            .service
            .describe(&caller.session, &query.query)
            .await
            .map_err(status)?;
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::new(),
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        };
        let handle = caller.session.add_prepared(PreparedStatement {
            sql: query.query,
            dataset_schema,
            parameter_schema,
            parameters: None,
        });
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            ..result
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(request.metadata()).await?;
        caller
            .session
            .close_prepared(&handle_of(&query.prepared_statement_handle)?);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        let prepared = caller.session.prepared(&handle).ok_or_else(|| {
            Status::not_found(format!(
                "prepared statement {handle} does not exist in this session"
            ))
        })?;
        let values = read_parameters(request.into_inner(), &prepared.parameter_schema).await?;
        caller.session.bind(&handle, values).map_err(status)?;
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
        self.run_update(&caller.session, &command.query, None).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(request.metadata()).await?;
        let handle = handle_of(&query.prepared_statement_handle)?;
        let prepared = caller.session.prepared(&handle).ok_or_else(|| {
            Status::not_found(format!(
                "prepared statement {handle} does not exist in this session"
            ))
        })?;
        let values = read_parameters(request.into_inner(), &prepared.parameter_schema).await?;
        let parameters = (!values.is_empty())
            .then_some(values)
            .or(prepared.parameters);
        self.run_update(&caller.session, &prepared.sql, parameters)
            .await
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
        let batch = metadata::catalogs().map_err(status)?;
        Ok(caller.respond(batch_stream(batch.schema(), vec![batch])))
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
        let batch = metadata::schemas(self.service.as_ref(), &caller.session, query.into_builder())
            .map_err(status)?;
        Ok(caller.respond(batch_stream(batch.schema(), vec![batch])))
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
        let batch = metadata::tables(self.service.as_ref(), &caller.session, query.into_builder())
            .await
            .map_err(status)?;
        Ok(caller.respond(batch_stream(batch.schema(), vec![batch])))
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
        let batch = builder
            .build()
            .map_err(|e| Status::from(CoordinatorError::encode("Flight SQL metadata", e)))?;
        Ok(caller.respond(batch_stream(batch.schema(), vec![batch])))
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
        let info = metadata::sql_info().map_err(status)?;
        let batch = query
            .into_builder(info)
            .build()
            .map_err(|e| Status::from(CoordinatorError::encode("Flight SQL metadata", e)))?;
        Ok(caller.respond(batch_stream(batch.schema(), vec![batch])))
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
        let types = metadata::xdbc_types().map_err(status)?;
        let batch = query
            .into_builder(types)
            .build()
            .map_err(|e| Status::from(CoordinatorError::encode("Flight SQL metadata", e)))?;
        Ok(caller.respond(batch_stream(batch.schema(), vec![batch])))
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
        Ok(caller.respond(batch_stream(metadata::primary_keys_schema(), vec![])))
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
        Ok(caller.respond(batch_stream(metadata::foreign_keys_schema(), vec![])))
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
        Ok(caller.respond(batch_stream(metadata::foreign_keys_schema(), vec![])))
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
        Ok(caller.respond(batch_stream(metadata::foreign_keys_schema(), vec![])))
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
            session_options::SET_SESSION_OPTIONS => {
                session_options::set_options(self.service.as_ref(), &caller.session, &action.body)
                    .map_err(status)?
            }
            session_options::GET_SESSION_OPTIONS => session_options::get_options(&caller.session),
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
