//! Every `.slt` file, each against its own in-process cluster of 2 executors, once
//! straight into the engine and once through the Flight SQL port.

use std::path::PathBuf;

use quarry_sql_tests::{Mode, SqlTestCluster, slt_files};

fn slt_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt")
}

async fn run(name: &str, mode: Mode) {
    let path = slt_dir().join(name);
    let cluster = SqlTestCluster::start(2).await.expect("cluster starts");
    let result = cluster.run_file(&path, mode).await;
    cluster.cluster.shutdown().await;
    if let Err(e) = result {
        panic!("{} ({mode:?}): {e}", path.display());
    }
}

macro_rules! slt {
    ($($test:ident => $file:literal),* $(,)?) => {
        /// The files the tests below run.
        const LISTED: &[&str] = &[$($file),*];
        $(
            mod $test {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn in_process() {
                    run($file, Mode::InProcess).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn over_flight_sql() {
                    run($file, Mode::FlightSql).await;
                }
            }
        )*
    };
}

slt! {
    catalog => "catalog.slt",
    formats => "formats.slt",
    partitions => "partitions.slt",
    queries => "queries.slt",
    joins => "joins.slt",
    errors => "errors.slt",
    distribution => "distribution.slt",
    system => "system.slt",
    reflections => "reflections.slt",
}

/// A new `.slt` file anywhere under `slt/` fails this until it is listed above, so none
/// is silently skipped.
#[test]
fn every_slt_file_is_run() {
    let dir = slt_dir();
    for file in slt_files(&dir).expect("slt directory") {
        let name = file
            .strip_prefix(&dir)
            .expect("under slt/")
            .display()
            .to_string();
        assert!(
            LISTED.contains(&name.as_str()),
            "{name} is not run: add it to the slt! list in {}",
            file!()
        );
    }
}
