//! Every door fuzzed for a bounded time against a real cluster (a coordinator and two
//! executors of two slots, each its own process): the processes stay up, answer `SELECT 1`
//! after every few inputs, and hold no job, task slot, exchange output, spill file or extra
//! open file afterwards. A decoy server that aborts on one kind of statement proves the
//! driver finds a crash and names its input.
//!
//! `QUARRY_FUZZ_SECONDS` (default 20) is each target's time; `QUARRY_FUZZ_SEED` (default 1)
//! picks the input stream. Hours-long runs: `quarry-bench --fuzz all --minutes N`.

use std::time::Duration;

use quarry_common::protocol::Setting;
use quarry_sql_tests::fuzz::cluster::{Decoy, FuzzCluster};
use quarry_sql_tests::fuzz::internal::InternalTarget;
use quarry_sql_tests::fuzz::sql::SqlTarget;
use quarry_sql_tests::fuzz::{Budget, run, target};

fn budget() -> Budget {
    let seconds = std::env::var("QUARRY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Budget::for_time(Duration::from_secs(seconds))
}

fn seed() -> u64 {
    std::env::var("QUARRY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn fuzz(name: &str) {
    let mut cluster = FuzzCluster::start(2, 2).expect("a cluster with fixture tables");
    let mut target = target(name, &cluster).expect("the target");
    let report = run(&mut cluster, target.as_mut(), seed(), budget());
    println!("{report}");
    assert!(report.inputs > 0, "no input was sent");
    assert!(report.findings.is_empty(), "{report}");
}

#[test]
fn sql_statements_never_take_a_process_down() {
    fuzz("sql");
}

#[test]
fn rest_requests_never_take_a_process_down() {
    fuzz("rest");
}

#[test]
fn flight_sql_calls_never_take_a_process_down() {
    fuzz("flight");
}

#[test]
fn postgres_protocol_messages_never_take_a_process_down() {
    fuzz("pgwire");
}

#[test]
fn damaged_files_never_take_a_process_down() {
    fuzz("files");
}

#[test]
fn a_confused_coordinator_never_takes_an_executor_down() {
    fuzz("internal");
}

/// Found by the internal target (seed 1): a task whose `batch_size` was
/// 1782259218880304056 made the executor allocate past memory and abort. Settings that
/// size allocations are bounded, on the executor as on the coordinator's `SET`.
#[test]
fn an_executor_refuses_settings_that_would_exhaust_memory() {
    let cluster = FuzzCluster::start(1, 1).expect("a cluster");
    let internal = format!("127.0.0.1:{}", cluster.cluster.internal);
    let mut target =
        InternalTarget::new(&cluster.cluster.rest, &internal, &cluster.root).expect("executors");
    let setting = |key: &str, value: &str| Setting {
        key: key.to_string(),
        value: value.to_string(),
    };
    for (key, value) in [
        ("datafusion.execution.batch_size", "1782259218880304056"),
        ("datafusion.execution.target_partitions", "4000000000"),
        (
            "datafusion.execution.parquet.metadata_size_hint",
            "99999999999999",
        ),
    ] {
        let refused = target
            .real_task(vec![setting(key, value)])
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
        assert!(refused.message().contains("may be at most"), "{refused}");
    }
    let ran = target.real_task(vec![setting("datafusion.execution.batch_size", "4096")]);
    assert!(ran.is_ok(), "{ran:?}");
    let mut cluster = cluster;
    assert_eq!(cluster.cluster.dead(), Vec::<String>::new());
    quarry_sql_tests::fuzz::cluster::select_one(&cluster.cluster.rest).expect("SELECT 1");
}

/// The harness can fail: a server that aborts on `EXISTS` is found, and the finding names
/// a statement holding it.
#[test]
fn the_driver_finds_a_planted_crash() {
    let mut decoy = Decoy::start("EXISTS").expect("the decoy starts");
    let mut target = SqlTarget::new(&decoy.rest.base, "/nowhere");
    let budget = Budget {
        time: Duration::from_secs(60),
        max_inputs: 5_000,
        check_every: 25,
    };
    let report = run(&mut decoy, &mut target, seed(), budget);
    println!("{report}");
    let finding = report.findings.first().expect("the planted crash is found");
    assert!(finding.what.contains("died"), "{finding:?}");
    assert!(
        finding.input.to_uppercase().contains("EXISTS"),
        "{finding:?}"
    );
}
