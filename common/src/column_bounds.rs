//! The range of a stage's output columns, measured while its tasks write their output.
//!
//! A join's build side bounds which probe rows can match: once the stage that builds it
//! has finished, the coordinator narrows the probe side's Parquet scans to the keys'
//! range, so row groups and pages outside it are never read (see the coordinator's
//! `planner::dynamic_filters`). Tasks measure the columns their definition names and
//! report them in their result; nulls are left out, as they never match in a join.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use datafusion_proto::protobuf;
use prost::Message;

use crate::QuarryError;
use crate::protocol::ColumnBound;

/// The smallest and largest value of some columns over every batch it sees.
#[derive(Debug, Default)]
pub struct BoundsCollector {
    columns: Vec<(u32, MinAccumulator, MaxAccumulator)>,
}

impl BoundsCollector {
    /// Measures `columns` of batches of `schema`; a column of a type that cannot be
    /// compared (or out of range) is left out, so its range is never reported.
    pub fn new(schema: &Schema, columns: &[u32]) -> Self {
        let columns = columns
            .iter()
            .filter_map(|&column| {
                let field = schema.fields().get(column as usize)?;
                let min = MinAccumulator::try_new(field.data_type()).ok()?;
                let max = MaxAccumulator::try_new(field.data_type()).ok()?;
                Some((column, min, max))
            })
            .collect();
        BoundsCollector { columns }
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Widen the ranges by a batch. A column whose values cannot be measured stops being
    /// measured; the task's output is unaffected.
    pub fn update(&mut self, batch: &RecordBatch) {
        self.columns.retain_mut(|(column, min, max)| {
            let Some(array) = batch.columns().get(*column as usize) else {
                return false;
            };
            let values = std::slice::from_ref(array);
            min.update_batch(values).is_ok() && max.update_batch(values).is_ok()
        });
    }

    /// The ranges measured, in the order asked for.
    pub fn finish(self) -> Vec<ColumnBound> {
        self.columns
            .into_iter()
            .filter_map(|(column, mut min, mut max)| {
                let (min, max) = (min.evaluate().ok()?, max.evaluate().ok()?);
                if min.is_null() || max.is_null() {
                    return Some(ColumnBound {
                        column,
                        min: Vec::new(),
                        max: Vec::new(),
                    });
                }
                Some(ColumnBound {
                    column,
                    min: encode(&min)?,
                    max: encode(&max)?,
                })
            })
            .collect()
    }
}

fn encode(value: &ScalarValue) -> Option<Vec<u8>> {
    protobuf::ScalarValue::try_from(value)
        .ok()
        .map(|v| v.encode_to_vec())
}

fn decode(bytes: &[u8]) -> Result<ScalarValue, QuarryError> {
    let proto = protobuf::ScalarValue::decode(bytes)
        .map_err(|e| QuarryError::invalid(format!("malformed column bound: {e}")))?;
    ScalarValue::try_from(&proto)
        .map_err(|e| QuarryError::invalid(format!("malformed column bound: {e}")))
}

/// What every task of a stage says of one column's values, together.
#[derive(Debug, Clone, PartialEq)]
pub enum Range {
    /// No task saw a value (the stage's output has none, or only nulls).
    Empty,
    /// Every value lies in `min..=max`.
    Within(ScalarValue, ScalarValue),
}

/// The range of `column` over the reports of all tasks of a stage; None when some task
/// did not measure it (its range is then unknown).
pub fn merge<'a>(
    reports: impl IntoIterator<Item = &'a [ColumnBound]>,
    column: u32,
) -> Result<Option<Range>, QuarryError> {
    let mut range = Range::Empty;
    for report in reports {
        let Some(bound) = report.iter().find(|b| b.column == column) else {
            return Ok(None);
        };
        if bound.min.is_empty() || bound.max.is_empty() {
            continue;
        }
        let (min, max) = (decode(&bound.min)?, decode(&bound.max)?);
        range = match range {
            Range::Empty => Range::Within(min, max),
            Range::Within(lo, hi) => {
                let (Some(lo_order), Some(hi_order)) = (min.partial_cmp(&lo), max.partial_cmp(&hi))
                else {
                    return Ok(None);
                };
                Range::Within(
                    if lo_order.is_lt() { min } else { lo },
                    if hi_order.is_gt() { max } else { hi },
                )
            }
        };
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn batch(keys: Vec<Option<i64>>, names: Vec<&str>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("name", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn ranges_cover_every_task_and_leave_nulls_out() -> Result<(), QuarryError> {
        let first = batch(vec![Some(7), None, Some(3)], vec!["b", "a", "c"]);
        let mut one = BoundsCollector::new(&first.schema(), &[0, 1]);
        one.update(&first);
        one.update(&batch(vec![Some(12)], vec!["d"]));
        let mut two = BoundsCollector::new(&first.schema(), &[0]);
        two.update(&batch(vec![Some(-4), None], vec!["x", "y"]));
        let mut three = BoundsCollector::new(&first.schema(), &[0]);
        three.update(&batch(vec![None], vec!["z"]));
        let reports = [one.finish(), two.finish(), three.finish()];
        let slices = || reports.iter().map(Vec::as_slice);
        assert_eq!(
            merge(slices(), 0)?,
            Some(Range::Within(
                ScalarValue::Int64(Some(-4)),
                ScalarValue::Int64(Some(12))
            ))
        );
        // Only the first task measured the names: their range is unknown.
        assert_eq!(merge(slices(), 1)?, None);
        assert_eq!(
            merge(reports[2..].iter().map(Vec::as_slice), 0)?,
            Some(Range::Empty)
        );
        Ok(())
    }

    #[test]
    fn a_column_that_is_not_there_is_not_measured() {
        let b = batch(vec![Some(1)], vec!["a"]);
        let mut collector = BoundsCollector::new(&b.schema(), &[5]);
        collector.update(&b);
        assert!(collector.is_empty());
        assert!(collector.finish().is_empty());
    }
}
