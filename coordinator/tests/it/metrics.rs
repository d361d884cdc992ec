//! `/metrics`: the served names are exactly those `docs/metrics.md` lists, and the values
//! follow what happened (jobs that completed, failed and were cancelled, the executors,
//! failed logins); with authentication on a scrape needs credentials.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use quarry_coordinator::local_cluster::ExecutorSetup;

use crate::harness::TestCluster;
use crate::rest::Api;

/// The metric names `docs/metrics.md` documents under `## {section}`.
fn documented(section: &str) -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    let heading = format!("## {section}");
    text.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The names of the series served, as documented (a histogram by its family name).
fn served(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next()?, parts.next()?);
            Some(match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            })
        })
        .collect()
}

/// The value of the series with exactly `labels` (`state="FAILED",frontend="rest"`).
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let wanted = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines().find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        (series == wanted).then(|| v.parse().ok())?
    })
}

pub(crate) async fn scrape(base: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_the_documented_ones_and_count_what_happened() {
    let cluster = TestCluster::start(2).await;
    let api = Api::new(cluster.http());
    api.sql("SELECT 1").await;
    api.sql("SELECT count(*) FROM generate_series(1, 1000)")
        .await;
    // Fails while it runs.
    let (_, failed) = api
        .run_async("SELECT CAST('x' || v AS INT) FROM (VALUES ('a')) AS t(v)")
        .await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    // Cancelled while it runs.
    let (_, started) = api
        .post(
            "/api/v1/sql",
            json!({"sql": "SELECT count(*) FROM generate_series(1, 100000000000) a", "async": true}),
        )
        .await;
    let id = started["id"].as_str().expect("id").to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = api
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.wait_job(&id).await["state"], "CANCELED");

    let (status, text) = scrape(&cluster.http(), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        served(&text),
        documented("Coordinator"),
        "served vs documented:\n{text}"
    );
    let jobs = |state: &str| {
        value(
            &text,
            "quarry_jobs_total",
            &format!("state=\"{state}\",frontend=\"rest\""),
        )
    };
    assert_eq!(jobs("COMPLETED"), Some(2.0), "{text}");
    assert_eq!(jobs("FAILED"), Some(1.0), "{text}");
    assert_eq!(jobs("CANCELED"), Some(1.0), "{text}");
    assert_eq!(
        value(
            &text,
            "quarry_job_duration_seconds_count",
            "state=\"COMPLETED\""
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&text, "quarry_jobs_running", ""), Some(0.0));
    assert_eq!(
        value(&text, "quarry_executors", "state=\"ACTIVE\""),
        Some(2.0),
        "{text}"
    );
    let slots = value(&text, "quarry_executor_slots", "").expect("slots");
    assert!(slots >= 2.0, "{text}");
    for executor in ["executor-1", "executor-2"] {
        let age = value(
            &text,
            "quarry_executor_heartbeat_age_seconds",
            &format!("executor=\"{executor}\""),
        )
        .expect("a heartbeat age per executor");
        assert!(age < 3.5, "{executor} heard from {age} s ago");
    }
    assert!(value(&text, "process_resident_memory_bytes", "").is_some_and(|v| v > 1e6));
    assert!(
        !text.contains("SELECT") && !text.contains(&id),
        "no query or job in labels"
    );
    let planned = value(&text, "quarry_planning_seconds_count", "").unwrap_or(0.0);
    assert!(planned >= 4.0, "{text}");
    assert!(value(&text, "process_cpu_seconds_total", "").is_some_and(|v| v > 0.0));

    // A table, a reflection on it, its refresh, and a query it serves.
    api.sql("CREATE TABLE public.sales AS SELECT v % 7 AS k, v AS amount FROM generate_series(1, 10000) AS t(v)")
        .await;
    api.sql("ALTER TABLE public.sales CREATE AGGREGATE REFLECTION by_k USING DIMENSIONS (k) MEASURES (amount (SUM))")
        .await;
    api.sql("WAIT FOR REFLECTION by_k TIMEOUT 60").await;
    let (_, job) = api
        .run_async("SELECT k, sum(amount) FROM public.sales GROUP BY k")
        .await;
    assert!(
        job["dataAsOfMs"].is_u64(),
        "served from the reflection: {job}"
    );
    let (_, text) = scrape(&cluster.http(), None).await;
    assert_eq!(served(&text), documented("Coordinator"), "{text}");
    assert_eq!(
        value(&text, "quarry_jobs_accelerated_total", ""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "quarry_reflection_refreshes_total",
            "outcome=\"succeeded\""
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "quarry_reflection_refresh_duration_seconds_count",
            ""
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "quarry_reflections", "state=\"CAN_ACCELERATE\""),
        Some(1.0),
        "{text}"
    );
    let writes = value(&text, "quarry_catalog_write_seconds_count", "").unwrap_or(0.0);
    assert!(writes >= 1.0, "the table's creation: {text}");

    // A query run twice: the repeat is answered from the results cache.
    let cached = "SELECT k, amount FROM public.sales WHERE amount < 100";
    api.sql(cached).await;
    let (_, repeat) = api.run_async(cached).await;
    assert!(repeat["resultsCache"].is_string(), "{repeat}");
    let (_, text) = scrape(&cluster.http(), None).await;
    assert_eq!(
        value(
            &text,
            "quarry_results_cache_lookups_total",
            "outcome=\"hit\""
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "quarry_results_cache_entries", "").unwrap_or(0.0) >= 1.0
            && value(&text, "quarry_results_cache_bytes", "").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_logins_on_a_scrape_needs_credentials_and_failed_logins_count() {
    let cluster = TestCluster::start_with(1, |c| {
        c.coordinator.auth = true;
        c.coordinator.admin_password = Some("s3cret".to_string());
    })
    .await;
    let base = cluster.http();
    let (status, _) = scrape(&base, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let api = Api::new(base.clone());
    for password in ["wrong", "also wrong"] {
        let (status, _) = api
            .post(
                "/api/v1/login",
                json!({"user": "admin", "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = api
        .post(
            "/api/v1/login",
            json!({"user": "admin", "password": "s3cret"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().expect("token");
    let (status, text) = scrape(&base, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        value(&text, "quarry_logins_failed_total", ""),
        Some(2.0),
        "{text}"
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_serves_health_readiness_and_its_metrics() {
    let mut cluster = TestCluster::start(0).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = free.local_addr().expect("address");
    drop(free);
    let executor = cluster
        .cluster
        .add_executor(ExecutorSetup {
            http: Some(address),
            ..ExecutorSetup::default()
        })
        .await
        .expect("executor");
    let base = format!("http://{}", executor.http_address.expect("an HTTP address"));
    assert!(
        cluster
            .cluster
            .coordinator
            .cluster
            .wait_for_executors(1, Duration::from_secs(10))
            .await
    );
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Tasks run on it: scans of the demo orders.
    quarry_coordinator::demo::install(
        &cluster.cluster.coordinator.engine,
        &cluster.dir.path().join("demo"),
        1000,
    )
    .await
    .expect("demo data");
    let api = Api::new(cluster.http());
    let rows = api
        .sql("SET quarry.local_execution = false; SELECT city, count(*) AS n FROM demo.orders GROUP BY city")
        .await;
    assert!(rows["rowCount"].as_u64().is_some_and(|n| n > 0), "{rows}");

    let (status, text) = scrape(&base, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        served(&text),
        documented("Executors"),
        "served vs documented:\n{text}"
    );
    assert_eq!(value(&text, "quarry_executor_task_slots", ""), Some(1.0));
    let succeeded = value(
        &text,
        "quarry_executor_tasks_total",
        "outcome=\"succeeded\"",
    )
    .unwrap_or(0.0);
    assert!(succeeded >= 1.0, "{text}");
    assert_eq!(value(&text, "quarry_executor_running_tasks", ""), Some(0.0));
    // Byte counters are served from the start (this small query ran as one task: no
    // exchange, no spill).
    for name in [
        "quarry_executor_exchange_received_bytes_total",
        "quarry_executor_exchange_sent_bytes_total",
        "quarry_executor_spilled_bytes_total",
    ] {
        assert!(
            value(&text, name, "").is_some_and(|b| b >= 0.0),
            "{name}: {text}"
        );
    }
    // The coordinator counted the same tasks from its side.
    let (_, coordinator) = scrape(&cluster.http(), None).await;
    let counted = value(&coordinator, "quarry_tasks_total", "outcome=\"succeeded\"").unwrap_or(0.0);
    assert!(counted >= succeeded, "{coordinator}");

    // A taken port is a clear error at start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let error = cluster
        .cluster
        .add_executor(ExecutorSetup {
            http: Some(taken.local_addr().expect("address")),
            ..ExecutorSetup::default()
        })
        .await
        .err()
        .expect("a taken port is refused");
    assert!(
        error.message.contains("cannot listen for HTTP"),
        "{}",
        error.message
    );
    cluster.cluster.shutdown().await;
}

/// Every metric the Grafana dashboard in `deploy/grafana/` queries is one we document.
#[test]
fn the_dashboard_queries_documented_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/quarry.json");
    let text = std::fs::read_to_string(path).expect("deploy/grafana/quarry.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut listed = documented("Coordinator");
    listed.extend(documented("Executors"));
    let mut named = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("quarry_") || word.starts_with("process_") {
                    named.insert(word.to_string());
                }
            }
        }
    }
    assert!(
        named.len() >= 10,
        "the dashboard names too few metrics: {named:?}"
    );
    for name in &named {
        // A histogram's series are its family name with a suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            listed.contains(family),
            "the dashboard queries {name}, which docs/metrics.md does not list"
        );
    }
}
