//! Where a stage's output pieces are: readers of earlier stages are pointed at the
//! outputs' current locations, and a piece the coordinator finds gone is recomputed.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use quarry_common::QuarryError;
use quarry_common::protocol::ExchangeTicket;
use quarry_common::shuffle_reader::{PieceRecovery, ShuffleLocation, ShuffleReaderExec};

use super::{QueryRun, TaskOutput};

impl QueryRun {
    /// Point every reader in `plan` at the current outputs of the stage it reads.
    pub(super) fn resolve(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>, QuarryError> {
        let state = self.lock();
        let resolved = Arc::clone(plan).transform_up(|node| {
            let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                return Ok(Transformed::no(node));
            };
            let stage_id = reader.stage_id();
            let (Some(stage), Some(outputs)) =
                (self.plan.stage(stage_id), state.outputs.get(&stage_id))
            else {
                return Err(DataFusionError::Internal(format!(
                    "stage {stage_id} is read before it ran"
                )));
            };
            let tasks: Vec<&TaskOutput> = outputs
                .iter()
                .map(|o| {
                    o.as_ref().ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "stage {stage_id} is read before it finished"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            let location = |task: u32, output: &TaskOutput, piece: u32| {
                location(&self.tasks.query_id, stage_id, task, output, piece)
            };
            let partitions: Vec<Vec<ShuffleLocation>> = match &stage.output {
                Some(_) => (0..stage.output_pieces() as u32)
                    .map(|piece| {
                        tasks
                            .iter()
                            .enumerate()
                            .map(|(t, output)| location(t as u32, output, piece))
                            .collect()
                    })
                    .collect(),
                None => tasks
                    .iter()
                    .enumerate()
                    .map(|(t, output)| vec![location(t as u32, output, 0)])
                    .collect(),
            };
            Ok(Transformed::yes(
                Arc::new(reader.with_locations(partitions)) as _,
            ))
        })?;
        Ok(resolved.data)
    }
}

fn location(
    query_id: &str,
    stage_id: u32,
    task: u32,
    output: &TaskOutput,
    piece: u32,
) -> ShuffleLocation {
    ShuffleLocation {
        executor_id: output.executor_id.clone(),
        endpoint: output.endpoint.clone(),
        ticket: Some(ExchangeTicket {
            query_id: query_id.to_string(),
            stage_id,
            partition: task,
            attempt: output.attempt,
            output_partition: piece,
        }),
        inline: output
            .inline
            .as_ref()
            .and_then(|pieces| pieces.get(piece as usize))
            .cloned(),
    }
}

/// The stages a plan's readers read.
pub(super) fn reader_stages(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
    let mut ids = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>()
            && !ids.contains(&reader.stage_id())
        {
            ids.push(reader.stage_id());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    ids
}

/// The coordinator reads the last stage's pieces; when one is gone with its executor,
/// it asks for it again here: the producer is recomputed and the new piece returned.
#[async_trait]
impl PieceRecovery for QueryRun {
    async fn relocate(
        &self,
        failed: &ShuffleLocation,
    ) -> datafusion::error::Result<ShuffleLocation> {
        let ticket = failed
            .ticket
            .clone()
            .ok_or_else(|| DataFusionError::Internal("a piece without a ticket".into()))?;
        self.forget_outputs_on(&failed.executor_id);
        self.ensure_available(vec![ticket.stage_id])
            .await
            .map_err(DataFusionError::from)?;
        let state = self.lock();
        let output = state
            .outputs
            .get(&ticket.stage_id)
            .and_then(|o| o.get(ticket.partition as usize))
            .and_then(|o| o.clone())
            .ok_or_else(|| DataFusionError::Internal("the recomputed piece is missing".into()))?;
        Ok(location(
            &self.tasks.query_id,
            ticket.stage_id,
            ticket.partition,
            &output,
            ticket.output_partition,
        ))
    }
}
