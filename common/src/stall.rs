//! A source that never produces a row and never finishes: `sys.test_stall`, only on a
//! coordinator started with test sources (`--test-sources`). It lets tests prove that the
//! scheduler's watchdog fails a query that makes no progress, and frees its slots.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

/// The one column of `sys.test_stall`.
pub fn stall_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]))
}

#[derive(Debug)]
pub struct StallExec {
    partitions: usize,
    /// Whether the column is projected (`count(*)` reads none).
    with_column: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl StallExec {
    pub fn new(partitions: usize, with_column: bool) -> Self {
        let schema = if with_column {
            stall_schema()
        } else {
            Arc::new(Schema::empty())
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StallExec {
            partitions: partitions.max(1),
            with_column,
            schema,
            properties: Arc::new(properties),
        }
    }

    pub fn partitions(&self) -> usize {
        self.partitions
    }

    pub fn with_column(&self) -> bool {
        self.with_column
    }
}

impl DisplayAs for StallExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StallExec: partitions={}", self.partitions)
    }
}

impl ExecutionPlan for StallExec {
    fn name(&self) -> &str {
        "StallExec"
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
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::pending(),
        )))
    }
}
