//! The storm: 200 clients (half Flight SQL, half REST, each on its own connection)
//! connect at the same moment to a cluster of processes (a coordinator and two executors
//! of two slots) and run `SELECT 1`, a catalog call, an insert and — every other client —
//! a TPC-H SF0.1 query. Only clear refusals are allowed; answers agree, every acknowledged
//! insert is there, every process lives and the numbers are printed. Bigger storms:
//! `quarry-bench --storm --clients N --rounds R`.

use std::path::Path;

use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::storm::{self, StormConfig};
use quarry_sql_tests::tpch;

const MEMORY_BOUND: u64 = 4 * 1024 * 1024 * 1024;

#[test]
fn two_hundred_clients_at_once_get_answers_or_clear_refusals() {
    let data = tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), 0.1, 2).expect("TPC-H data");
    let mut cluster = ProcessCluster::start(2, 2, &["--log", "warn"]);
    storm::prepare(&cluster, &data).expect("tables");
    let config = StormConfig {
        clients: 200,
        rounds: 1,
        tpch_every: 2,
    };
    let report = storm::run(&mut cluster, config);
    println!("{report}");
    let problems = report.problems();
    assert!(problems.is_empty(), "{problems:#?}\n{report}");
    let answered: usize = report.answered.values().map(|(n, _, _)| n).sum();
    let refused: usize = report.errors.refused.values().sum();
    assert_eq!(answered + refused, 200 * 4 + 100, "{report}");
    for (name, after) in &report.after {
        let peak = after.map(|v| v.peak_rss).unwrap_or(0);
        assert!(peak < MEMORY_BOUND, "{name} peaked at {peak} bytes");
    }
}
