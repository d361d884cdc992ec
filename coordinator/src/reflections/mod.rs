//! Reflections: materializations of a dataset that queries use without naming them.
//! A raw reflection keeps some of a dataset's columns as Parquet; an aggregation
//! reflection keeps measures (SUM, COUNT, MIN, MAX, and HyperLogLog sketches for
//! APPROX_COUNT_DISTINCT) grouped by dimensions, plus the row count. A refresh is a distributed write of the materialization's query into a Delta
//! table in the reflection store (`engine/reflections.rs`); `matching` decides which
//! queries a materialization answers and rewrites their plans.

pub(crate) mod candidates;
mod chain;
pub(crate) mod matching;
pub(crate) mod merge;
pub(crate) mod raw;
pub(crate) mod recommend;
mod rollup;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use arrow::datatypes::{DataType, Schema};
use quarry_catalog::{Dimension, Measure, MeasureFunction, ReflectionKind, ReflectionRecord};
use quarry_common::QuarryError;

/// What the coordinator knows of reflections beyond their records: the refreshes
/// running, and how often planning considered, matched and chose each one.
#[derive(Debug, Default)]
pub struct ReflectionState {
    /// Reflection name -> the id of its running refresh job.
    pub refreshing: Mutex<HashMap<String, String>>,
    usage: Mutex<HashMap<String, Usage>>,
    /// Reflection name -> (refreshes failed in a row, when the last one ended).
    failures: Mutex<HashMap<String, (u32, u64)>>,
    /// Materialization folder -> the queries planned over it that are still alive.
    readers: Mutex<HashMap<String, usize>>,
}

/// A query's hold on a materialization folder: while any is alive, a replaced
/// materialization is kept.
#[derive(Debug)]
pub struct Lease {
    state: std::sync::Arc<ReflectionState>,
    folder: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut readers) = self.state.readers.lock()
            && let Some(count) = readers.get_mut(&self.folder)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                readers.remove(&self.folder);
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub considered: u64,
    pub matched: u64,
    pub chosen: u64,
}

impl ReflectionState {
    /// Hold `folder` for a query that may read it.
    pub fn lease(self: &std::sync::Arc<Self>, folder: &str) -> Lease {
        if let Ok(mut readers) = self.readers.lock() {
            *readers.entry(folder.to_string()).or_default() += 1;
        }
        Lease {
            state: std::sync::Arc::clone(self),
            folder: folder.to_string(),
        }
    }

    /// Does a live query hold `folder`?
    pub fn is_read(&self, folder: &str) -> bool {
        self.readers
            .lock()
            .map(|r| r.get(folder).is_some_and(|n| *n > 0))
            .unwrap_or(true)
    }

    pub fn is_refreshing(&self, name: &str) -> bool {
        self.refreshing
            .lock()
            .map(|r| r.contains_key(name))
            .unwrap_or(false)
    }

    pub fn count(&self, considered: &[candidates::Considered]) {
        if let Ok(mut usage) = self.usage.lock() {
            for c in considered {
                let entry = usage.entry(c.name.clone()).or_default();
                entry.considered += 1;
                entry.matched += u64::from(c.matched);
                entry.chosen += u64::from(c.chosen);
            }
        }
    }

    pub fn failed(&self, name: &str, now_ms: u64) {
        if let Ok(mut failures) = self.failures.lock() {
            let entry = failures.entry(name.to_string()).or_insert((0, now_ms));
            *entry = (entry.0.saturating_add(1), now_ms);
        }
    }

    pub fn succeeded(&self, name: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(name);
        }
    }

    /// When a failed reflection is tried again: 30 s after its first failure, doubling
    /// with each further one, at most an hour apart.
    pub fn retry_at(&self, name: &str) -> Option<u64> {
        let failures = self.failures.lock().ok()?;
        let (count, last) = *failures.get(name)?;
        let backoff = 30_000u64.saturating_mul(1 << count.saturating_sub(1).min(7));
        Some(last.saturating_add(backoff.min(3_600_000)))
    }

    pub fn usage(&self, name: &str) -> Usage {
        self.usage
            .lock()
            .ok()
            .and_then(|u| u.get(name).copied())
            .unwrap_or_default()
    }
}

/// A definition as one line: `DIMENSIONS (date BY DAY, city) MEASURES (revenue (SUM))`.
pub(crate) fn describe(record: &ReflectionRecord) -> String {
    let mut text = match &record.kind {
        ReflectionKind::Raw { display } => format!("DISPLAY ({})", display.join(", ")),
        ReflectionKind::Aggregate {
            dimensions,
            measures,
        } => format!(
            "DIMENSIONS ({}) MEASURES ({})",
            dimensions_text(dimensions, &|c| c.to_string()),
            measures_text(measures, &|c| c.to_string())
        ),
    };
    if !record.partition_by.is_empty() {
        text.push_str(&format!(
            " PARTITION BY ({})",
            record.partition_by.join(", ")
        ));
    }
    if !record.localsort_by.is_empty() {
        text.push_str(&format!(
            " LOCALSORT BY ({})",
            record.localsort_by.join(", ")
        ));
    }
    text
}

/// Dimensions as the DDL writes them (`date BY DAY, city`), each column named by `name`.
pub(crate) fn dimensions_text(dimensions: &[Dimension], name: &dyn Fn(&str) -> String) -> String {
    let dims: Vec<String> = dimensions
        .iter()
        .map(|d| {
            if d.by_day {
                format!("{} BY DAY", name(&d.column))
            } else {
                name(&d.column)
            }
        })
        .collect();
    dims.join(", ")
}

/// Measures as the DDL writes them (`revenue (SUM, COUNT)`), each column named by `name`.
pub(crate) fn measures_text(measures: &[Measure], name: &dyn Fn(&str) -> String) -> String {
    let measures: Vec<String> = measures
        .iter()
        .map(|m| {
            let functions: Vec<&str> = m.functions.iter().map(|f| f.name()).collect();
            format!("{} ({})", name(&m.column), functions.join(", "))
        })
        .collect();
    measures.join(", ")
}

/// An aggregation reflection's row count column.
pub(crate) const COUNT_COLUMN: &str = "__count";

/// Dremio's defaults: refreshed hourly, served for 3 hours after its data was read.
pub(crate) const DEFAULT_REFRESH_MS: u64 = 3_600_000;
pub(crate) const DEFAULT_GRACE_MS: u64 = 3 * 3_600_000;

/// The materialization's column of a measure.
pub(crate) fn measure_column(column: &str, function: MeasureFunction) -> String {
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
pub(crate) fn validate(
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
                if measure
                    .functions
                    .contains(&MeasureFunction::ApproxCountDistinct)
                    && !quarry_common::sketches::sketchable(f.data_type())
                {
                    return Err(QuarryError::invalid(format!(
                        "APPROX_COUNT_DISTINCT of '{}', a {} column: approximate distinct counts take integers of 32 bits or more, decimals, dates, times and strings",
                        measure.column,
                        f.data_type()
                    )));
                }
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
pub(crate) fn materialization_sql(record: &ReflectionRecord, schema: &Schema) -> String {
    let dataset = format!(
        "{}.{}.{}",
        quoted(quarry_catalog::CATALOG_NAME),
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
                        MeasureFunction::ApproxCountDistinct => quarry_common::sketches::APPROX_SET,
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

/// Every reflection's status as `sys.reflections` shows it (none when the catalog cannot
/// be read), for `/metrics`.
pub(crate) fn statuses(
    catalog: &quarry_catalog::Catalog,
    state: &ReflectionState,
    now_ms: u64,
) -> Vec<&'static str> {
    catalog
        .list_reflections()
        .unwrap_or_default()
        .iter()
        .map(|s| status(&s.record, None, state.is_refreshing(&s.record.name), now_ms).0)
        .collect()
}

/// Every status [`status`] gives.
pub(crate) const STATUSES: [&str; 7] = [
    "CAN_ACCELERATE",
    "REFRESHING",
    "NONE",
    "EXPIRED",
    "FAILED",
    "INVALID",
    "DISABLED",
];

/// A reflection's state as `sys.reflections` shows it, and why it cannot serve.
pub(crate) fn status(
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
