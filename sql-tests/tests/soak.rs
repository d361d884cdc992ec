//! A short soak: a mixed load (queries over both doors, inserts with OPTIMIZE and VACUUM,
//! reflection refreshes, clients leaving mid-answer) on a cluster of processes while every
//! process's memory, open files and threads are sampled; it fails on an error, a lost
//! insert, a dead process or growth. `QUARRY_SOAK_SECONDS` (default 150) sets the length;
//! the hour-long run is `quarry-bench --soak --minutes 60`.

use std::path::Path;
use std::time::Duration;

use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::soak::{self, SoakConfig};
use quarry_sql_tests::tpch;

#[test]
fn a_mixed_load_holds_steady() {
    let seconds = std::env::var("QUARRY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), 0.1, 2).expect("TPC-H data");
    let mut cluster = ProcessCluster::start(2, 2, &["--log", "warn"]);
    soak::prepare(&cluster, &data).expect("tables");
    let config = SoakConfig {
        duration: Duration::from_secs(seconds),
        sample_every: Duration::from_secs(10),
    };
    let report = soak::run(&mut cluster, config, |_| {});
    println!("{report}");
    let problems = report.problems();
    assert!(problems.is_empty(), "{problems:#?}\n{report}");
    assert!(report.calls.len() >= 8, "every kind of call ran: {report}");
}
