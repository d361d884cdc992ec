//! Per-operator metrics of an executed plan, in a form that travels in task results and
//! lands in job profiles.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use serde::{Deserialize, Serialize};

/// One operator's totals over the partitions it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorMetrics {
    /// Depth in the plan tree, root = 0.
    pub depth: u32,
    /// The operator as EXPLAIN prints it (one line).
    pub operator: String,
    pub output_rows: u64,
    pub elapsed_compute_ns: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spill_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spilled_bytes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_scanned: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fetched_bytes: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Metrics of every operator of `plan`, in pre-order.
pub fn collect_operator_metrics(plan: &Arc<dyn ExecutionPlan>) -> Vec<OperatorMetrics> {
    let mut out = Vec::new();
    walk(plan, 0, &mut out);
    out
}

fn walk(plan: &Arc<dyn ExecutionPlan>, depth: u32, out: &mut Vec<OperatorMetrics>) {
    let line = displayable(plan.as_ref()).one_line().to_string();
    let mut m = OperatorMetrics {
        depth,
        operator: line.trim_end().to_string(),
        ..OperatorMetrics::default()
    };
    if let Some(metrics) = plan.metrics() {
        let metrics = metrics.aggregate_by_name();
        m.output_rows = metrics.output_rows().unwrap_or(0) as u64;
        m.elapsed_compute_ns = metrics.elapsed_compute().unwrap_or(0) as u64;
        m.spill_count = metrics.spill_count().unwrap_or(0) as u64;
        m.spilled_bytes = metrics.spilled_bytes().unwrap_or(0) as u64;
        m.bytes_scanned = metrics
            .sum_by_name("bytes_scanned")
            .map(|v| v.as_usize() as u64)
            .unwrap_or(0);
        m.fetched_bytes = metrics
            .sum_by_name("fetched_bytes")
            .map(|v| v.as_usize() as u64)
            .unwrap_or(0);
    }
    out.push(m);
    for child in plan.children() {
        walk(child, depth + 1, out);
    }
}
