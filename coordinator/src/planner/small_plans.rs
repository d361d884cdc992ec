//! Where a plan runs. A plan whose whole input is small runs on the coordinator as one
//! in-process plan: scheduling stages on executors and moving their outputs through the
//! exchange costs milliseconds per hop, while a few thousand rows are read and joined
//! here in microseconds. Like Dremio's `planner.slice_target` (a plan estimated under
//! 100,000 rows is not parallelized), the threshold is on rows, with a cap on bytes.
//!
//! The estimate comes from what planning already read: file sizes from the listing and
//! row counts from Parquet footers (DataFusion's per-file statistics). Files without a
//! row count (CSV, JSON, Parquet without statistics) are counted as one row per
//! [`BYTES_PER_UNKNOWN_ROW`] bytes, which errs towards the executors.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// Bytes of a file counted as one row when the file does not say how many it holds: rows
/// of CSV, JSON or compressed Parquet take more than this, so the guess makes a file look
/// bigger than it is, never smaller.
const BYTES_PER_UNKNOWN_ROW: u64 = 4;

/// The rows a file holds, as its table's log says (Delta's `numRecords`), attached to
/// its `PartitionedFile` by table providers whose files carry no DataFusion statistics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownRows(pub u64);

/// What a plan reads: the files of all its scans, each file once (a self-join or a
/// subquery over the same table reads the same files again, from the page cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InputEstimate {
    pub scans: usize,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
    /// Every file said how many rows it holds.
    pub rows_exact: bool,
    /// The plan writes files (an INSERT or CREATE TABLE AS): executors write tables.
    pub writes: bool,
    /// A leaf that only executors run (the stall test source).
    pub executor_only: bool,
    /// Some files are in executors' data directories: each is read where it is.
    pub executor_files: bool,
}

impl InputEstimate {
    pub(crate) fn of(plan: &Arc<dyn ExecutionPlan>) -> InputEstimate {
        let mut estimate = InputEstimate {
            rows_exact: true,
            ..InputEstimate::default()
        };
        // Every file read, by store and path: its size and rows, when known.
        let mut files: HashMap<(String, String), (u64, Option<u64>)> = HashMap::new();
        let _ = plan.apply(|node| {
            if let Some(source) = node.downcast_ref::<DataSourceExec>()
                && let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>()
            {
                estimate.scans += 1;
                estimate.executor_files |=
                    scan.object_store_url.as_str() == quarry_common::protocol::CLUSTER_FILES_URL;
                add_files(scan, &mut files);
            } else if node
                .downcast_ref::<quarry_common::table_write::FileWriteExec>()
                .is_some()
                || node
                    .downcast_ref::<crate::datasets::delta::DeltaCommitExec>()
                    .is_some()
            {
                estimate.writes = true;
            } else if node
                .downcast_ref::<quarry_common::stall::StallExec>()
                .is_some()
            {
                estimate.executor_only = true;
            }
            Ok(TreeNodeRecursion::Continue)
        });
        for (size, rows) in files.into_values() {
            estimate.files += 1;
            estimate.bytes = estimate.bytes.saturating_add(size);
            let rows = rows.unwrap_or_else(|| {
                estimate.rows_exact = false;
                size / BYTES_PER_UNKNOWN_ROW
            });
            estimate.rows = estimate.rows.saturating_add(rows);
        }
        estimate
    }

    /// Is it small enough for the coordinator under these limits?
    pub(crate) fn is_small(&self, max_rows: u64, max_bytes: u64) -> bool {
        self.scans > 0
            && !self.writes
            && !self.executor_only
            && self.rows <= max_rows
            && self.bytes <= max_bytes
    }

    /// Can it run whole on one executor, reading at most `max_bytes`? Files in
    /// executors' data directories are spread over the executors holding them.
    pub(crate) fn fits_one_executor(&self, max_bytes: u64) -> bool {
        self.scans > 0
            && !self.writes
            && !self.executor_only
            && !self.executor_files
            && self.bytes <= max_bytes
    }
}

/// The files `scan` reads (a file split into ranges across partitions appears once).
fn add_files(scan: &FileScanConfig, files: &mut HashMap<(String, String), (u64, Option<u64>)>) {
    for file in scan.file_groups.iter().flat_map(|g| g.files()) {
        let rows = file
            .statistics
            .as_ref()
            .and_then(|s| match s.num_rows {
                Precision::Exact(n) => Some(n as u64),
                _ => None,
            })
            .or_else(|| file.extension::<KnownRows>().map(|known| known.0));
        files.insert(
            (
                scan.object_store_url.as_str().to_string(),
                file.object_meta.location.to_string(),
            ),
            (file.object_meta.size, rows),
        );
    }
}
