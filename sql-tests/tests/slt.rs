//! One test per `.slt` file, each against its own in-process cluster of 2 executors.

use std::path::PathBuf;

use quarry_sql_tests::SqlTestCluster;

async fn run(name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("slt")
        .join(name);
    let cluster = SqlTestCluster::start(2).await.expect("cluster starts");
    let result = cluster.run_file(&path).await;
    cluster.cluster.shutdown().await;
    if let Err(e) = result {
        panic!("{}: {e}", path.display());
    }
}

macro_rules! slt {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                run($file).await;
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
}
