//! TPC-H at SF0.1 on clusters of separate processes in the shapes users run: one
//! executor with four slots, two with two, three with two, two with one. Every answer
//! must equal in-process DataFusion's, and no query may hang (multi-slot executors once
//! deadlocked on Q7/Q9: two tasks of one executor reading from the same peer).
//! At SF0.1 a query would run whole on one executor; these shapes spread every plan over
//! the executors as stages, but one, which runs each query on one of two executors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::tpch;

const SF: f64 = 0.1;
/// Files per table: enough for every shape's slots.
const PARTS: usize = 3;

pub fn data() -> PathBuf {
    tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, PARTS).expect("TPC-H data")
}

/// Plans run as stages over the executors, however small their input.
const SPREAD: &str = "SET quarry.one_executor_max_bytes = 0";

fn run_shape(executors: usize, slots: usize, settings: &[&str]) {
    run_queries(executors, slots, &[&[SPREAD], settings].concat());
}

fn run_queries(executors: usize, slots: usize, settings: &[&str]) {
    let data = data();
    let cluster = ProcessCluster::start(executors, slots, &[]);
    let expected = cluster
        .rest
        .runtime
        .block_on(tpch::datafusion_answers(&data, executors * slots))
        .expect("DataFusion's answers");
    cluster.create_tpch_tables(&data);
    let mut mismatches = Vec::new();
    let mut took = Vec::new();
    for n in 1..=22 {
        let sql = tpch::query(n);
        // Settings travel with the statement (REST requests have no session).
        let script = settings
            .iter()
            .map(|s| format!("{s};\n"))
            .chain([sql.clone()])
            .collect::<String>();
        let id = cluster.rest.start(&script);
        let (job, elapsed) = cluster.rest.wait_job(&id, Duration::from_secs(120));
        assert_eq!(
            job["state"], "COMPLETED",
            "Q{n} on {executors} x {slots} slots: {job}"
        );
        took.push(format!("Q{n} {:.2}s", elapsed.as_secs_f64()));
        let got = cluster.rest.answer(&id, &sql);
        mismatches.extend(tpch::mismatch(&format!("Q{n}"), &got, &expected[n - 1]));
    }
    eprintln!("{executors} executors x {slots} slots: {}", took.join(", "));
    cluster.rest.wait_until_idle(Duration::from_secs(10));
    assert!(
        mismatches.is_empty(),
        "{executors} executors x {slots} slots:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn tpch_on_one_executor_with_four_slots() {
    run_shape(1, 4, &[]);
}

#[test]
fn tpch_on_two_executors_with_two_slots() {
    run_shape(2, 2, &[]);
}

/// The same shape with every join partitioned: both sides hashed through the exchange.
#[test]
fn tpch_on_two_executors_with_two_slots_and_partitioned_joins() {
    run_shape(
        2,
        2,
        &[
            "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
            "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
        ],
    );
}

/// Each query whole on one of two executors with two slots: one task running two partitions.
#[test]
fn tpch_on_one_of_two_executors_with_two_slots() {
    run_queries(2, 2, &[]);
}

#[test]
fn tpch_on_three_executors_with_two_slots() {
    run_shape(3, 2, &[]);
}

#[test]
fn tpch_on_two_executors_with_one_slot() {
    run_shape(2, 1, &[]);
}
