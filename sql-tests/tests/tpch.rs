//! TPC-H at scale factor 0.1 on a cluster of three executors: every query's answer must
//! equal in-process DataFusion's over the same files; the stage DAGs of a few queries
//! are kept as golden files (`QUARRY_GOLDEN_UPDATE=1` rewrites them). Both run twice:
//! with the default broadcast threshold (at this scale every inner join broadcasts its
//! build side) and with it at zero (every join hashes both sides through the exchange).
//! At this scale a query would run whole on one executor, so these sessions spread
//! every plan over the executors as stages; the answers are checked on one executor too.

use std::path::{Path, PathBuf};

use quarry_sql_tests::{SqlTestCluster, query, tpch};

const SF: f64 = 0.1;
const EXECUTORS: usize = 3;

fn data() -> PathBuf {
    tpch::cached(Path::new(env!("CARGO_TARGET_TMPDIR")), SF, EXECUTORS).expect("TPC-H data")
}

/// Plans run as stages over the executors, however small their input.
const SPREAD: &str = "SET quarry.one_executor_max_bytes = 0";

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
    for sql in std::iter::once(SPREAD).chain(PARTITIONED_JOINS) {
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
    query(&engine, &session, SPREAD).await.expect("setting");
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
    let whole = cluster.session("tpch-one-executor");
    let mut mismatches = Vec::new();
    for (n, session, joins) in (1..=22)
        .map(|n| (n, &session, "broadcast"))
        .chain((1..=22).map(|n| (n, &partitioned, "partitioned")))
        .chain((1..=22).map(|n| (n, &whole, "on one executor")))
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

/// Where TPC-H's plans run at SF0.1: anything over lineitem (600,572 rows) on the
/// executors, a query over the small dimension tables on the coordinator; EXPLAIN says
/// which and why. lineitem (24 MB) is within the default limit for one executor, where
/// the whole plan is one stage of one task; under a lower limit, or none, it is spread
/// over the executors as stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_inputs_run_on_the_executors_and_small_ones_on_the_coordinator() {
    let dir = data();
    let (cluster, spread) = cluster(&dir).await;
    let engine = cluster.service();
    let whole = cluster.session("tpch-one-executor");
    let lower = cluster.session("tpch-lower-limit");
    query(
        &engine,
        &lower,
        "SET quarry.one_executor_max_bytes = 1000000",
    )
    .await
    .expect("setting");
    let explain = |session: SessionRef, sql: String| {
        let engine = engine.clone();
        async move {
            let batches = query(&engine, &session, &format!("EXPLAIN {sql}"))
                .await
                .expect("explain");
            let rows = tpch::rows(&batches).expect("rows");
            let row = |name: &str| {
                rows.iter()
                    .find_map(|r| r.strip_prefix(&format!("{name} | ")).map(str::to_string))
                    .unwrap_or_else(|| panic!("no {name} row: {rows:?}"))
            };
            (row("placement"), row("distributed_plan"))
        }
    };
    let grouped = "SELECT l_returnflag, sum(l_quantity) FROM lineitem GROUP BY 1".to_string();
    for sql in [tpch::query(1), grouped] {
        let (placement, stages) = explain(whole.clone(), sql.clone()).await;
        assert!(
            placement.starts_with("runs on one executor: its input is 600572 rows")
                && placement.contains("at most quarry.one_executor_max_bytes = 128.0 MB"),
            "{sql}: {placement}"
        );
        assert!(
            stages.contains("Stage 1 (executors, 1 tasks") && !stages.contains("Stage 2"),
            "{sql}: {stages}"
        );
        for session in [&spread, &lower] {
            let (placement, stages) = explain(session.clone(), sql.clone()).await;
            assert!(
                placement.starts_with("runs on the executors: its input is 600572 rows"),
                "{sql}: {placement}"
            );
            assert!(stages.contains("Stage 2"), "{sql}: {stages}");
        }
    }
    let small = "SELECT r_name, count(*) FROM nation JOIN region ON n_regionkey = r_regionkey \
                 GROUP BY r_name";
    for session in [&whole, &spread] {
        let (placement, _) = explain(session.clone(), small.to_string()).await;
        assert!(
            placement.starts_with("runs on the coordinator: its input is small: 30 rows"),
            "{placement}"
        );
    }
    cluster.cluster.shutdown().await;
}

/// The Python of the test environment (`$QUARRY_TEST_VENV` or `.venv-test`), made by
/// `.ci/run` or the coordinator's tests; waited for while another test makes it.
fn python() -> PathBuf {
    let venv = std::env::var_os("QUARRY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-test"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    while !venv.join(".quarry-ready-4").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no test Python at {}: run .ci/run (or the coordinator's tests) to make it",
            venv.display()
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    venv.join("bin/python")
}

/// Runs every TPC-H query through psycopg (the PostgreSQL door) and through the ADBC Flight
/// SQL driver, and compares the rows as Python sees them.
const SAME_OVER_BOTH_DOORS: &str = r#"
import datetime, decimal, json, sys
import psycopg
import adbc_driver_flightsql.dbapi as flightsql

pg_host, pg_port = sys.argv[1].rsplit(":", 1)
queries = json.load(open(sys.argv[3]))
pg = psycopg.connect(host=pg_host, port=int(pg_port), user="tpch", dbname="quarry", autocommit=True)
flight = flightsql.connect("grpc://" + sys.argv[2], autocommit=True)

def norm(value):
    if isinstance(value, (float, decimal.Decimal)):
        return "%.6g" % float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return str(value)

mismatches = []
for n, sql in enumerate(queries, start=1):
    rows_pg = [tuple(norm(v) for v in row) for row in pg.execute(sql).fetchall()]
    cur = flight.cursor()
    cur.execute(sql)
    rows_flight = [tuple(norm(v) for v in row) for row in cur.fetchall()]
    cur.close()
    ordered = "order by" in sql.lower()
    if not ordered:
        rows_pg, rows_flight = sorted(rows_pg), sorted(rows_flight)
    if not rows_flight:
        mismatches.append("Q%d: no rows over Flight SQL" % n)
    elif rows_pg != rows_flight:
        mismatches.append("Q%d: %d rows over pgwire vs %d over Flight SQL; first %s vs %s"
                          % (n, len(rows_pg), len(rows_flight), rows_pg[:1], rows_flight[:1]))
    else:
        print("Q%d: %d rows match" % (n, len(rows_pg)))
if mismatches:
    raise SystemExit("\n".join(mismatches))
print("TPC-H SAME")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_over_postgres_match_flight_sql() {
    let dir = data();
    let (cluster, _session) = cluster(&dir).await;
    let coordinator = &cluster.cluster.coordinator;
    let pg = coordinator
        .pg_addr
        .expect("the PostgreSQL door is on")
        .to_string();
    let flight = coordinator.flight_addr.to_string();
    let queries = tempfile::NamedTempFile::new().expect("queries file");
    let all: Vec<String> = (1..=22).map(tpch::query).collect();
    std::fs::write(
        queries.path(),
        serde_json::to_string(&all).expect("queries as JSON"),
    )
    .expect("queries written");
    let path = queries.path().display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg("-c")
            .arg(SAME_OVER_BOTH_DOORS)
            .args([&pg, &flight, &path])
            .output()
            .expect("python runs")
    })
    .await
    .expect("python finished");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.cluster.shutdown().await;
    println!("{said}");
    assert!(
        output.status.success() && said.contains("TPC-H SAME"),
        "{said}"
    );
}
