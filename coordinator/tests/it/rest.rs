//! The REST API over a real socket: every endpoint, its errors, and large results.

use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestCluster;

pub(crate) struct Api {
    pub(crate) base: String,
    client: reqwest::Client,
    pub(crate) token: Option<String>,
}

impl Api {
    pub(crate) fn new(base: String) -> Api {
        Api {
            base,
            client: reqwest::Client::new(),
            token: None,
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub(crate) async fn sql(&self, sql: &str) -> Value {
        let (status, body) = self.post("/api/v1/sql", json!({"sql": sql})).await;
        assert_eq!(status, StatusCode::OK, "{sql}: {body}");
        body
    }

    /// A client of `base` logged in as `user`.
    pub(crate) async fn logged_in(base: &str, user: &str, password: &str) -> Api {
        let mut api = Api::new(base.to_string());
        let (status, body) = api
            .post("/api/v1/login", json!({"user": user, "password": password}))
            .await;
        assert_eq!(status, StatusCode::OK, "{user}: {body}");
        api.token = Some(body["token"].as_str().expect("token").to_string());
        api
    }

    /// Start `sql` as an async job and wait for it to end: its id and final record.
    pub(crate) async fn run_async(&self, sql: &str) -> (String, Value) {
        let (_, started) = self
            .post("/api/v1/sql", json!({"sql": sql, "async": true}))
            .await;
        let id = started["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{sql}: {started}"))
            .to_string();
        let job = self.wait_job(&id).await;
        (id, job)
    }

    pub(crate) async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, job) = self.get(&format!("/api/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if ["COMPLETED", "FAILED", "CANCELED"].contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn demo_cluster(rows: usize) -> (TestCluster, Api) {
    let cluster = TestCluster::start(2).await;
    let data = cluster.dir.path().join("demo");
    quarry_coordinator::demo::install(&cluster.cluster.coordinator.engine, &data, rows)
        .await
        .expect("demo data");
    let api = Api::new(cluster.http());
    (cluster, api)
}

pub(crate) fn assert_error(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    code: &str,
    needle: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} lacks {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_openapi_and_unknown_routes() {
    let (cluster, api) = demo_cluster(1000).await;
    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["executors"], 2);

    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/sql"]["post"].is_object());
    // Bodies are described by the types the handlers send and read.
    let schemas = &doc["components"]["schemas"];
    for name in [
        "SqlRequest",
        "SqlResult",
        "Job",
        "Dataset",
        "SourceConfig",
        "ErrorBody",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    assert_eq!(
        doc["paths"]["/api/v1/sql"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/SqlRequest"
    );

    // Every operation the document names is served (none falls through to "no route").
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete: Vec<String> = path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "nope".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        let concrete = concrete.join("/");
        for method in item.as_object().expect("path item").keys() {
            let method: reqwest::Method = method.to_uppercase().parse().expect("method");
            // Not every answer is JSON (`/metrics` is text).
            let response = api
                .request(method.clone(), &concrete)
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body = response.text().await.expect("body");
            assert!(
                !body.contains("\"message\":\"no route"),
                "{method} {concrete} ({path}) is documented but not served: {status} {body}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 45, "only {operations} operations documented");

    let (status, body) = api.get("/api/v1/nope").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no route GET /api/v1/nope",
    );
    let (status, body) = api.delete("/api/v1/sql").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no route DELETE",
    );

    // The console is served at the root.
    let page = reqwest::get(format!("{}/", api.base))
        .await
        .expect("console");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("<title>Quarry</title>")
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sync_async_and_errors() {
    let (cluster, api) = demo_cluster(20_000).await;

    let body = api
        .sql("SELECT city, count(*) AS n FROM demo.orders GROUP BY city ORDER BY n DESC LIMIT 2")
        .await;
    assert_eq!(body["state"], "COMPLETED");
    assert_eq!(body["rowCount"], 2);
    assert_eq!(body["columns"][0]["name"], "city");
    assert_eq!(body["rows"][0]["city"], "Mumbai");
    assert!(body["rows"][0]["n"].as_i64().unwrap_or(0) > 0);

    // Columns that share a name (a join's two `x`) all survive as arrays, in results pages
    // too; objects keep one of them.
    let join = "SELECT * FROM (VALUES (1, 'a')) l(x, y) JOIN (VALUES (2)) r(x) ON true";
    let (status, body) = api
        .post("/api/v1/sql", json!({"sql": join, "rowFormat": "arrays"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([[1, "a", 2]]));
    let names: Vec<&str> = body["columns"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["x", "y", "x"]);
    let (id, _) = api.run_async(join).await;
    let (_, page) = api
        .get(&format!("/api/v1/jobs/{id}/results?rowFormat=arrays"))
        .await;
    assert_eq!(page["rows"], json!([[1, "a", 2]]), "{page}");

    // context sets the schema unqualified names resolve in
    let (status, body) = api
        .post(
            "/api/v1/sql",
            json!({"sql": "SELECT count(*) AS n FROM orders", "context": ["demo"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["n"], 20_000);

    // async returns a job id at once; the job then completes with a profile
    let (status, started) = api
        .post("/api/v1/sql", json!({"sql": "SELECT city, sum(revenue) FROM demo.orders GROUP BY city", "async": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().expect("job id").to_string();
    let job = api.wait_job(&id).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["rowCount"], 10);
    assert_eq!(job["progress"]["tasksDone"], job["progress"]["tasksTotal"]);
    assert_eq!(job["frontend"], "rest", "{job}");

    // errors: {code, message} with the right status
    let (status, body) = api.post("/api/v1/sql", json!({"sql": "SELEC 1"})).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "Line: 1, Column: 1",
    );
    let (status, body) = api
        .post("/api/v1/sql", json!({"sql": "SELECT * FROM demo.nope"}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "not found",
    );
    let (status, body) = api
        .post(
            "/api/v1/sql",
            json!({"sql": "SELECT 1", "context": ["nope"]}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "schema 'nope'",
    );
    let (status, body) = api.post("/api/v1/sql", json!({"query": "SELECT 1"})).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "unknown field `query`",
    );
    let response = api
        .request(reqwest::Method::POST, "/api/v1/sql")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json error");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("malformed JSON"),
        "{body}"
    );

    // the failed jobs are recorded as such
    let (status, failed) = api.get("/api/v1/jobs?state=FAILED&limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        failed["jobs"]
            .as_array()
            .map(|j| j.len() >= 2)
            .unwrap_or(false),
        "{failed}"
    );
    let (status, body) = api.get("/api/v1/jobs?state=SLEEPING").await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "unknown job state",
    );
    let (status, listed) = api.get("/api/v1/jobs?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1));
    let (status, body) = api.get("/api/v1/jobs/no-such-job").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no-such-job",
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_run_on_the_executors() {
    let (cluster, api) = demo_cluster(50_000).await;
    let (_, job) = api
        .run_async("SET quarry.local_execution = false; SELECT city, sum(revenue) FROM demo.orders GROUP BY city")
        .await;
    let stages = job["profile"]["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("stages in the profile: {job}"));
    // The scan stage ran as tasks on both executors, each scanning rows.
    let scan_stage = stages
        .iter()
        .find(|s| s["plan"].as_str().unwrap_or("").contains("DataSourceExec"))
        .expect("a stage scanning files");
    let mut scanned_by = std::collections::BTreeMap::new();
    for task in scan_stage["tasks"].as_array().expect("tasks") {
        let scan = task["operators"]
            .as_array()
            .and_then(|ops| {
                ops.iter().find(|o| {
                    o["operator"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("DataSourceExec")
                })
            })
            .expect("the task's scan operator");
        *scanned_by
            .entry(task["executor_id"].as_str().unwrap_or("").to_string())
            .or_insert(0) += scan["output_rows"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        scanned_by.keys().cloned().collect::<Vec<_>>(),
        vec!["executor-1".to_string(), "executor-2".to_string()],
        "{job}"
    );
    assert_eq!(scanned_by.values().sum::<u64>(), 50_000);
    // The coordinator's own stage reads shuffled data only.
    let root = job["profile"]["root"].as_array().expect("root operators");
    assert!(root.iter().all(|o| {
        !o["operator"]
            .as_str()
            .unwrap_or("")
            .contains("DataSourceExec")
    }));
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_as_json_pages_arrow_ndjson_csv_and_parquet_over_a_million_rows() {
    let rows = 1_100_000i64;
    let (cluster, api) = demo_cluster(rows as usize).await;
    let (id, job) = api
        .run_async("SELECT order_id, city FROM demo.orders")
        .await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["rowCount"], rows);

    // JSON pages, without a small cap
    let (status, page) = api
        .get(&format!(
            "/api/v1/jobs/{id}/results?offset=1000&limit=50000"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(50_000));
    assert_eq!(page["returned"], 50_000);
    assert_eq!(page["rowCount"], rows);
    let (_, tail) = api
        .get(&format!("/api/v1/jobs/{id}/results?offset={}", rows - 3))
        .await;
    assert_eq!(tail["rows"].as_array().map(Vec::len), Some(3));

    // Arrow IPC stream of every row
    let response = api
        .request(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/results"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .send()
        .await
        .expect("arrow results");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = response.bytes().await.expect("body");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .expect("IPC stream");
    let (mut count, mut sum) = (0i64, 0i64);
    for batch in reader {
        let batch = batch.expect("batch");
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("order ids");
        count += ids.len() as i64;
        sum += ids.values().iter().sum::<i64>();
    }
    assert_eq!(count, rows);
    assert_eq!(sum, rows * (rows + 1) / 2, "every order id exactly once");

    // NDJSON of every row
    let response = api
        .request(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/results"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("ndjson results");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as i64, rows);
    let first: Value = serde_json::from_str(lines[0]).expect("a JSON row");
    assert!(
        first["order_id"].is_i64() && first["city"].is_string(),
        "{first}"
    );

    // CSV and Parquet of every row, saved as files
    let response = api
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{id}/results?format=csv&download=true"),
        )
        .send()
        .await
        .expect("csv results");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv");
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"quarry-{id}.csv\"").as_str()
    );
    let text = response.text().await.expect("body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "order_id,city", "one header line");
    assert_eq!(lines.len() as i64, rows + 1);
    let sum: i64 = lines[1..]
        .iter()
        .map(|l| {
            l.split(',')
                .next()
                .and_then(|v| v.parse::<i64>().ok())
                .expect("an id")
        })
        .sum();
    assert_eq!(sum, rows * (rows + 1) / 2, "every order id exactly once");

    let response = api
        .request(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/results"))
        .header("accept", "application/vnd.apache.parquet")
        .send()
        .await
        .expect("parquet results");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.expect("body");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("a Parquet file")
        .build()
        .expect("reader");
    let (mut count, mut sum) = (0i64, 0i64);
    for batch in reader {
        let batch = batch.expect("batch");
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("order ids");
        count += ids.len() as i64;
        sum += ids.values().iter().sum::<i64>();
    }
    assert_eq!(count, rows);
    assert_eq!(sum, rows * (rows + 1) / 2, "every order id exactly once");

    let (status, error) = api
        .get(&format!("/api/v1/jobs/{id}/results?format=xlsx"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("csv"),
        "{error}"
    );

    // and the synchronous endpoint returns them all too
    let body = api
        .sql("SELECT order_id FROM demo.orders WHERE order_id <= 250000")
        .await;
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(250_000));
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_job() {
    let cluster = TestCluster::start_with(2, |c| c.coordinator.test_sources = true).await;
    let api = Api::new(cluster.http());
    // A query that never finishes by itself (its scan never yields), running on the
    // executors before it is cancelled.
    let (_, started) = api
        .post(
            "/api/v1/sql",
            json!({"sql": "SELECT count(*) FROM sys.test_stall", "async": true}),
        )
        .await;
    let id = started["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .cluster
        .executors
        .iter()
        .all(|e| e.status().running_tasks == 0)
    {
        assert!(Instant::now() < deadline, "the query's tasks never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, cancelled) = api
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");
    let job = api.wait_job(&id).await;
    assert_eq!(job["state"], "CANCELED");
    assert_eq!(job["error"]["code"], "CANCELLED");
    // a cancelled job has no results
    let (status, body) = api.get(&format!("/api/v1/jobs/{id}/results")).await;
    assert_error(
        status,
        &body,
        StatusCode::GONE,
        "CANCELLED",
        "cancelled through the REST API",
    );
    // cancelling a finished job changes nothing
    let (_, again) = api
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again["cancelled"], false);
    // executors let go of the query's outputs
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.cluster.executors.iter().any(|e| {
        let s = e.status();
        s.exchange_entries > 0
            || s.running_tasks > 0
            || s.memory_used_bytes > 0
            || s.spill_files > 0
    }) {
        assert!(
            Instant::now() < deadline,
            "executors kept the cancelled query's work"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_crud_with_versions() {
    let cluster = TestCluster::start(2).await;
    let api = Api::new(cluster.http());
    let data = cluster.dir.path().join("files");
    std::fs::create_dir_all(&data).expect("dir");
    std::fs::write(data.join("t.csv"), "a,b\n1,x\n2,y\n").expect("csv");
    let root = data
        .canonicalize()
        .expect("canonical")
        .display()
        .to_string();

    // sources
    let (status, created) = api
        .post(
            "/api/v1/catalog/sources",
            json!({"name": "files", "config": {"type": "local", "root": root}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["version"], 1);
    let (status, body) = api
        .post(
            "/api/v1/catalog/sources",
            json!({"name": "files", "config": {"type": "local", "root": root}}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "ALREADY_EXISTS",
        "already exists",
    );
    let (status, body) = api
        .post(
            "/api/v1/catalog/sources",
            json!({"name": "bad", "config": {"type": "local", "root": "/does/not/exist"}}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "not readable",
    );
    let (status, list) = api.get("/api/v1/catalog/sources").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["sources"].as_array().map(Vec::len), Some(1));
    let (status, updated) = api
        .put(
            "/api/v1/catalog/sources/files",
            json!({"version": 1, "config": {"type": "local", "root": root}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    let (status, body) = api
        .put(
            "/api/v1/catalog/sources/files",
            json!({"version": 1, "config": {"type": "local", "root": root}}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "CONFLICT",
        "changed concurrently",
    );

    // schemas
    let (status, _) = api
        .post("/api/v1/catalog/schemas", json!({"name": "sales"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // datasets: a table from the source, a view over it
    let (status, table) = api
        .post(
            "/api/v1/catalog/schemas/sales/datasets",
            json!({"type": "table", "name": "t", "source": "files", "path": "t.csv"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    assert_eq!(table["columns"][0]["name"], "a");
    assert_eq!(table["format"], "csv");
    let (status, body) = api
        .post(
            "/api/v1/catalog/schemas/sales/datasets",
            json!({"type": "table", "name": "u", "source": "files", "path": "../../etc/passwd"}),
        )
        .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
        "{body}"
    );
    let (status, view) = api
        .post(
            "/api/v1/catalog/schemas/sales/datasets",
            json!({"type": "view", "name": "v", "sql": "SELECT a FROM t WHERE b = 'y'"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(
        api.sql("SELECT * FROM sales.v").await["rows"],
        json!([{"a": 2}])
    );

    let (status, got) = api.get("/api/v1/catalog/schemas/sales/datasets/v").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["type"], "view");
    let (status, changed) = api
        .put(
            "/api/v1/catalog/schemas/sales/datasets/v",
            json!({"type": "view", "sql": "SELECT a FROM t WHERE b = 'x'", "version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        api.sql("SELECT * FROM sales.v").await["rows"],
        json!([{"a": 1}])
    );
    let (status, body) = api
        .put(
            "/api/v1/catalog/schemas/sales/datasets/v",
            json!({"type": "view", "sql": "SELECT 1", "version": 1}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "CONFLICT",
        "changed concurrently",
    );
    let (status, body) = api
        .put(
            "/api/v1/catalog/schemas/sales/datasets/v",
            json!({"type": "view", "sql": "SELEC 1", "version": 2}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "SQL error",
    );

    let (status, schema) = api.get("/api/v1/catalog/schemas/sales").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schema["datasets"].as_array().map(Vec::len), Some(2));
    let (status, overview) = api.get("/api/v1/catalog").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(overview["catalog"], "quarry");

    // deletes: in-use refused, stale refused, then gone
    let (status, body) = api.delete("/api/v1/catalog/sources/files").await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "still in use",
    );
    let (status, body) = api
        .delete("/api/v1/catalog/schemas/sales/datasets/v?version=1")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "CONFLICT",
        "changed concurrently",
    );
    let (status, _) = api
        .delete("/api/v1/catalog/schemas/sales/datasets/v?version=2")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A schema's delete honours the version it names, and a stale one deletes nothing.
    let (status, body) = api
        .delete("/api/v1/catalog/schemas/sales?cascade=true&version=7")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "CONFLICT",
        "changed concurrently",
    );
    let (status, _) = api.get("/api/v1/catalog/schemas/sales").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .delete("/api/v1/catalog/schemas/sales?cascade=true&version=1")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.delete("/api/v1/catalog/sources/files").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get("/api/v1/catalog/sources/files").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "does not exist",
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_tokens_when_auth_is_on() {
    let cluster = TestCluster::start_with(1, |c| {
        c.coordinator.auth = true;
        c.coordinator.admin_password = Some("s3cret".to_string());
    })
    .await;
    let mut api = Api::new(cluster.http());
    let (status, body) = api.post("/api/v1/sql", json!({"sql": "SELECT 1"})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "authentication required",
    );
    let (status, body) = api
        .post(
            "/api/v1/login",
            json!({"user": "admin", "password": "wrong"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "wrong user name or password",
    );
    let (status, login) = api
        .post(
            "/api/v1/login",
            json!({"user": "admin", "password": "s3cret"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    api.token = Some(login["token"].as_str().expect("token").to_string());
    assert_eq!(
        api.sql("SELECT 41 + 1 AS x").await["rows"],
        json!([{"x": 42}])
    );
    // settings persist across requests of one token
    api.sql("SET datafusion.execution.batch_size = 1234").await;
    let body = api
        .sql("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        .await;
    assert_eq!(body["rows"], json!([{"value": "1234"}]));
    api.token = Some("forged".to_string());
    let (status, _) = api.get("/api/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    cluster.cluster.shutdown().await;
}
