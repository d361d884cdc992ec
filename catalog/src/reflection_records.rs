//! The records of reflections: their definitions (raw: some of a dataset's columns;
//! aggregation: measures grouped by dimensions), the materialization that serves each, and
//! the refresh policies set on sources and datasets. Stored by [`crate::reflections`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReflectionRecord {
    pub name: String,
    /// The dataset (table or view) it materializes.
    pub schema: String,
    pub dataset: String,
    pub kind: ReflectionKind,
    #[serde(default)]
    pub partition_by: Vec<String>,
    #[serde(default)]
    pub localsort_by: Vec<String>,
    pub enabled: bool,
    /// The dataset's columns when the reflection was defined (encoded Arrow schema); a
    /// dataset whose columns changed makes the reflection invalid.
    pub dataset_columns: String,
    /// How often it is refreshed (None: only when asked) and how long a materialization
    /// serves after its data was read (milliseconds).
    pub refresh_every_ms: Option<u64>,
    pub grace_ms: u64,
    /// What serves queries now, if anything.
    pub materialization: Option<Materialization>,
    /// The last refresh's failure, cleared by a refresh that succeeds.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ReflectionKind {
    Raw {
        display: Vec<String>,
    },
    Aggregate {
        dimensions: Vec<Dimension>,
        measures: Vec<Measure>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    pub column: String,
    /// `BY DAY`: kept at day granularity, serving day, week, month, quarter and year.
    #[serde(default)]
    pub by_day: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub column: String,
    pub functions: Vec<MeasureFunction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureFunction {
    Sum,
    Count,
    Min,
    Max,
    ApproxCountDistinct,
}

impl MeasureFunction {
    pub fn name(self) -> &'static str {
        match self {
            MeasureFunction::Sum => "SUM",
            MeasureFunction::Count => "COUNT",
            MeasureFunction::Min => "MIN",
            MeasureFunction::Max => "MAX",
            MeasureFunction::ApproxCountDistinct => "APPROX_COUNT_DISTINCT",
        }
    }
}

/// What one aggregate of a query grouped by, filtered on and computed over one dataset,
/// as an aggregation reflection would need it: the input of `sys.recommend_reflections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateShape {
    pub schema: String,
    pub dataset: String,
    /// Grouping keys and filtered columns.
    pub dimensions: Vec<Dimension>,
    pub measures: Vec<Measure>,
}

/// One refresh's output: a Delta table in the reflection store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Materialization {
    /// The folder URL of its table.
    pub location: String,
    /// The refresh job that wrote it.
    pub job_id: String,
    /// When its inputs were read (ms since the epoch): how old its data is.
    pub data_as_of_ms: u64,
    pub finished_ms: u64,
    pub duration_ms: u64,
    pub rows: u64,
    pub bytes: u64,
    pub files: u64,
    /// `FULL` or `INCREMENTAL`, and why.
    pub method: String,
    pub reason: String,
    /// What it was computed from.
    pub inputs: Vec<InputSnapshot>,
    /// Its table's columns (encoded Arrow schema).
    pub columns: String,
}

/// One input of a materialization: a file with its size and modification time, or a
/// managed table at a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InputSnapshot {
    pub path: String,
    pub size: u64,
    /// Modification time (ms) of a file; the version of a managed table.
    pub stamp: u64,
}

/// When reflections are refreshed and how long they serve, set on a dataset or on a
/// source (the default for its datasets). What is not set falls back to the source's,
/// then to Quarry's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReflectionPolicy {
    /// None: not set here.
    #[serde(default)]
    pub refresh: Option<Refresh>,
    #[serde(default)]
    pub grace_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    EveryMs(u64),
    /// Only when asked.
    Never,
}

impl Refresh {
    pub fn every_ms(self) -> Option<u64> {
        match self {
            Refresh::EveryMs(ms) => Some(ms),
            Refresh::Never => None,
        }
    }
}
