//! Reflections over REST: create, list, get, update with the version read, refresh and
//! delete, as `/api/v1/reflections` offers them.

use crate::harness::{run_sql, sql};
use crate::reflections::start_with_orders;

/// `/api/v1/reflections`: create (its refresh job starts), list, get, refresh, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflections_over_rest() {
    let (cluster, engine, session) = start_with_orders().await;
    let base = format!("{}/api/v1/reflections", cluster.http());
    let client = reqwest::Client::new();
    let created = client
        .post(&base)
        .json(&serde_json::json!({
            "name": "by_city", "dataset": "demo.orders", "type": "aggregate",
            "dimensions": [{"column": "city"}, {"column": "date", "byDay": true}],
            "measures": [{"column": "revenue", "functions": ["SUM", "COUNT"]}],
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.expect("json");
    assert!(created["refreshJob"].as_str().is_some(), "{created}");
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let listed: serde_json::Value = client
        .get(&base)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["reflections"][0]["name"], "by_city", "{listed}");
    let one: serde_json::Value = client
        .get(format!("{base}/by_city"))
        .send()
        .await
        .expect("GET one")
        .json()
        .await
        .expect("json");
    assert_eq!(one["status"], "CAN_ACCELERATE", "{one}");
    let refreshed = client
        .post(format!("{base}/by_city/refresh"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 202);
    let refreshed: serde_json::Value = refreshed.json().await.expect("json");
    assert!(refreshed["jobId"].as_str().is_some(), "{refreshed}");
    let bad = client
        .post(&base)
        .json(
            &serde_json::json!({"name": "x", "dataset": "demo.orders", "type": "aggregate",
            "dimensions": [{"column": "nope"}]}),
        )
        .send()
        .await
        .expect("POST bad");
    assert_eq!(bad.status(), 400);
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let deleted = client
        .delete(format!("{base}/by_city"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    let gone = client
        .get(format!("{base}/by_city"))
        .send()
        .await
        .expect("GET gone");
    assert_eq!(gone.status(), 404);
}

/// `PUT /api/v1/reflections/{name}` changes a reflection read at a version: a stale version
/// is refused with 409; a new definition drops the old data, refreshes, and serves the
/// queries the new definition matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflections_are_updated_with_the_version_read() {
    let (cluster, engine, session) = start_with_orders().await;
    let base = format!("{}/api/v1/reflections", cluster.http());
    let client = reqwest::Client::new();
    sql(
        &engine,
        &session,
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) \
         MEASURES (revenue (SUM))",
    )
    .await;
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let get = || async {
        let one: serde_json::Value = client
            .get(format!("{base}/by_city"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        one
    };
    let put = |body: serde_json::Value| {
        let request = client.put(format!("{base}/by_city")).json(&body);
        async move { request.send().await.expect("PUT") }
    };
    let version = get().await["version"].as_u64().expect("version");

    // Disabled at the version read.
    let disabled = put(serde_json::json!({"version": version, "enabled": false})).await;
    assert_eq!(disabled.status(), 200);
    let disabled: serde_json::Value = disabled.json().await.expect("json");
    assert_eq!(
        disabled["version"].as_u64(),
        Some(version + 1),
        "{disabled}"
    );
    let one = get().await;
    assert_eq!(one["status"], "DISABLED", "{one}");
    assert_eq!(one["enabled"], false, "{one}");

    // The version read before is stale now.
    let stale = put(serde_json::json!({"version": version, "enabled": true})).await;
    assert_eq!(stale.status(), 409);
    let stale: serde_json::Value = stale.json().await.expect("json");
    assert!(stale.to_string().contains("read it again"), "{stale}");

    // A bad definition changes nothing.
    let bad = put(serde_json::json!({
        "version": version + 1, "type": "aggregate",
        "dimensions": [{"column": "nope"}],
    }))
    .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(get().await["version"].as_u64(), Some(version + 1));

    // A new definition: re-enabled, refreshed, and serving what it now keeps.
    let redefined = put(serde_json::json!({
        "version": version + 1, "enabled": true, "type": "aggregate",
        "dimensions": [{"column": "city"}, {"column": "category"}],
        "measures": [{"column": "quantity", "functions": ["SUM"]}],
    }))
    .await;
    assert_eq!(redefined.status(), 200);
    let redefined: serde_json::Value = redefined.json().await.expect("json");
    assert!(redefined["refreshJob"].as_str().is_some(), "{redefined}");
    sql(&engine, &session, "WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let one = get().await;
    assert!(
        one["definition"]
            .as_str()
            .is_some_and(|d| d.contains("DIMENSIONS (city, category)")),
        "{one}"
    );
    assert_eq!(one["rows"].as_u64(), Some(12), "{one}");
    let (_, record) = run_sql(
        &engine,
        &session,
        "SELECT category, sum(quantity) FROM demo.orders GROUP BY category",
    )
    .await;
    assert!(
        crate::harness::chose(&record, "by_city"),
        "{:?}",
        record.reflections
    );
    let (_, record) = run_sql(
        &engine,
        &session,
        "SELECT city, sum(revenue) FROM demo.orders GROUP BY city",
    )
    .await;
    assert!(
        record
            .reflections
            .iter()
            .any(|r| r.contains("needs the measure revenue (SUM)")),
        "{:?}",
        record.reflections
    );
}
