//! Bounds on the numeric DataFusion settings a client may set with `SET`.
//!
//! DataFusion sizes some allocations from settings up front — builders of `batch_size`
//! rows, a buffer of `metadata_size_hint` bytes, channels and vectors per target partition
//! or buffered batch — and a failed allocation aborts the process: it cannot be caught like
//! a panic. So the coordinator refuses values past these bounds when a session sets them,
//! and an executor checks a task's settings again before using them (a confused or
//! mismatched coordinator must not take it down either).

use crate::QuarryError;

/// Settings DataFusion allocates from, and the most each may be.
const BOUNDS: &[(&str, u64)] = &[
    ("datafusion.execution.batch_size", 1 << 20),
    ("datafusion.execution.target_partitions", 4_096),
    ("datafusion.execution.planning_concurrency", 4_096),
    ("datafusion.execution.meta_fetch_concurrency", 4_096),
    ("datafusion.execution.minimum_parallel_output_files", 4_096),
    (
        "datafusion.execution.max_buffered_batches_per_output_file",
        4_096,
    ),
    ("datafusion.execution.parquet.metadata_size_hint", 64 << 20),
    (
        "datafusion.execution.parquet.maximum_parallel_row_group_writers",
        4_096,
    ),
    (
        "datafusion.execution.parquet.maximum_buffered_record_batches_per_stream",
        4_096,
    ),
    ("datafusion.execution.parquet.max_row_group_size", 1 << 26),
    ("datafusion.execution.parquet.write_batch_size", 1 << 20),
    (
        "datafusion.execution.parquet.data_page_row_count_limit",
        1 << 26,
    ),
    ("datafusion.execution.parquet.data_pagesize_limit", 1 << 30),
    (
        "datafusion.execution.parquet.dictionary_page_size_limit",
        1 << 30,
    ),
];

/// The most any other numeric setting may be (a terabyte, for byte sizes).
const OTHERWISE: u64 = 1 << 40;

/// Settings that must be at least one.
const POSITIVE: &[&str] = &["datafusion.execution.batch_size"];

/// Refuse a value DataFusion could not honour without risking the process.
pub fn check(key: &str, value: &str) -> Result<(), QuarryError> {
    let key = key.to_ascii_lowercase();
    let Ok(number) = value.trim().parse::<u64>() else {
        return Ok(());
    };
    let bound = BOUNDS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(OTHERWISE, |(_, bound)| *bound);
    if number > bound {
        return Err(QuarryError::invalid(format!(
            "{key} may be at most {bound}; {number} is too large"
        )));
    }
    if number == 0 && POSITIVE.contains(&key.as_str()) {
        return Err(QuarryError::invalid(format!("{key} must be at least 1")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_sizes_are_bounded_and_the_rest_left_alone() {
        let huge = "1782259218880304056";
        let e = check("datafusion.execution.batch_size", huge).expect_err("refused");
        assert!(e.message.contains("at most 1048576"), "{e}");
        assert!(check("DATAFUSION.EXECUTION.TARGET_PARTITIONS", "100000").is_err());
        assert!(check("datafusion.execution.batch_size", "0").is_err());
        assert!(check("datafusion.optimizer.max_passes", huge).is_err());
        check("datafusion.execution.batch_size", "65536").expect("a large batch is fine");
        check("datafusion.execution.target_partitions", "0").expect("0: one per core");
        check(
            "datafusion.execution.sort_spill_reservation_bytes",
            "1073741824",
        )
        .expect("a gigabyte reservation");
        check("quarry.query_timeout", "5m").expect("not a number");
        check("datafusion.execution.batch_size", "-3").expect("DataFusion refuses it itself");
    }
}
