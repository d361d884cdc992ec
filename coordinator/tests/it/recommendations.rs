//! `sys.recommend_reflections`: recent jobs' aggregates become one definition per
//! dataset, whose DDL creates a reflection that then serves those queries.

use crate::harness::{run_sql, sql};
use crate::reflections::{lines, start_with_orders};

const DASHBOARD: [&str; 6] = [
    "SELECT city, sum(revenue) FROM demo.orders GROUP BY city",
    "SELECT date_trunc('month', date), avg(quantity) FROM demo.orders \
     WHERE category = 'books' GROUP BY 1",
    "SELECT category, count(*), max(revenue) FROM demo.orders GROUP BY category",
    "SELECT city, approx_distinct(age) FROM demo.orders GROUP BY city",
    "SELECT count(DISTINCT city) FROM demo.orders WHERE date >= DATE '2024-01-20'",
    "SELECT DISTINCT category FROM demo.orders",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_come_from_recent_aggregates_and_serve_them() {
    let (_cluster, engine, session) = start_with_orders().await;
    let mut job_ids = Vec::new();
    for query in DASHBOARD {
        job_ids.push(run_sql(&engine, &session, query).await.1.id);
    }
    // Aggregates no reflection could compute recommend nothing.
    for query in [
        "SELECT city, stddev(revenue) FROM demo.orders GROUP BY city",
        "SELECT age, sum(revenue * 2) FROM demo.orders GROUP BY age",
        "SELECT * FROM demo.orders WHERE city = 'Lyon' LIMIT 3",
    ] {
        sql(&engine, &session, query).await;
    }
    let rows = lines(
        &sql(
            &engine,
            &session,
            "SELECT dataset, reflection, dimensions, measures, jobs FROM sys.recommend_reflections",
        )
        .await,
    );
    assert_eq!(
        rows,
        vec![
            "demo.orders|orders_agg|category, city, date BY DAY|age (APPROX_COUNT_DISTINCT), \
             quantity (SUM, COUNT), revenue (SUM, MAX)|6"
        ],
    );
    let listed = lines(
        &sql(
            &engine,
            &session,
            "SELECT job_ids FROM sys.recommend_reflections",
        )
        .await,
    );
    for id in &job_ids {
        assert!(listed[0].contains(id.as_str()), "{id} not in {listed:?}");
    }
    let ddl = lines(
        &sql(
            &engine,
            &session,
            "SELECT ddl FROM sys.recommend_reflections",
        )
        .await,
    );
    assert_eq!(
        ddl,
        vec![
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION orders_agg USING DIMENSIONS \
             (category, city, date BY DAY) MEASURES (age (APPROX_COUNT_DISTINCT), \
             quantity (SUM, COUNT), revenue (SUM, MAX))"
        ]
    );
    // The DDL as given creates a reflection that serves every one of those queries.
    sql(&engine, &session, &ddl[0]).await;
    sql(
        &engine,
        &session,
        "WAIT FOR REFLECTION orders_agg TIMEOUT 60",
    )
    .await;
    for query in DASHBOARD {
        let (accelerated, record) = run_sql(&engine, &session, query).await;
        assert!(
            crate::harness::chose(&record, "orders_agg"),
            "{query}: {:?}",
            record.reflections
        );
        sql(&engine, &session, "SET quarry.reflections.enabled = false").await;
        let raw = sql(&engine, &session, query).await;
        sql(&engine, &session, "SET quarry.reflections.enabled = true").await;
        assert_eq!(lines(&accelerated), lines(&raw), "{query}");
    }
    // Covered now: nothing more to recommend.
    let rows = sql(&engine, &session, "SELECT * FROM sys.recommend_reflections").await;
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}
