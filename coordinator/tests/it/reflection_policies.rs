//! Refresh policies: a source's is the default of its datasets' reflections, a dataset's
//! overrides it, and reflections created later take what is in force.

use crate::harness::{TestCluster, sql, sql_error};
use crate::reflections::lines;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_policies_are_defaults_that_datasets_override() {
    let cluster = TestCluster::start_with(1, |c| c.slots_per_executor = 2).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    let data = cluster.dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("sales.csv"), "city,amount\nLyon,1\nOslo,2\n").expect("csv");
    std::fs::write(data.join("stock.csv"), "city,units\nLyon,5\n").expect("csv");
    let root = data.canonicalize().expect("root");
    let policies = || async {
        lines(
            &sql(
                &engine,
                &session,
                "SELECT name, refresh_policy, grace FROM sys.reflections ORDER BY name",
            )
            .await,
        )
    };
    for statement in [
        format!(
            "CREATE SOURCE files TYPE local WITH (root = '{}')",
            root.display()
        ),
        "CREATE SCHEMA raw".to_string(),
        "CREATE TABLE raw.sales FROM files 'sales.csv' FORMAT csv WITH (header = true)".to_string(),
        "CREATE TABLE raw.stock FROM files 'stock.csv' FORMAT csv WITH (header = true)".to_string(),
        "ALTER TABLE raw.sales CREATE AGGREGATE REFLECTION before_policy USING DIMENSIONS (city)"
            .to_string(),
    ] {
        sql(&engine, &session, &statement).await;
    }
    // Dremio's defaults until a policy is set.
    assert_eq!(policies().await, ["before_policy|EVERY 1h|3h"]);

    sql(
        &engine,
        &session,
        "ALTER SOURCE files SET REFLECTION REFRESH EVERY '2 hours' GRACE '5 hours'",
    )
    .await;
    assert_eq!(policies().await, ["before_policy|EVERY 2h|5h"]);

    sql(
        &engine,
        &session,
        "ALTER TABLE raw.sales SET REFLECTION REFRESH NEVER",
    )
    .await;
    for statement in [
        "ALTER TABLE raw.sales CREATE AGGREGATE REFLECTION sales_later USING DIMENSIONS (city)",
        "ALTER TABLE raw.stock CREATE AGGREGATE REFLECTION stock_later USING DIMENSIONS (city)",
    ] {
        sql(&engine, &session, statement).await;
    }
    // The dataset's NEVER wins; its grace still comes from the source.
    assert_eq!(
        policies().await,
        [
            "before_policy|NEVER|5h",
            "sales_later|NEVER|5h",
            "stock_later|EVERY 2h|5h"
        ]
    );

    // A new source default reaches every dataset without a setting of its own.
    sql(
        &engine,
        &session,
        "ALTER SOURCE files SET REFLECTION REFRESH EVERY '30 minutes' GRACE '1 hour'",
    )
    .await;
    assert_eq!(
        policies().await,
        [
            "before_policy|NEVER|1h",
            "sales_later|NEVER|1h",
            "stock_later|EVERY 30m|1h"
        ]
    );

    let error = sql_error(
        &engine,
        &session,
        "ALTER SOURCE nowhere SET REFLECTION REFRESH NEVER",
    )
    .await;
    assert!(error.contains("source nowhere does not exist"), "{error}");
    let error = sql_error(
        &engine,
        &session,
        "ALTER SOURCE files SET REFLECTION REFRESH EVERY 'soon'",
    )
    .await;
    assert!(error.contains("REFRESH EVERY"), "{error}");
}
