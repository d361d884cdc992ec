//! Decisions made from what earlier stages produced, with the answers the plan as first
//! made gives:
//! - dynamic filters: once a join's build side has run, the probe side's Parquet scans
//!   skip the row groups outside its keys' range, in the join's own stage (broadcast
//!   joins) and in a stage of their own (partitioned joins);
//! - joins chosen at run time: a partitioned join whose build side turns out within the
//!   broadcast limits becomes a broadcast join that reads its probe side itself;
//! - and one that is not a decision: the tasks of a stage on one executor share its plan,
//!   so a broadcast build side is read and hashed once per executor, not once per task;
//! - a plan run whole on one executor has DataFusion's own dynamic filters, in one process.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::file::properties::WriterProperties;
use quarry_coordinator::service::{QueryService, SessionHandle};

use crate::harness::{TestCluster, explained, sql, two_by_two, write_parquet_file};
use crate::reflections::lines;

/// Fact rows per row group: the unit a filter skips.
const ROW_GROUP: usize = 5_000;

/// Keys `first..first + rows` in order, with a value each, in row groups of ROW_GROUP.
fn write_facts(path: &Path, first: i64, rows: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let keys = first..first + rows;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(keys.clone())),
            Arc::new(Int64Array::from_iter_values(keys.map(|k| k % 7))),
        ],
    )
    .expect("batch");
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    write_parquet_file(path, &batch, Some(properties));
}

/// 1,000 dimension rows: key `100 * i`, group `g{i / 50}` (each group spans 5,000 keys).
fn write_dimension(path: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values((0..1000).map(|i| i * 100))),
            Arc::new(StringArray::from_iter_values(
                (0..1000).map(|i| format!("g{}", i / 50)),
            )),
        ],
    )
    .expect("batch");
    write_parquet_file(path, &batch, None);
}

async fn start() -> (TestCluster, Arc<dyn QueryService>, SessionHandle) {
    let (cluster, engine, session) = two_by_two().await;
    let root = cluster.dir.path().join("files");
    write_facts(&root.join("fact/part-1.parquet"), 0, 50_000);
    write_facts(&root.join("fact/part-2.parquet"), 50_000, 50_000);
    write_dimension(&root.join("dim/part-1.parquet"));
    for statement in [
        format!(
            "CREATE SOURCE files TYPE local WITH (root = '{}')",
            root.display()
        ),
        "CREATE SCHEMA s".to_string(),
        "CREATE TABLE s.fact FROM files 'fact/' FORMAT parquet".to_string(),
        "CREATE TABLE s.dim FROM files 'dim/' FORMAT parquet".to_string(),
        // These tests are about stages on the executors, and every run must run.
        "SET quarry.local_execution = false".to_string(),
        "SET quarry.results_cache.enabled = false".to_string(),
    ] {
        sql(&engine, &session, &statement).await;
    }
    (cluster, engine, session)
}

/// Rows the scans of the fact table produced, summed over stages.
fn fact_rows_scanned(analyzed: &str) -> u64 {
    rows_of(analyzed, |l| {
        l.contains("DataSourceExec") && l.contains("fact/")
    })
}

/// Rows the operators whose lines `pick` chooses produced, summed.
fn rows_of(analyzed: &str, pick: impl Fn(&str) -> bool) -> u64 {
    analyzed
        .lines()
        .filter(|l| pick(l))
        .map(|l| {
            let rows = l
                .rsplit_once("[rows=")
                .unwrap_or_else(|| panic!("no rows in {l}"))
                .1;
            rows.split(',')
                .next()
                .expect("rows")
                .parse::<u64>()
                .expect("a count")
        })
        .sum()
}

/// EXPLAIN ANALYZE of `query` with the boolean `setting` off, then on; the answers of
/// both must be the same.
async fn analyzed_off_and_on(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    setting: &str,
    query: &str,
) -> (String, String) {
    sql(engine, session, &format!("SET {setting} = false")).await;
    let off = explained(engine, session, "EXPLAIN ANALYZE", query).await;
    let expected = lines(&sql(engine, session, query).await);
    sql(engine, session, &format!("SET {setting} = true")).await;
    let on = explained(engine, session, "EXPLAIN ANALYZE", query).await;
    assert_eq!(
        lines(&sql(engine, session, query).await),
        expected,
        "{query}: {setting} changed the answer"
    );
    (off, on)
}

/// Rows scanned with and without dynamic filters, and the same answer from both.
async fn scanned_with_and_without(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    query: &str,
) -> (u64, u64, String) {
    let (without, with) =
        analyzed_off_and_on(engine, session, "quarry.dynamic_filters", query).await;
    (fact_rows_scanned(&with), fact_rows_scanned(&without), with)
}

const SELECTIVE: &str = "SELECT count(*) AS n, sum(f.v) AS total FROM s.fact f \
     JOIN s.dim d ON f.k = d.k WHERE d.name = 'g3'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_build_side_prunes_the_probe_scan_of_its_stage() {
    let (cluster, engine, session) = start().await;
    let plan = explained(&engine, &session, "EXPLAIN", SELECTIVE).await;
    assert!(
        plan.contains("Dynamic filter: stage") && plan.contains("scan of k narrowed"),
        "{plan}"
    );

    let (with, without, analyzed) = scanned_with_and_without(&engine, &session, SELECTIVE).await;
    assert_eq!(without, 100_000, "{analyzed}");
    // Group g3 holds keys 15,000..=19,900: one row group of the fact table.
    assert_eq!(with, ROW_GROUP as u64, "{analyzed}");
    assert!(
        analyzed.contains("dynamic filter: k between 15000 and 19900 (from stage"),
        "{analyzed}"
    );
    assert_eq!(
        lines(&sql(&engine, &session, SELECTIVE).await),
        vec![format!(
            "50|{}",
            (150..200).map(|i| (i * 100) % 7).sum::<i64>()
        )]
    );

    // A build side with no key: nothing of the probe side can match, nothing is read.
    let nothing = SELECTIVE.replace("'g3'", "'none'");
    let (with, _, analyzed) = scanned_with_and_without(&engine, &session, &nothing).await;
    assert_eq!(with, 0, "{analyzed}");
    assert!(
        analyzed.contains("dynamic filter: k matches nothing"),
        "{analyzed}"
    );
    cluster.cluster.shutdown().await;
}

/// Whole on one executor, a join's build side narrows its probe scan through DataFusion's
/// own dynamic filter (the coordinator plans it with join filters on, and they ship with
/// the task); a session that turned them off keeps them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_one_executor_prunes_with_datafusions_own_join_filter() {
    let (cluster, engine, session) = start().await;
    for setting in [
        "SET quarry.local_execution = true",
        "SET quarry.local_max_rows = 1000",
    ] {
        sql(&engine, &session, setting).await;
    }
    let plan = explained(&engine, &session, "EXPLAIN", SELECTIVE).await;
    assert!(plan.contains("runs on one executor"), "{plan}");
    let analyzed = explained(&engine, &session, "EXPLAIN ANALYZE", SELECTIVE).await;
    // One stage of one task (the root reads its output), and group g3 holds keys
    // 15,000..=19,900: one row group of the fact table.
    assert!(analyzed.contains("stages=2, tasks=2"), "{analyzed}");
    assert_eq!(fact_rows_scanned(&analyzed), ROW_GROUP as u64, "{analyzed}");
    let expected = vec![format!(
        "50|{}",
        (150..200).map(|i| (i * 100) % 7).sum::<i64>()
    )];
    assert_eq!(lines(&sql(&engine, &session, SELECTIVE).await), expected);

    sql(
        &engine,
        &session,
        "SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = false",
    )
    .await;
    let analyzed = explained(&engine, &session, "EXPLAIN ANALYZE", SELECTIVE).await;
    assert!(
        analyzed.contains("stages=2, tasks=2") && !analyzed.contains("DynamicFilter"),
        "{analyzed}"
    );
    assert_eq!(fact_rows_scanned(&analyzed), 100_000, "{analyzed}");
    assert_eq!(lines(&sql(&engine, &session, SELECTIVE).await), expected);
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_build_side_prunes_a_scan_in_another_stage() {
    let (cluster, engine, session) = start().await;
    // Both sides hashed: the fact scan runs in a stage of its own, which then waits for
    // the (much smaller) build side's stage.
    for setting in [
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
    ] {
        sql(&engine, &session, setting).await;
    }
    let plan = explained(&engine, &session, "EXPLAIN", SELECTIVE).await;
    assert!(plan.contains("mode=Partitioned"), "{plan}");
    assert!(plan.contains("Dynamic filter: stage"), "{plan}");
    let (with, without, analyzed) = scanned_with_and_without(&engine, &session, SELECTIVE).await;
    assert_eq!((with, without), (ROW_GROUP as u64, 100_000), "{analyzed}");

    // Joins whose output keeps unmatched probe rows are never filtered; the others are,
    // and every answer is the unfiltered one.
    for query in [
        "SELECT count(*), sum(f.v) FROM s.fact f LEFT JOIN s.dim d ON f.k = d.k AND d.name = 'g3'",
        "SELECT count(*), count(d.k) FROM s.dim d RIGHT JOIN s.fact f ON f.k = d.k AND d.name = 'g3'",
        "SELECT count(*) FROM s.fact f WHERE f.k IN (SELECT k FROM s.dim WHERE name = 'g7')",
        "SELECT count(*) FROM s.fact f WHERE NOT EXISTS \
         (SELECT 1 FROM s.dim d WHERE d.k = f.k AND d.name = 'g7')",
        "SELECT d.name, count(*), sum(f.v) FROM s.fact f JOIN s.dim d ON f.k = d.k \
         WHERE d.name IN ('g2', 'g9') GROUP BY d.name",
    ] {
        let (with, without, analyzed) = scanned_with_and_without(&engine, &session, query).await;
        assert!(with <= without, "{query}: {analyzed}");
        if query.contains("LEFT JOIN")
            || query.contains("RIGHT JOIN")
            || query.contains("NOT EXISTS")
        {
            assert_eq!(
                with, 100_000,
                "{query} must read every fact row: {analyzed}"
            );
        }
    }
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_join_whose_build_side_turns_out_small_becomes_a_broadcast() {
    let (cluster, engine, session) = start().await;
    // Broadcast at most 1,000 bytes: a LIKE's selectivity is a guess (a fifth of the
    // dimension), over that, so the optimizer plans a partitioned join.
    let guessed = SELECTIVE.replace("d.name = 'g3'", "d.name LIKE 'g3%'");
    sql(
        &engine,
        &session,
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 1000",
    )
    .await;
    let plan = explained(&engine, &session, "EXPLAIN", &guessed).await;
    assert!(plan.contains("mode=Partitioned"), "{plan}");
    assert!(
        plan.contains("Join chosen at run time: stage ") && plan.contains("and 1000 bytes"),
        "{plan}"
    );

    // 50 rows came out of the build side: broadcast, and the fact scan runs in the join's
    // stage (narrowed by the dynamic filter too) instead of being hashed and fetched.
    let (planned, adapted) =
        analyzed_off_and_on(&engine, &session, "quarry.adaptive_joins", &guessed).await;
    assert!(
        adapted.contains("join: broadcast (stage 1 wrote 50 rows, 400 B")
            && adapted.contains("the broadcast limit is 4000000 rows, 1000 B"),
        "{adapted}"
    );
    assert!(adapted.contains("mode=CollectLeft"), "{adapted}");
    assert!(!planned.contains("mode=CollectLeft"), "{planned}");
    assert_eq!(
        stages(&adapted) + 1,
        stages(&planned),
        "the probe stage still ran: {adapted}"
    );
    assert_eq!(fact_rows_scanned(&adapted), ROW_GROUP as u64, "{adapted}");

    // 550 rows (g1, g10 to g19), 4,400 bytes: over the limit, the join stays as planned,
    // and says so.
    let wide = SELECTIVE.replace("d.name = 'g3'", "d.name LIKE 'g1%'");
    let (_, kept) = analyzed_off_and_on(&engine, &session, "quarry.adaptive_joins", &wide).await;
    assert!(
        kept.contains("join: stays partitioned (stage 1 wrote 550 rows")
            && !kept.contains("mode=CollectLeft"),
        "{kept}"
    );

    // A grouped join whose final aggregation relies on the join's hashed output is never
    // switched, and answers as planned.
    let grouped = "SELECT f.k, count(*) AS n FROM s.fact f JOIN s.dim d ON f.k = d.k \
                   WHERE d.name LIKE 'g3%' GROUP BY f.k";
    sql(&engine, &session, "SET quarry.adaptive_joins = false").await;
    let expected = lines(&sql(&engine, &session, grouped).await);
    sql(&engine, &session, "SET quarry.adaptive_joins = true").await;
    assert_eq!(lines(&sql(&engine, &session, grouped).await), expected);
    assert_eq!(expected.len(), 50);
    cluster.cluster.shutdown().await;
}

/// Stages that ran, from EXPLAIN ANALYZE's first row.
fn stages(analyzed: &str) -> usize {
    let count = analyzed
        .split("stages=")
        .nth(1)
        .unwrap_or_else(|| panic!("no stage count in {analyzed}"));
    count
        .split(',')
        .next()
        .expect("count")
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topk_skips_the_row_groups_past_its_current_rows() {
    let (cluster, engine, session) = start().await;
    // Each task sorts the file it scans and keeps the first five rows: once its first
    // row group has given five keys, no later row group can hold smaller ones.
    let query = "SELECT k, v FROM s.fact ORDER BY k LIMIT 5";
    let (without, with) = analyzed_off_and_on(
        &engine,
        &session,
        "datafusion.optimizer.enable_topk_dynamic_filter_pushdown",
        query,
    )
    .await;
    assert_eq!(fact_rows_scanned(&without), 100_000, "{without}");
    // One row group per file read: the first. Tasks on one executor share their plan
    // and so its TopK filter: a task that starts after its neighbour holds keys 0..4 may
    // skip its file's first row group as well.
    let scanned = fact_rows_scanned(&with);
    assert!(
        scanned == 2 * ROW_GROUP as u64 || scanned == ROW_GROUP as u64,
        "{scanned}: {with}"
    );
    assert_eq!(
        lines(&sql(&engine, &session, query).await),
        (0..5).map(|k| format!("{k}|{}", k % 7)).collect::<Vec<_>>()
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_build_side_is_read_once_per_executor() {
    let (cluster, engine, session) = start().await;
    // The fact files in four ranges: four tasks over 2 executors x 2 slots.
    sql(
        &engine,
        &session,
        "SET datafusion.optimizer.repartition_file_min_size = 1",
    )
    .await;
    let query = "SELECT count(*) AS n, sum(f.v) AS total FROM s.fact f JOIN s.dim d ON f.k = d.k";
    let analyzed = explained(&engine, &session, "EXPLAIN ANALYZE", query).await;
    assert!(analyzed.contains("mode=CollectLeft"), "{analyzed}");
    assert!(analyzed.contains("tasks=4"), "{analyzed}");
    // Every task joins against all 1,000 dimension rows. Read per task, they would count
    // 4,000; the tasks of one executor share one plan and so one read (2,000, or 3,000
    // should a task start only after its neighbour ended).
    let build = rows_of(&analyzed, |l| {
        l.contains("DataSourceExec") && l.contains("dim/")
    });
    assert!(build == 2_000 || build == 3_000, "{build}: {analyzed}");
    assert_eq!(fact_rows_scanned(&analyzed), 100_000, "{analyzed}");
    assert_eq!(
        lines(&sql(&engine, &session, query).await),
        vec![format!(
            "1000|{}",
            (0..1000).map(|i| (i * 100) % 7).sum::<i64>()
        )]
    );
    cluster.cluster.shutdown().await;
}
