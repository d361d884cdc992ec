//! Reflections: materializations of a dataset that queries use without naming them.
//! A raw reflection keeps some of a dataset's columns as Parquet; an aggregation
//! reflection keeps measures (SUM, COUNT, MIN, MAX) grouped by dimensions, plus the row
//! count. A refresh is a distributed write of the materialization's query into a Delta
//! table in the reflection store (`engine/reflections.rs`); `matching` decides which
//! queries a materialization answers and rewrites their plans.

pub mod matching;

use std::collections::HashSet;

use arrow::datatypes::{DataType, Schema};
use quarry_catalog::{MeasureFunction, ReflectionKind, ReflectionRecord};
use quarry_common::QuarryError;

/// An aggregation reflection's row count column.
pub const COUNT_COLUMN: &str = "__count";

/// Dremio's defaults: refreshed hourly, served for 3 hours after its data was read.
pub const DEFAULT_REFRESH_MS: u64 = 3_600_000;
pub const DEFAULT_GRACE_MS: u64 = 3 * 3_600_000;

/// The materialization's column of a measure.
pub fn measure_column(column: &str, function: MeasureFunction) -> String {
    let suffix = match function {
        MeasureFunction::Sum => "sum",
        MeasureFunction::Count => "count",
        MeasureFunction::Min => "min",
        MeasureFunction::Max => "max",
        MeasureFunction::ApproxCountDistinct => "approx",
    };
    format!("{column}__{suffix}")
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Check a definition against the columns of its dataset.
pub fn validate(
    kind: &ReflectionKind,
    partition_by: &[String],
    localsort_by: &[String],
    schema: &Schema,
) -> Result<(), QuarryError> {
    let field = |column: &str, what: &str| {
        schema.field_with_name(column).map_err(|_| {
            let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            names.sort();
            QuarryError::invalid(format!(
                "the {what} '{column}' is not a column of the dataset; its columns are {}",
                names.join(", ")
            ))
        })
    };
    let unique = |columns: &mut dyn Iterator<Item = &String>, what: &str| {
        let mut seen = HashSet::new();
        for column in columns {
            if !seen.insert(column.clone()) {
                return Err(QuarryError::invalid(format!(
                    "the {what} '{column}' is named twice"
                )));
            }
        }
        Ok(seen)
    };
    let kept = match kind {
        ReflectionKind::Raw { display } => {
            for column in display {
                field(column, "display column")?;
            }
            unique(&mut display.iter(), "display column")?
        }
        ReflectionKind::Aggregate {
            dimensions,
            measures,
        } => {
            for dimension in dimensions {
                let f = field(&dimension.column, "dimension")?;
                if dimension.by_day
                    && !matches!(
                        f.data_type(),
                        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
                    )
                {
                    return Err(QuarryError::invalid(format!(
                        "dimension '{}' is {}: BY DAY takes a date or timestamp column",
                        dimension.column,
                        f.data_type()
                    )));
                }
            }
            let dims = unique(&mut dimensions.iter().map(|d| &d.column), "dimension")?;
            unique(&mut measures.iter().map(|m| &m.column), "measure")?;
            for measure in measures {
                let f = field(&measure.column, "measure")?;
                if measure.functions.contains(&MeasureFunction::Sum) && !f.data_type().is_numeric()
                {
                    return Err(QuarryError::invalid(format!(
                        "SUM of '{}', a {} column: SUM takes numbers",
                        measure.column,
                        f.data_type()
                    )));
                }
            }
            dims
        }
    };
    for (columns, what) in [
        (partition_by, "PARTITION BY"),
        (localsort_by, "LOCALSORT BY"),
    ] {
        for column in columns {
            if !kept.contains(column) {
                return Err(QuarryError::invalid(format!(
                    "{what} '{column}' is not a column the reflection keeps"
                )));
            }
        }
    }
    Ok(())
}

/// The query whose rows are the reflection's materialization.
pub fn materialization_sql(record: &ReflectionRecord, schema: &Schema) -> String {
    let dataset = format!(
        "{}.{}.{}",
        quoted(crate::datasets::CATALOG_NAME),
        quoted(&record.schema),
        quoted(&record.dataset)
    );
    match &record.kind {
        ReflectionKind::Raw { display } => {
            let columns: Vec<String> = display.iter().map(|c| quoted(c)).collect();
            format!("SELECT {} FROM {dataset}", columns.join(", "))
        }
        ReflectionKind::Aggregate {
            dimensions,
            measures,
        } => {
            let mut columns = Vec::new();
            for dimension in dimensions {
                let is_timestamp = schema
                    .field_with_name(&dimension.column)
                    .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(..)));
                let column = quoted(&dimension.column);
                if dimension.by_day && is_timestamp {
                    columns.push(format!("date_trunc('day', {column}) AS {column}"));
                } else {
                    columns.push(column);
                }
            }
            let keys = columns.len();
            for measure in measures {
                for function in &measure.functions {
                    let call = match function {
                        MeasureFunction::Sum => "sum",
                        MeasureFunction::Count => "count",
                        MeasureFunction::Min => "min",
                        MeasureFunction::Max => "max",
                        // Not kept: distinct counts do not merge without sketches.
                        MeasureFunction::ApproxCountDistinct => continue,
                    };
                    columns.push(format!(
                        "{call}({}) AS {}",
                        quoted(&measure.column),
                        quoted(&measure_column(&measure.column, *function))
                    ));
                }
            }
            columns.push(format!("count(*) AS {}", quoted(COUNT_COLUMN)));
            let group: Vec<String> = (1..=keys).map(|i| i.to_string()).collect();
            format!(
                "SELECT {} FROM {dataset} GROUP BY {}",
                columns.join(", "),
                group.join(", ")
            )
        }
    }
}

/// A reflection's state as `sys.reflections` shows it, and why it cannot serve.
pub fn status(
    record: &ReflectionRecord,
    current_columns: Option<&str>,
    refreshing: bool,
    now_ms: u64,
) -> (&'static str, Option<String>) {
    if !record.enabled {
        return ("DISABLED", Some("disabled".to_string()));
    }
    if current_columns.is_some_and(|c| c != record.dataset_columns) {
        return (
            "INVALID",
            Some("invalid: the dataset's columns changed since it was defined".to_string()),
        );
    }
    if let Some(error) = &record.last_error {
        return ("FAILED", Some(format!("failed: {error}")));
    }
    let Some(materialization) = &record.materialization else {
        let state = if refreshing { "REFRESHING" } else { "NONE" };
        return (state, Some("no materialization yet".to_string()));
    };
    if now_ms
        > materialization
            .data_as_of_ms
            .saturating_add(record.grace_ms)
    {
        return (
            "EXPIRED",
            Some("expired: past its grace period".to_string()),
        );
    }
    if refreshing {
        return ("REFRESHING", None);
    }
    ("CAN_ACCELERATE", None)
}
