//! Joins chosen at run time: a partitioned join whose build side turns out small becomes
//! a broadcast join, and its probe side is read where the join runs instead of through
//! an exchange.
//!
//! The optimizer picks a broadcast (`CollectLeft`) join when the build side's estimate is
//! under `hash_join_single_partition_threshold` bytes and `..._rows` rows; otherwise both
//! sides are hashed on the keys, a stage each, and the join reads both through the
//! exchange. Estimates are often wrong (a filter's selectivity is a guess). So for a
//! partitioned join whose inputs are two stages (build B, probe P), P waits for B when the
//! build side is estimated small next to the probe side (the same rule as for dynamic
//! filters), and once B has run its real rows and bytes decide:
//!
//! - within both thresholds: the join becomes a broadcast join reading all of B, and P's
//!   plan moves into the join's stage: P never runs, its rows are never hashed, written
//!   or fetched;
//! - otherwise the join stays partitioned and P runs as planned.
//!
//! Only joins whose broadcast form is correct when split over tasks qualify (inner,
//! right, right semi/anti/mark joins: none emits build rows at the end), only where
//! nothing above the join in its stage relies on its output being hashed, and only where
//! the stage's readers do not depend on how many tasks it has.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, HashJoinExecBuilder, PartitionMode};
use datafusion::physical_plan::{Distribution, ExecutionPlan};
use quarry_common::shuffle_reader::ShuffleReaderExec;

use super::decisions::AdaptiveJoin;
use super::dynamic_filters::{node_at, replace_at, small_next_to};
use super::stages::StagePlan;

/// The joins of `stages` that may switch to a broadcast at run time.
pub(crate) fn find(stages: &StagePlan, max_rows: u64, max_bytes: u64) -> Vec<AdaptiveJoin> {
    let mut found = Vec::new();
    for stage in &stages.stages {
        // The broadcast join has as many tasks as the probe stage's plan has partitions.
        // Hashed output is read piece by piece, whatever the number of tasks; output read
        // task by task is merged by its reader's parent when there are several tasks (a
        // single task's output may be read without a merge).
        if stage.output.is_none() && stage.task_count() <= 1 {
            continue;
        }
        let mut path = Vec::new();
        collect(&stage.plan, &mut path, &mut |join, path| {
            let (Some(build), Some(probe)) = (
                join.left().downcast_ref::<ShuffleReaderExec>(),
                join.right().downcast_ref::<ShuffleReaderExec>(),
            ) else {
                return;
            };
            let (build_stage, probe_stage) = (build.stage_id(), probe.stage_id());
            let Some(probe_plan) = stages.stage(probe_stage).map(|s| &s.plan) else {
                return;
            };
            if small_next_to(stages, build_stage, probe_plan) {
                found.push(AdaptiveJoin {
                    join_stage: stage.id,
                    join_path: path.to_vec(),
                    build_stage,
                    probe_stage,
                    max_rows,
                    max_bytes,
                });
            }
        });
    }
    found
}

/// Calls `found` for every partitioned join that qualifies, with its path; walks only
/// through nodes that need nothing of their input's partitioning.
fn collect(
    plan: &Arc<dyn ExecutionPlan>,
    path: &mut Vec<usize>,
    found: &mut dyn FnMut(&HashJoinExec, &[usize]),
) {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::Partitioned
        && matches!(
            join.join_type(),
            JoinType::Inner
                | JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark
        )
        && !join.null_aware
    {
        found(join, path);
        return;
    }
    let required = plan.input_distribution_requirements();
    for (i, child) in plan.children().into_iter().enumerate() {
        if !matches!(
            required.child_distribution(i),
            None | Some(Distribution::UnspecifiedDistribution)
        ) {
            continue;
        }
        path.push(i);
        collect(child, path, found);
        path.pop();
    }
}

/// `join_plan` with the partitioned join at `join.join_path` made a broadcast join that
/// reads all of the build stage and runs `probe_plan` (the probe stage's plan) itself.
pub(crate) fn broadcast(
    join: &AdaptiveJoin,
    join_plan: &Arc<dyn ExecutionPlan>,
    probe_plan: Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(node) = node_at(join_plan, &join.join_path) else {
        return Ok(None);
    };
    let Some(hash_join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    let build: Arc<dyn ExecutionPlan> =
        Arc::new(CoalescePartitionsExec::new(Arc::clone(hash_join.left())));
    let broadcast = HashJoinExecBuilder::from(hash_join)
        .with_partition_mode(PartitionMode::CollectLeft)
        .with_new_children(vec![build, probe_plan])?
        .reset_state()
        .build_exec()?;
    let replaced = replace_at(join_plan, &join.join_path, &|_| {
        Ok(Some(Arc::clone(&broadcast)))
    })?;
    Ok(Some(replaced))
}
