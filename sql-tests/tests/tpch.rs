//! TPC-H at scale factor 0.1 on a cluster of three executors: every query's answer must
//! equal in-process DataFusion's over the same files; the stage DAGs of a few queries
//! are kept as golden files (`QUARRY_GOLDEN_UPDATE=1` rewrites them). Both run twice:
//! with the default broadcast threshold (at this scale every inner join broadcasts its
//! build side) and with it at zero (every join hashes both sides through the exchange).

use std::path::{Path, PathBuf};

use quarry_sql_tests::{SqlTestCluster, query, tpch};

const SF: f64 = 0.1;
const EXECUTORS: usize = 3;

fn data() -> PathBuf {
    tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, EXECUTORS).expect("TPC-H data")
}

/// Settings that make every hash join partitioned (both sides shuffled).
const PARTITIONED_JOINS: [&str; 2] = [
    "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
    "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
];

type SessionRef = quarry_coordinator::service::SessionHandle;

/// A second session of `cluster` whose joins are all partitioned.
async fn partitioned_session(cluster: &SqlTestCluster) -> SessionRef {
    let engine = cluster.service();
    let session = cluster.session("tpch-partitioned");
    for sql in PARTITIONED_JOINS {
        query(&engine, &session, sql).await.expect("setting");
    }
    session
}

async fn cluster(dir: &Path) -> (SqlTestCluster, SessionRef) {
    let cluster = SqlTestCluster::start(EXECUTORS).await.expect("cluster");
    let engine = cluster.service();
    let session = cluster.session("tpch");
    for sql in tpch::create_tables_sql(dir) {
        query(&engine, &session, &sql).await.expect("tables");
    }
    (cluster, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_match_datafusion() {
    let dir = data();
    let expected = tpch::datafusion_answers(&dir, EXECUTORS)
        .await
        .expect("DataFusion's answers");
    let (cluster, session) = cluster(&dir).await;
    let engine = cluster.service();
    let partitioned = partitioned_session(&cluster).await;
    let mut mismatches = Vec::new();
    for (n, session, joins) in (1..=22)
        .map(|n| (n, &session, "broadcast"))
        .chain((1..=22).map(|n| (n, &partitioned, "partitioned")))
    {
        let sql = tpch::query(n);
        let batches = query(&engine, session, &sql)
            .await
            .unwrap_or_else(|e| panic!("Q{n} ({joins} joins) failed: {e}"));
        let got = tpch::answer(&sql, &batches).expect("format");
        assert!(
            !got.is_empty() || expected[n - 1].is_empty(),
            "Q{n} returned nothing"
        );
        mismatches.extend(tpch::mismatch(
            &format!("Q{n} ({joins} joins)"),
            &got,
            &expected[n - 1],
        ));
    }
    cluster.cluster.shutdown().await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_stage_plans_match_golden_files() {
    let dir = data();
    let (cluster, session) = cluster(&dir).await;
    let engine = cluster.service();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    let update = std::env::var_os("QUARRY_GOLDEN_UPDATE").is_some();
    let partitioned = partitioned_session(&cluster).await;
    let mut differences = Vec::new();
    let cases = [1, 3, 5, 9, 13, 18]
        .into_iter()
        .map(|n| (n, &session, ""))
        .chain(
            [5, 9]
                .into_iter()
                .map(|n| (n, &partitioned, "-partitioned")),
        );
    for (n, session, suffix) in cases {
        let batches = query(&engine, session, &format!("EXPLAIN {}", tpch::query(n)))
            .await
            .expect("explain");
        let rows = tpch::rows(&batches).expect("rows");
        let plan = rows
            .iter()
            .find_map(|r| r.strip_prefix("distributed_plan | "))
            .expect("a distributed plan")
            .replace(
                &dir.display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_string(),
                "$DATA",
            );
        let file = golden.join(format!("tpch-q{n}{suffix}.txt"));
        if update {
            std::fs::write(&file, &plan).expect("write golden file");
        } else {
            let expected = std::fs::read_to_string(&file).unwrap_or_default();
            if expected != plan {
                differences.push(format!("Q{n} differs from {}:\n{plan}", file.display()));
            }
        }
    }
    cluster.cluster.shutdown().await;
    assert!(
        differences.is_empty(),
        "{}\n(rerun with QUARRY_GOLDEN_UPDATE=1 to accept)",
        differences.join("\n")
    );
}
