//! The distributed plan of a query: its stages, and what is left to run time.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;

use super::stages::{StagePlan, plan_stages};
use super::{adaptive_joins, dynamic_filters};

/// What the stage planner adds to the cut.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StageOptions {
    /// Joins' build stages narrow their probe sides' scans.
    pub dynamic_filters: bool,
    /// Partitioned joins may become broadcast joins once their build side has run, up to
    /// (rows, bytes); None keeps every join as planned.
    pub adaptive_joins: Option<(u64, u64)>,
}

/// Cut `plan` into stages, and find what its stages' outputs may decide at run time.
pub(crate) fn plan_distributed(
    plan: Arc<dyn ExecutionPlan>,
    options: StageOptions,
) -> Result<StagePlan> {
    let mut stages = plan_stages(plan)?;
    if options.dynamic_filters {
        stages.dynamic_filters = dynamic_filters::find(&stages);
    }
    if let Some((rows, bytes)) = options.adaptive_joins {
        stages.adaptive_joins = adaptive_joins::find(&stages, rows, bytes);
    }
    Ok(stages)
}
