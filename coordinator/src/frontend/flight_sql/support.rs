//! What the Flight SQL handlers share: who is calling, turning jobs into FlightInfo and
//! update counts, reading bound parameters, and mapping errors to gRPC statuses.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
    decode::FlightRecordBatchStream,
};
use bytes::Bytes;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use quarry_common::QuarryError;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::error::CoordinatorError;
use crate::service::{Credentials, Frontend, JobHandle, Principal, QueryService, SessionHandle};

use super::FlightSqlFrontend;

pub(super) type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Who is calling, and the token to hand back when one was issued for this call.
pub(super) struct Caller {
    pub(super) session: SessionHandle,
    pub(super) new_token: Option<String>,
}

impl Caller {
    /// What the caller may see, for catalog listings.
    /// A metadata command's rows (or why there are none), as this caller's stream.
    pub(super) fn rows(
        &self,
        batch: Result<RecordBatch, QuarryError>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let batch = batch.map_err(status)?;
        Ok(self.respond(batch_stream(batch.schema(), vec![batch])))
    }

    /// An answer without rows: metadata Quarry keeps none of (keys).
    pub(super) fn no_rows(&self, schema: SchemaRef) -> Response<FlightStream<FlightData>> {
        self.respond(batch_stream(schema, vec![]))
    }

    pub(super) fn respond<T>(&self, value: T) -> Response<T> {
        let mut response = Response::new(value);
        if let Some(token) = &self.new_token
            && let Ok(header) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            response.metadata_mut().insert("authorization", header);
        }
        response
    }
}

pub(super) fn status(e: QuarryError) -> Status {
    e.for_client().to_status()
}

/// The schema as the IPC bytes Flight SQL messages carry.
pub(super) fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::from(CoordinatorError::encode("a schema", e))
        })?;
    Ok(message.0)
}

/// An encoder's error: the job's own error passes through, anything else is ours.
pub(super) fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => CoordinatorError::encode("Flight data", other).into(),
    }
}

pub(super) fn batch_stream(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> FlightStream<FlightData> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(flight_status)
        .boxed()
}

pub(super) fn flight_info(
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
    pub(crate) fn new(service: Arc<dyn QueryService>) -> Self {
        FlightSqlFrontend { service }
    }

    /// The gRPC service, refusing messages larger than `message_bytes` either way
    /// (`--max-message-size`).
    pub(crate) fn into_service(self, message_bytes: usize) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(message_bytes)
            .max_encoding_message_size(message_bytes)
    }

    /// Check credentials; the principal and its session (kept under its token).
    pub(super) async fn open_session(
        &self,
        credentials: Credentials,
    ) -> Result<(Principal, SessionHandle), Status> {
        let principal = self
            .service
            .authenticate(credentials)
            .await
            .map_err(status)?;
        let session = self.service.session(&principal, true, Frontend::FlightSql);
        Ok((principal, session))
    }

    /// Authenticate a call and find its session.
    pub(super) async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let credentials = Credentials::parse(header).map_err(status)?;
        let (principal, session) = self.open_session(credentials).await?;
        Ok(Caller {
            session,
            new_token: principal.issued.then_some(principal.token),
        })
    }

    /// Describe where a started job's results are.
    pub(super) fn query_info(
        &self,
        caller: &Caller,
        job: JobHandle,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        // The client reads the results with DoGet; a client that never does is gone.
        job.expect_reader(self.service.fetch_timeout());
        let schema = job.schema();
        let ticket = TicketStatementQuery {
            statement_handle: job.id().to_string().into(),
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

    /// Run a job to completion and report its row count (for updates and DDL).
    pub(super) async fn update_count(job: JobHandle) -> Result<i64, Status> {
        job.finished().await.map_err(status)?;
        // INSERT answers one `count` row: that is the update count. Other statements
        // change no rows.
        let batches: Vec<RecordBatch> = job.results(0, None).try_collect().await.map_err(status)?;
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
    pub(super) async fn metadata_info(
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
    pub(super) fn cancel_job(&self, caller: &Caller, info: &FlightInfo) -> Result<bool, Status> {
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
pub(super) async fn read_parameters(
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

pub(super) fn handle_of(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("malformed statement handle"))
}
