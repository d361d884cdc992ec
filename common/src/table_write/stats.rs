//! Per-file column statistics in Delta's `stats` JSON (row count, minimums, maximums, null
//! counts), read from the Parquet footer of a file just written.

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::file::metadata::ParquetMetaData;
use serde_json::{Map, Value, json};

/// Longest string kept as a minimum (a prefix is still a lower bound); longer maxima are
/// left out, since a cut maximum would not be an upper bound.
const MAX_STAT_STRING: usize = 32;

/// Delta's per-file statistics from the Parquet footer the writer produced. Written here
/// because deltalake-core keeps its own converter private; only top-level columns of
/// types whose JSON form is unambiguous get minima and maxima.
pub fn delta_stats(metadata: &ParquetMetaData, file_schema: &Schema) -> String {
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let mut null_count = Map::new();
    let parquet_schema = metadata.file_metadata().schema_descr();
    for field in file_schema.fields() {
        let Ok(converter) = StatisticsConverter::try_new(field.name(), file_schema, parquet_schema)
        else {
            continue;
        };
        let groups = metadata.row_groups().iter();
        if let Ok(nulls) = converter.row_group_null_counts(groups.clone()) {
            let total: u64 = nulls.iter().map(|n| n.unwrap_or(0)).sum();
            null_count.insert(field.name().clone(), json!(total));
        }
        let (Ok(mins), Ok(maxes)) = (
            converter.row_group_mins(groups.clone()),
            converter.row_group_maxes(groups),
        ) else {
            continue;
        };
        if let Some(min) =
            extreme(&mins, std::cmp::Ordering::Less).and_then(|v| stat_json(&v, true))
        {
            min_values.insert(field.name().clone(), min);
        }
        if let Some(max) =
            extreme(&maxes, std::cmp::Ordering::Greater).and_then(|v| stat_json(&v, false))
        {
            max_values.insert(field.name().clone(), max);
        }
    }
    json!({
        "numRecords": metadata.file_metadata().num_rows(),
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    })
    .to_string()
}

/// The smallest (`Less`) or largest (`Greater`) non-null value of per-row-group bounds;
/// None when a row group has no bound (then nothing is known for the file).
fn extreme(values: &ArrayRef, wanted: std::cmp::Ordering) -> Option<ScalarValue> {
    let mut best: Option<ScalarValue> = None;
    for i in 0..values.len() {
        if values.is_null(i) {
            return None;
        }
        let value = ScalarValue::try_from_array(values, i).ok()?;
        best = match best {
            Some(current) if current.partial_cmp(&value)? != wanted.reverse() => Some(current),
            _ => Some(value),
        };
    }
    best
}

fn stat_json(value: &ScalarValue, is_min: bool) -> Option<Value> {
    Some(match value {
        ScalarValue::Int8(Some(v)) => json!(v),
        ScalarValue::Int16(Some(v)) => json!(v),
        ScalarValue::Int32(Some(v)) => json!(v),
        ScalarValue::Int64(Some(v)) => json!(v),
        ScalarValue::Float32(Some(v)) if v.is_finite() => json!(v),
        ScalarValue::Float64(Some(v)) if v.is_finite() => json!(v),
        ScalarValue::Date32(Some(_)) => json!(value.to_string()),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            if s.chars().count() <= MAX_STAT_STRING {
                json!(s)
            } else if is_min {
                json!(s.chars().take(MAX_STAT_STRING).collect::<String>())
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    #[test]
    fn file_bounds_come_from_every_row_group() {
        let mins: ArrayRef = Arc::new(Int64Array::from(vec![5, 2, 9]));
        assert_eq!(
            extreme(&mins, Ordering::Less),
            Some(ScalarValue::Int64(Some(2)))
        );
        assert_eq!(
            extreme(&mins, Ordering::Greater),
            Some(ScalarValue::Int64(Some(9)))
        );
        let unknown: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None]));
        assert_eq!(extreme(&unknown, Ordering::Less), None);
    }

    #[test]
    fn long_strings_keep_a_safe_bound_only() {
        let long = ScalarValue::Utf8(Some("x".repeat(40)));
        assert_eq!(
            stat_json(&long, true),
            Some(json!("x".repeat(MAX_STAT_STRING)))
        );
        assert_eq!(stat_json(&long, false), None);
        let day = ScalarValue::Date32(Some(19723));
        assert_eq!(stat_json(&day, true), Some(json!("2024-01-01")));
    }
}
