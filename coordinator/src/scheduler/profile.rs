//! What a query did, stage by stage and task by task: kept in the job record, shown by
//! EXPLAIN ANALYZE and the console.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use quarry_common::metrics::OperatorMetrics;
use serde::{Deserialize, Serialize};

use crate::planner::stages::Stage;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryProfile {
    pub stages: Vec<StageProfile>,
    /// Operators of the root stage, run on the coordinator.
    #[serde(default)]
    pub root: Vec<OperatorMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageProfile {
    pub stage_id: u32,
    pub inputs: Vec<u32>,
    /// How task output is split (`Hash([city@0], 2)`), or `none`.
    pub output: String,
    pub plan: String,
    /// What was decided for the stage at run time ("dynamic filter: k between 5 and 9
    /// (from stage 1)", "join: broadcast ...").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub tasks: Vec<TaskProfile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskProfile {
    pub partition: u32,
    pub attempt: u32,
    pub executor_id: String,
    pub output_rows: u64,
    pub output_bytes: u64,
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<String>,
    pub operators: Vec<OperatorMetrics>,
}

impl StageProfile {
    pub fn new(stage: &Stage, resolved: &Arc<dyn ExecutionPlan>, notes: Vec<String>) -> Self {
        StageProfile {
            stage_id: stage.id,
            inputs: stage.inputs(),
            output: stage
                .output
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".to_string()),
            plan: displayable(resolved.as_ref()).indent(false).to_string(),
            notes,
            tasks: Vec::new(),
        }
    }

    pub fn output_rows(&self) -> u64 {
        self.tasks.iter().map(|t| t.output_rows).sum()
    }

    pub fn output_bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.output_bytes).sum()
    }
}
