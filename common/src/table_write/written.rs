//! What the write tasks answer: one row per file written, gathered into the files a Delta
//! commit adds, or counted into the one `count` row COPY and INSERT answer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::exec_datafusion_err;
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
use futures::StreamExt;

use super::written_files_schema;

#[derive(Default)]
pub(super) struct WrittenFiles {
    paths: Vec<String>,
    sizes: Vec<i64>,
    rows: Vec<i64>,
    partition_values: Vec<String>,
    stats: Vec<String>,
}

impl WrittenFiles {
    pub(super) fn push(
        &mut self,
        path: String,
        size: u64,
        rows: i64,
        values: BTreeMap<String, String>,
        stats: String,
    ) {
        self.paths.push(path);
        self.sizes.push(size as i64);
        self.rows.push(rows);
        self.partition_values
            .push(serde_json::to_string(&values).unwrap_or_else(|_| "{}".to_string()));
        self.stats.push(stats);
    }

    pub(super) fn into_batch(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.paths)),
            Arc::new(Int64Array::from(self.sizes)),
            Arc::new(Int64Array::from(self.rows)),
            Arc::new(StringArray::from(self.partition_values)),
            Arc::new(StringArray::from(self.stats)),
        ];
        Ok(RecordBatch::try_new(written_files_schema(), columns)?)
    }
}

/// The number of rows the write tasks below it wrote, as one `count` row (what COPY and
/// INSERT answer). Runs where the tasks' answers are gathered.
#[derive(Debug)]
pub struct WrittenRowsExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

/// The one-row answer of a write.
pub fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl WrittenRowsExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        WrittenRowsExec {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for WrittenRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WrittenRowsExec")
    }
}

impl ExecutionPlan for WrittenRowsExec {
    fn name(&self) -> &str {
        "WrittenRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<datafusion::physical_expr::Distribution> {
        vec![datafusion::physical_expr::Distribution::SinglePartition]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(exec_datafusion_err!("WrittenRowsExec has one input"));
        };
        Ok(Arc::new(WrittenRowsExec::new(Arc::clone(input))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(exec_datafusion_err!("WrittenRowsExec has one partition"));
        }
        let mut input = self.input.execute(0, context)?;
        let count = async move {
            let mut rows = 0u64;
            while let Some(batch) = input.next().await {
                for file in written_files(&batch?)? {
                    rows += file.rows.max(0) as u64;
                }
            }
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(arrow::array::UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(count),
        )))
    }
}

/// One written file, as the coordinator reads it back from a task's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFile {
    pub path: String,
    pub size: i64,
    pub rows: i64,
    pub partition_values: BTreeMap<String, String>,
    pub stats: String,
}

/// The files a batch of `written_files_schema()` rows names.
pub fn written_files(batch: &RecordBatch) -> Result<Vec<WrittenFile>> {
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| exec_datafusion_err!("malformed written-files batch"))
    };
    let number = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| exec_datafusion_err!("malformed written-files batch"))
    };
    let (paths, sizes, rows, values, stats) =
        (text(0)?, number(1)?, number(2)?, text(3)?, text(4)?);
    (0..batch.num_rows())
        .map(|i| {
            Ok(WrittenFile {
                path: paths.value(i).to_string(),
                size: sizes.value(i),
                rows: rows.value(i),
                partition_values: serde_json::from_str(values.value(i))
                    .map_err(|e| exec_datafusion_err!("malformed partition values: {e}"))?,
                stats: stats.value(i).to_string(),
            })
        })
        .collect()
}
