//! What a stage plan leaves to run time: scans narrowed by the output of other stages
//! ([`DynamicFilter`], found by `dynamic_filters`) and joins whose strategy waits for
//! their build side's real size ([`AdaptiveJoin`], found by `adaptive_joins`). The
//! scheduler carries them out as stages finish.

/// One scan narrowed by the output of one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicFilter {
    /// The stage whose output holds the join's build keys.
    pub build_stage: u32,
    /// Output columns of the build stage, one per key.
    pub build_columns: Vec<u32>,
    /// The stage holding the scan; it runs after the build stage.
    pub probe_stage: u32,
    /// Child indexes from the probe stage's plan down to the scan.
    pub scan_path: Vec<usize>,
    /// Output columns of the scan, paired with `build_columns`.
    pub scan_columns: Vec<usize>,
    /// The scan's key column names, for EXPLAIN.
    pub names: Vec<String>,
}

impl DynamicFilter {
    /// "stage 3 scan of k, fk: the range of stage 1's columns 0, 2".
    pub fn describe(&self) -> String {
        format!(
            "stage {} scan of {} narrowed to the range of stage {}'s output column{} {}",
            self.probe_stage,
            self.names.join(", "),
            self.build_stage,
            if self.build_columns.len() == 1 {
                ""
            } else {
                "s"
            },
            self.build_columns
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A join whose strategy is chosen once its build stage has run.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveJoin {
    /// The stage holding the join, and the join's path in its plan.
    pub join_stage: u32,
    pub join_path: Vec<usize>,
    pub build_stage: u32,
    /// Runs after the build stage; moves into the join's stage for a broadcast.
    pub probe_stage: u32,
    /// The largest build side broadcast (the optimizer's thresholds).
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl AdaptiveJoin {
    pub fn describe(&self) -> String {
        format!(
            "stage {}'s join broadcasts stage {} if it holds at most {} rows and {} bytes, \
             reading stage {}'s input itself; else it stays partitioned",
            self.join_stage, self.build_stage, self.max_rows, self.max_bytes, self.probe_stage
        )
    }

    /// Whether a build side of `rows` and `bytes` is broadcast.
    pub fn broadcasts(&self, rows: u64, bytes: u64) -> bool {
        rows <= self.max_rows && bytes <= self.max_bytes
    }
}
