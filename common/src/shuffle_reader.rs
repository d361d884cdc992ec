//! `ShuffleReaderExec`: the leaf that reads a finished stage's output.
//!
//! Partition `p` of the reader is the concatenation of the pieces listed for `p`: for a
//! hash exchange, output partition `p` of every producer task; for a merge or coalesce
//! exchange, the single output of producer task `p`. Pieces on this executor are read
//! from its exchange store directly; the rest are fetched with Flight `do_get`.

use std::fmt;
use std::sync::Arc;

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

use crate::flight_channels::FlightChannels;
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
                if !local {
                    remote_pieces.add(1);
                }
                Box::pin(open_piece(access, stage_id, location)).try_flatten_stream()
            })
            .flatten_unordered(Some(4))
            .inspect_ok(move |batch| {
                output_rows.add(batch.num_rows());
                fetched_bytes.add(batch.get_array_memory_size());
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

async fn open_piece(
    access: Arc<ExchangeAccess>,
    stage_id: u32,
    location: ShuffleLocation,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
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
    let mut client = access
        .channels
        .client(&location.endpoint)
        .map_err(|e| failed(e.message))?;
    let stream = client
        .do_get(Ticket::new(ticket.encode_to_vec()))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let failed_mid_stream = failed.clone();
    Ok(stream
        .map_err(move |e| failed_mid_stream(e.to_string()))
        .boxed())
}
