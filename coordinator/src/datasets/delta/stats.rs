//! File-level pruning of a managed table's scan: each file's Delta statistics (the
//! `minValues`, `maxValues`, `nullCount` and `numRecords` its writer logged) tell
//! DataFusion's `PruningPredicate` which files cannot hold a matching row, so they are
//! never opened nor sent to an executor. Statistics that are missing, nested or do not
//! parse as the column's type count as unknown, which keeps the file.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use serde_json::Value;

/// One file's statistics, as its log entry gives them.
#[derive(Debug, Default)]
pub(super) struct FileStats {
    min: HashMap<String, Value>,
    max: HashMap<String, Value>,
    nulls: HashMap<String, u64>,
    rows: Option<u64>,
}

impl FileStats {
    /// From the log's stats JSON (None or unreadable: nothing known).
    pub(super) fn parse(json: Option<&str>) -> FileStats {
        let Some(Value::Object(stats)) = json.and_then(|s| serde_json::from_str(s).ok()) else {
            return FileStats::default();
        };
        let scalars = |key: &str| -> HashMap<String, Value> {
            match stats.get(key) {
                Some(Value::Object(values)) => values
                    .iter()
                    .filter(|(_, v)| !v.is_object() && !v.is_array() && !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                _ => HashMap::new(),
            }
        };
        let nulls = match stats.get("nullCount") {
            Some(Value::Object(values)) => values
                .iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect(),
            _ => HashMap::new(),
        };
        FileStats {
            min: scalars("minValues"),
            max: scalars("maxValues"),
            nulls,
            rows: stats.get("numRecords").and_then(Value::as_u64),
        }
    }

    pub(super) fn rows(&self) -> Option<u64> {
        self.rows
    }
}

/// Which of `files` may hold rows passing `filters` (all true when nothing prunes).
pub(super) fn may_match(
    state: &dyn Session,
    schema: &SchemaRef,
    filters: &[Expr],
    files: &[FileStats],
) -> DfResult<Vec<bool>> {
    let everything = vec![true; files.len()];
    let Some(predicate) = conjunction(filters.iter().cloned()) else {
        return Ok(everything);
    };
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let physical = state.create_physical_expr(predicate, &df_schema)?;
    // None: the predicate cannot prune (always true, or beyond what bounds can say).
    let Some(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .build(physical)
    else {
        return Ok(everything);
    };
    let containers = Containers { schema, files };
    // A predicate the statistics cannot evaluate prunes nothing.
    Ok(pruning.prune(&containers).unwrap_or(everything))
}

struct Containers<'a> {
    schema: &'a SchemaRef,
    files: &'a [FileStats],
}

impl Containers<'_> {
    fn bounds(
        &self,
        column: &Column,
        pick: fn(&FileStats) -> &HashMap<String, Value>,
    ) -> Option<ArrayRef> {
        let field = self.schema.field_with_name(&column.name).ok()?;
        let data_type = field.data_type();
        let values: Vec<ScalarValue> = self
            .files
            .iter()
            .map(|file| {
                pick(file)
                    .get(&column.name)
                    .and_then(|v| scalar(v, data_type))
                    .map_or_else(|| ScalarValue::try_from(data_type), Ok)
            })
            .collect::<DfResult<_>>()
            .ok()?;
        if values.iter().all(ScalarValue::is_null) {
            return None;
        }
        ScalarValue::iter_to_array(values).ok()
    }
}

/// A logged bound as the column's type; None when it does not parse as one.
fn scalar(value: &Value, data_type: &DataType) -> Option<ScalarValue> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    let parsed = ScalarValue::try_from_string(text, data_type).ok()?;
    (!parsed.is_null()).then_some(parsed)
}

impl PruningStatistics for Containers<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, |f| &f.min)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, |f| &f.max)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let counts: UInt64Array = self
            .files
            .iter()
            .map(|f| f.nulls.get(&column.name).copied())
            .collect();
        (counts.null_count() < counts.len()).then(|| Arc::new(counts) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let rows: UInt64Array = self.files.iter().map(|f| f.rows).collect();
        (rows.null_count() < rows.len()).then(|| Arc::new(rows) as ArrayRef)
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_bounds_parse_as_their_column_types() {
        let stats = FileStats::parse(Some(
            r#"{"numRecords": 3, "minValues": {"id": 5, "day": "2024-05-01", "nested": {"a": 1}},
                "maxValues": {"id": 9, "day": "2024-05-03"}, "nullCount": {"id": 0}}"#,
        ));
        assert_eq!(stats.rows(), Some(3));
        assert!(!stats.min.contains_key("nested"));
        assert_eq!(
            scalar(&stats.min["id"], &DataType::Int32),
            Some(ScalarValue::Int32(Some(5)))
        );
        assert!(scalar(&stats.min["day"], &DataType::Date32).is_some());
        assert_eq!(scalar(&Value::String("x".into()), &DataType::Int64), None);
        assert!(FileStats::parse(Some("not json")).rows().is_none());
    }
}
