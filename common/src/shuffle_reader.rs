//! `ShuffleReaderExec`: the leaf that reads a finished stage's output.
//!
//! Partition `p` of the reader is the concatenation of the pieces listed for `p`: for a
//! hash exchange, output partition `p` of every producer task; for a merge or coalesce
//! exchange, the single output of producer task `p`. Pieces on this executor are read
//! from its exchange store directly; the rest are fetched with Flight `do_get`.

use std::fmt;
use std::sync::Arc;
use tracing::Instrument;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::Ticket;
use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryFutureExt, TryStreamExt};
use prost::Message;

use crate::activity::TaskActivity;
use crate::flight_channels::{FlightChannels, LeasedStream};
use crate::protocol::ExchangeTicket;

/// Where one piece of a shuffled partition lives.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct ShuffleLocation {
    #[prost(string, tag = "1")]
    pub executor_id: String,
    #[prost(string, tag = "2")]
    pub endpoint: String,
    #[prost(message, optional, tag = "3")]
    pub ticket: Option<ExchangeTicket>,
    /// The piece itself (an Arrow IPC stream) when its task sent it back with its result:
    /// read from here, with no fetch, wherever its executor is.
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub inline: Option<bytes::Bytes>,
}

/// Reads exchange pieces held by the executor this plan runs on, without a network hop.
pub trait LocalExchange: Send + Sync + fmt::Debug {
    fn executor_id(&self) -> &str;
    /// The batches of one piece, or None when this executor does not hold it.
    fn read(
        &self,
        ticket: &ExchangeTicket,
    ) -> Option<Result<BoxStream<'static, Result<RecordBatch>>>>;
}

/// Finds a piece again after its executor went away (the producer is recomputed).
#[async_trait]
pub trait PieceRecovery: Send + Sync + fmt::Debug {
    async fn relocate(&self, failed: &ShuffleLocation) -> Result<ShuffleLocation>;
}

/// How a process reaches exchange data: installed as a `SessionConfig` extension.
#[derive(Debug, Default)]
pub struct ExchangeAccess {
    pub channels: Arc<FlightChannels>,
    pub local: Option<Arc<dyn LocalExchange>>,
    /// With recovery, each piece is read whole before any of it is passed on, so a piece
    /// that fails half-way can be read again elsewhere without duplicating rows. The
    /// coordinator reads the last stage this way; executors instead retry whole tasks.
    pub recovery: Option<Arc<dyn PieceRecovery>>,
    /// Where a task notes the pieces it has open (executors only).
    pub activity: Option<Arc<TaskActivity>>,
}

/// How many times one piece is looked for again before the read fails.
const MAX_RELOCATIONS: usize = 3;

/// A fetch of exchange data failed: the producer's executor is gone or lost the piece.
/// The scheduler recognises this error and recomputes the producer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fetching output of stage {stage_id} task {partition} from executor {executor_id} failed: {message}"
)]
pub struct FetchFailed {
    pub executor_id: String,
    pub stage_id: u32,
    pub partition: u32,
    pub message: String,
}

#[derive(Debug)]
pub struct ShuffleReaderExec {
    stage_id: u32,
    schema: SchemaRef,
    /// For each partition of this reader, the pieces it is made of.
    partitions: Vec<Vec<ShuffleLocation>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReaderExec {
    /// A reader of `partition_count` partitions whose pieces are not known yet.
    pub fn unresolved(stage_id: u32, schema: SchemaRef, partition_count: usize) -> Self {
        Self::new(stage_id, schema, vec![Vec::new(); partition_count])
    }

    pub fn new(stage_id: u32, schema: SchemaRef, partitions: Vec<Vec<ShuffleLocation>>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        ShuffleReaderExec {
            stage_id,
            schema,
            partitions,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The stage whose output this reads.
    pub fn stage_id(&self) -> u32 {
        self.stage_id
    }

    pub fn partitions(&self) -> &[Vec<ShuffleLocation>] {
        &self.partitions
    }

    /// The same reader with its pieces filled in.
    pub fn with_locations(&self, partitions: Vec<Vec<ShuffleLocation>>) -> Self {
        Self::new(self.stage_id, Arc::clone(&self.schema), partitions)
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ShuffleReaderExec: stage={}, partitions={}",
                self.stage_id,
                self.partitions.len()
            ),
            DisplayFormatType::TreeRender => write!(f, "stage={}", self.stage_id),
        }
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let pieces = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "ShuffleReaderExec of stage {} has no partition {partition}",
                self.stage_id
            ))
        })?;
        let access = context
            .session_config()
            .get_extension::<ExchangeAccess>()
            .unwrap_or_default();
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let fetched_bytes = MetricBuilder::new(&self.metrics).counter("fetched_bytes", partition);
        let remote_pieces = MetricBuilder::new(&self.metrics).counter("remote_pieces", partition);
        let stage_id = self.stage_id;
        let stream = futures::stream::iter(pieces)
            .map(move |location| {
                let access = Arc::clone(&access);
                let local = access
                    .local
                    .as_ref()
                    .is_some_and(|l| l.executor_id() == location.executor_id);
                let inline = location.inline.is_some();
                if !local && !inline {
                    remote_pieces.add(1);
                }
                // What was read from an exchange store (this executor's or another's);
                // a piece sent back with its task's result was not.
                let fetched_bytes = fetched_bytes.clone();
                // Open until the piece's stream ends or is dropped.
                let open = access.activity.as_ref().map(|activity| {
                    activity.open(match &location.ticket {
                        Some(t) => format!(
                            "stage {stage_id} task {} attempt {} piece {} on {}",
                            t.partition, t.attempt, t.output_partition, location.executor_id
                        ),
                        None => format!("stage {stage_id} on {}", location.executor_id),
                    })
                });
                Box::pin(open_piece(access, stage_id, location))
                    .try_flatten_stream()
                    .inspect(move |batch| {
                        let _open = &open;
                        if let (Ok(batch), false) = (batch, inline) {
                            fetched_bytes.add(batch.get_array_memory_size());
                        }
                    })
            })
            .flatten_unordered(Some(4))
            .inspect_ok(move |batch| {
                output_rows.add(batch.num_rows());
            });
        // Pieces held locally arrive without ever waiting: spend task budget per batch.
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Read one piece of a stage's output, in an "exchange read" span that lasts until the
/// piece's stream is dropped (a child of the task or the results reader when traced).
async fn open_piece(
    access: Arc<ExchangeAccess>,
    stage_id: u32,
    location: ShuffleLocation,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let span = tracing::info_span!(
        "exchange read",
        stage = stage_id,
        from = %location.executor_id,
        partition = location.ticket.as_ref().map_or(0, |t| t.partition),
    );
    let stream = read_piece(access, stage_id, location)
        .instrument(span.clone())
        .await?;
    Ok(stream
        .map(move |batch| {
            let _reading = &span;
            batch
        })
        .boxed())
}

async fn read_piece(
    access: Arc<ExchangeAccess>,
    stage_id: u32,
    location: ShuffleLocation,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    if let Some(bytes) = location.inline {
        let batches = crate::inline_pieces::decode(&bytes)?;
        return Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed());
    }
    let Some(recovery) = access.recovery.clone() else {
        return stream_piece(access, stage_id, location).await;
    };
    let mut location = location;
    let mut relocations = 0;
    loop {
        let read = async {
            stream_piece(Arc::clone(&access), stage_id, location.clone())
                .await?
                .try_collect::<Vec<RecordBatch>>()
                .await
        };
        match read.await {
            Ok(batches) => return Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed()),
            Err(e) if relocations < MAX_RELOCATIONS && is_fetch_failure(&e) => {
                relocations += 1;
                tracing::warn!(stage = stage_id, "piece lost, reading it again: {e}");
                location = recovery.relocate(&location).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_fetch_failure(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<FetchFailed>().is_some(),
        DataFusionError::Context(_, inner) => is_fetch_failure(inner),
        DataFusionError::Shared(inner) => is_fetch_failure(inner),
        _ => false,
    }
}

async fn stream_piece(
    access: Arc<ExchangeAccess>,
    stage_id: u32,
    location: ShuffleLocation,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let ticket = location.ticket.clone().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "exchange location of stage {stage_id} has no ticket"
        ))
    })?;
    let failed = {
        let location = location.clone();
        let partition = ticket.partition;
        move |message: String| {
            DataFusionError::External(Box::new(FetchFailed {
                executor_id: location.executor_id.clone(),
                stage_id,
                partition,
                message,
            }))
        }
    };
    if let Some(local) = &access.local
        && local.executor_id() == location.executor_id
    {
        return match local.read(&ticket) {
            Some(stream) => stream,
            None => Err(failed(
                "the piece is not in this executor's exchange store".into(),
            )),
        };
    }
    // Each piece on a connection of its own: see `flight_channels` for the deadlock a
    // shared one caused.
    let (mut client, lease) = access
        .channels
        .data_client(&location.endpoint)
        .map_err(|e| failed(e.message))?;
    let stream = client
        .do_get(Ticket::new(ticket.encode_to_vec()))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let failed_mid_stream = failed.clone();
    Ok(LeasedStream::new(stream.boxed(), lease)
        .map_err(move |e| failed_mid_stream(e.to_string()))
        .boxed())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use arrow_flight::{FlightData, error::FlightError};
    use bytes::Bytes;
    use datafusion::execution::TaskContext;
    use datafusion::prelude::SessionConfig;
    use futures::StreamExt;
    use tonic::Status;

    use super::*;
    use crate::action_service::{ActionHandler, ResultStream, action_service};
    use crate::flight_channels::grpc_incoming;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    /// Serves 16 MB for every ticket, in 256 KB batches.
    struct Producer;

    #[tonic::async_trait]
    impl ActionHandler for Producer {
        async fn action(&self, _: &str, _: Bytes) -> Result<ResultStream<Bytes>, Status> {
            Err(Status::unimplemented("no actions"))
        }

        async fn get(&self, _ticket: Bytes) -> Result<ResultStream<FlightData>, Status> {
            let batch = RecordBatch::try_new(
                schema(),
                vec![Arc::new(Int64Array::from_iter_values(0..32 * 1024))],
            )
            .map_err(|e| Status::internal(e.to_string()))?;
            let batches = futures::stream::iter((0..64).map(move |_| Ok(batch.clone())));
            Ok(FlightDataEncoderBuilder::new()
                .build(batches)
                .map(|r: Result<FlightData, FlightError>| {
                    r.map_err(|e| Status::internal(e.to_string()))
                })
                .boxed())
        }
    }

    fn location(endpoint: &str, task: u32) -> ShuffleLocation {
        ShuffleLocation {
            executor_id: "producer".to_string(),
            endpoint: endpoint.to_string(),
            ticket: Some(ExchangeTicket {
                query_id: "q".to_string(),
                stage_id: 1,
                partition: task,
                attempt: 0,
                output_partition: 0,
            }),
            inline: None,
        }
    }

    /// Streams a consumer opened but does not read (DataFusion opens a broadcast join's
    /// inputs, and starts a coalesce's, long before it reads them) must not hold up the
    /// stream it does read, even when all come from the same executor. On one shared
    /// HTTP/2 connection their buffered data filled the connection's window and the read
    /// stalled forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unread_pieces_do_not_stall_the_piece_being_read() -> Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let endpoint = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| DataFusionError::Execution(e.to_string()))?
        );
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(action_service("test", Arc::new(Producer), None))
                .serve_with_incoming(grpc_incoming(listener)),
        );
        // Four reader partitions, one piece each, all on the same producer.
        let reader = ShuffleReaderExec::new(
            1,
            schema(),
            (0..4).map(|t| vec![location(&endpoint, t)]).collect(),
        );
        let config = SessionConfig::new().with_extension(Arc::new(ExchangeAccess::default()));
        let context = Arc::new(TaskContext::default().with_session_config(config));
        // Three are opened and read a little, then left alone.
        let mut unread = Vec::new();
        for partition in 0..3 {
            let mut stream = reader.execute(partition, Arc::clone(&context))?;
            stream.next().await.transpose()?;
            unread.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The fourth is read to its end.
        let read = async {
            let mut rows = 0;
            let mut stream = reader.execute(3, Arc::clone(&context))?;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows();
            }
            Ok::<usize, DataFusionError>(rows)
        };
        let rows = tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .map_err(|_| DataFusionError::Execution("the read stalled".to_string()))??;
        assert_eq!(rows, 64 * 32 * 1024);
        // The open streams still read to their ends afterwards.
        for mut stream in unread {
            while let Some(batch) = stream.next().await {
                batch?;
            }
        }
        server.abort();
        Ok(())
    }
}
