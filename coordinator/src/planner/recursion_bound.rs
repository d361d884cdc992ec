//! A default bound on recursive queries: `WITH RECURSIVE` runs its recursive term once per
//! iteration until an iteration yields no rows, which a query that never ends would do
//! forever. [`bound_recursion`] puts a [`RecursionBoundExec`] on every recursive term; it
//! counts how often the term runs and stops the query past
//! `quarry.max_recursive_iterations` (as SQL Server's MAXRECURSION and Trino's
//! `max_recursion_depth` do) with an error that names the setting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    replace_children_if_necessary,
};
use quarry_common::{ErrorCode, QuarryError};

/// The setting, as users write it.
pub(crate) const SETTING: &str = "quarry.max_recursive_iterations";

/// Stops a recursive term after `limit` runs.
#[derive(Debug)]
pub(crate) struct RecursionBoundExec {
    input: Arc<dyn ExecutionPlan>,
    limit: usize,
    /// Runs so far, shared with the copies DataFusion makes of this node per iteration.
    runs: Arc<AtomicUsize>,
}

impl RecursionBoundExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, limit: usize) -> Self {
        RecursionBoundExec {
            input,
            limit,
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl DisplayAs for RecursionBoundExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RecursionBoundExec: iterations<={}", self.limit)
    }
}

impl ExecutionPlan for RecursionBoundExec {
    fn name(&self) -> &str {
        "RecursionBoundExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.pop().ok_or_else(|| {
            DataFusionError::Internal("RecursionBoundExec needs its input".to_string())
        })?;
        Ok(Arc::new(RecursionBoundExec {
            input,
            limit: self.limit,
            runs: Arc::clone(&self.runs),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let runs = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        if runs > self.limit {
            return Err(DataFusionError::External(Box::new(QuarryError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "a recursive query ran {} iterations, the most {SETTING} allows; \
                     make its recursive part stop producing rows, or SET {SETTING} to a \
                     larger number",
                    self.limit
                ),
            ))));
        }
        self.input.execute(partition, context)
    }
}

/// Bound the recursive term of every recursive query in `plan` to `limit` iterations.
pub(crate) fn bound_recursion(
    plan: Arc<dyn ExecutionPlan>,
    limit: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<RecursiveQueryExec>().is_none() {
            return Ok(Transformed::no(node));
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
        let [static_term, recursive_term] = children.as_slice() else {
            return Ok(Transformed::no(node));
        };
        if recursive_term
            .downcast_ref::<RecursionBoundExec>()
            .is_some()
        {
            return Ok(Transformed::no(node));
        }
        let bounded: Arc<dyn ExecutionPlan> =
            Arc::new(RecursionBoundExec::new(Arc::clone(recursive_term), limit));
        Ok(Transformed::yes(replace_children_if_necessary(
            node,
            vec![Arc::clone(static_term), bounded],
        )?))
    })
    .map(|t| t.data)
}
