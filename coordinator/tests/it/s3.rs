//! An S3 source against a real S3-protocol server (moto in server mode on loopback).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use quarry_coordinator::service::{QueryService, SessionHandle};

use quarry_coordinator::server::Location;

use crate::harness::{TestCluster, free_port, python, run_python};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto with authentication on after its first few (setup) requests.
fn start_moto(port: u16) -> Moto {
    let server = python().with_file_name("moto_server");
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// Create an IAM user with keys and an S3 policy (the three unauthenticated actions
/// moto allows), then a bucket with Parquet and CSV objects.
const SETUP: &str = r#"
import io, json, sys, boto3
import pyarrow as pa, pyarrow.parquet as pq
endpoint = sys.argv[1]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="quarry")
key = iam.create_access_key(UserName="quarry")["AccessKey"]
iam.put_user_policy(UserName="quarry", PolicyName="all-s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
     # A storage fault for the test of a write that fails half-way.
     {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::lake/wh/public/faulty/date=2024-05-03/*"}]}))
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket="lake")
parts = int(sys.argv[2]) if len(sys.argv) > 2 else 3
for part in range(parts):
    table = pa.table({"id": list(range(part * 100, part * 100 + 100)), "kind": ["a", "b"] * 50})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3.put_object(Bucket="lake", Key=f"data/events/part={part}/f.parquet", Body=buf.getvalue())
s3.put_object(Bucket="lake", Key="data/people.csv", Body=b"id,name\n1,ann\n2,bo\n")
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;

async fn run(
    engine: &Arc<dyn QueryService>,
    session: &SessionHandle,
    sql: &str,
) -> Result<Vec<arrow::array::RecordBatch>, String> {
    let job = engine
        .submit(session, sql, None)
        .await
        .map_err(|e| e.message)?;
    let batches: Vec<arrow::array::RecordBatch> = job
        .results(0, None)
        .try_collect()
        .await
        .map_err(|e| e.message)?;
    Ok(batches)
}

fn first_i64(batches: &[arrow::array::RecordBatch]) -> i64 {
    use arrow::array::{Array, Int64Array};
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_tables_and_bad_credentials() {
    let port = free_port();
    let _moto = start_moto(port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let keys = run_python(SETUP, &[&endpoint]);
    let mut parts = keys.split_whitespace();
    let (key, secret) = (parts.next().expect("key"), parts.next().expect("secret"));

    let cluster = TestCluster::start(2).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");

    // Wrong credentials are refused at CREATE SOURCE, and nothing is stored.
    let wrong = format!(
        "CREATE SOURCE lake TYPE s3 WITH (bucket = 'lake', endpoint = '{endpoint}', access_key_id = '{key}', secret_access_key = 'wrong', path_style = true)"
    );
    let err = run(&engine, &session, &wrong)
        .await
        .expect_err("wrong secret refused");
    assert!(err.contains("S3 source 'lake'"), "{err}");
    let sources = run(&engine, &session, "SHOW SOURCES")
        .await
        .expect("sources");
    assert_eq!(
        sources.iter().map(|b| b.num_rows()).sum::<usize>(),
        0,
        "a refused source was stored"
    );

    // A wrong endpoint is a clear error too, quickly.
    let started = Instant::now();
    let nowhere = format!(
        "CREATE SOURCE gone TYPE s3 WITH (bucket = 'lake', endpoint = 'http://127.0.0.1:{}', access_key_id = 'k', secret_access_key = 's', path_style = true)",
        free_port()
    );
    let err = run(&engine, &session, &nowhere)
        .await
        .expect_err("unreachable endpoint refused");
    assert!(err.contains("S3 source 'gone'"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // The right ones work, for Parquet folders with partitions and for CSV.
    run(&engine, &session, &format!(
        "CREATE SOURCE lake TYPE s3 WITH (bucket = 'lake', prefix = 'data', endpoint = '{endpoint}', access_key_id = '{key}', secret_access_key = '{secret}', path_style = true)"
    ))
    .await
    .expect("source");
    run(&engine, &session, "CREATE TABLE events FROM lake 'events'")
        .await
        .expect("parquet table");
    run(
        &engine,
        &session,
        "CREATE TABLE people FROM lake 'people.csv'",
    )
    .await
    .expect("csv table");
    assert_eq!(
        first_i64(
            &run(&engine, &session, "SELECT count(*) FROM events")
                .await
                .expect("count")
        ),
        300
    );
    assert_eq!(
        first_i64(
            &run(
                &engine,
                &session,
                // Small as it is, it runs on the executors: what this test checks.
                "SET quarry.local_execution = false; \
                 SELECT count(*) FROM events WHERE part = '2' AND kind = 'a'"
            )
            .await
            .expect("count")
        ),
        50
    );
    assert_eq!(
        first_i64(
            &run(&engine, &session, "SELECT sum(id) FROM people")
                .await
                .expect("sum")
        ),
        3
    );
    let err = run(&engine, &session, "CREATE TABLE missing FROM lake 'nope/'")
        .await
        .expect_err("missing prefix");
    assert!(err.contains("no files found"), "{err}");

    // Scans of S3 files ran on the executors, which built their own client from the
    // source's settings.
    let completed = Some(quarry_coordinator::service::JobState::Completed);
    let jobs = engine.list_jobs(&session, completed, 20).expect("jobs");
    let scan_job = jobs
        .iter()
        .find(|j| j.sql.contains("kind = 'a'"))
        .expect("the filtered count");
    let stages = scan_job.profile["stages"].as_array().expect("stages");
    let scanned: u64 = stages
        .iter()
        .flat_map(|s| s["tasks"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| t["operators"].as_array().cloned().unwrap_or_default())
        .filter(|o| {
            o["operator"]
                .as_str()
                .unwrap_or("")
                .starts_with("DataSourceExec")
        })
        .map(|o| o["output_rows"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        scanned, 100,
        "the executors scanned partition 2 only: {}",
        scan_job.profile
    );
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_on_one_bucket_name_never_mix() {
    // Two S3 servers, each with a bucket called `lake` holding different data and its own keys.
    let (port_a, port_b) = (free_port(), free_port());
    let (_moto_a, _moto_b) = (start_moto(port_a), start_moto(port_b));
    let mut sources = Vec::new();
    for (name, port, parts) in [("a", port_a, "3"), ("b", port_b, "1")] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let keys = run_python(SETUP, &[&endpoint, parts]);
        let mut k = keys.split_whitespace();
        let (key, secret) = (k.next().expect("key"), k.next().expect("secret"));
        sources.push(format!(
            "CREATE SOURCE {name} TYPE s3 WITH (bucket = 'lake', prefix = 'data', endpoint = '{endpoint}', access_key_id = '{key}', secret_access_key = '{secret}', path_style = true)"
        ));
    }
    let cluster = TestCluster::start(2).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    for sql in sources.iter().map(String::as_str).chain([
        "CREATE TABLE events_a FROM a 'events'",
        "CREATE TABLE events_b FROM b 'events'",
    ]) {
        run(&engine, &session, sql).await.expect(sql);
    }
    // One statement reads both, on the executors, each through its own source's client.
    let batches = run(
        &engine,
        &session,
        "SELECT (SELECT count(*) FROM events_a) * 1000 + (SELECT count(*) FROM events_b)",
    )
    .await
    .expect("both sources");
    assert_eq!(first_i64(&batches), 300_100);
    cluster.cluster.shutdown().await;
}

/// A warehouse in moto's `lake` bucket under `wh/`, with the keys SETUP printed.
fn s3_warehouse(endpoint: &str, key: &str, secret: &str) -> Location {
    let env = |name: &str| match name {
        "AWS_ENDPOINT_URL" => Some(endpoint.to_string()),
        "AWS_ACCESS_KEY_ID" => Some(key.to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some(secret.to_string()),
        _ => None,
    };
    Location::parse("s3://lake/wh", env).expect("S3 warehouse")
}

/// One line per row, sorted: what both readers must agree on.
const DAILY_ROWS: &str = "SELECT concat(CAST(date AS VARCHAR), '|', city, '|', \
     CAST(round(revenue * 100) AS BIGINT), '|', orders) AS line FROM daily ORDER BY line";

/// The tutorial's pipeline: raw CSV with inferred types, daily metrics by date and city
/// written as a partitioned Delta table into an S3 warehouse by the executors, read back
/// by Quarry and by the `deltalake` package with identical rows; the same through a
/// writable S3 source; COPY as plain Parquet read by pyarrow; a read-only source refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_etl_into_an_s3_warehouse_is_read_by_deltalake() {
    let port = free_port();
    let _moto = start_moto(port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let keys = run_python(SETUP, &[&endpoint]);
    let mut parts = keys.split_whitespace();
    let (key, secret) = (parts.next().expect("key"), parts.next().expect("secret"));

    let warehouse = s3_warehouse(&endpoint, key, secret);
    let cluster = TestCluster::start_with(2, |c| {
        c.slots_per_executor = 2;
        c.coordinator.warehouse = Some(warehouse);
    })
    .await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    let csv_dir = cluster.dir.path().join("raw");
    std::fs::create_dir_all(&csv_dir).expect("raw dir");
    let mut text = String::from("order_id,date,city,revenue\n");
    for i in 0..400 {
        let city = ["Lyon", "Paris", "New York", "Oslo"][i % 4];
        text.push_str(&format!(
            "{i},2024-05-{:02},{city},{}.25\n",
            1 + (i / 4) % 8,
            i % 50
        ));
    }
    std::fs::write(csv_dir.join("orders.csv"), text).expect("csv");
    let root = csv_dir.canonicalize().expect("root").display().to_string();
    for statement in [
        format!("CREATE SOURCE files TYPE local WITH (root = '{root}')"),
        "CREATE TABLE orders FROM files 'orders.csv'".to_string(),
        format!(
            "CREATE SOURCE lake TYPE s3 WITH (bucket = 'lake', prefix = 'warehouse', endpoint = '{endpoint}', access_key_id = '{key}', secret_access_key = '{secret}', path_style = true, writable = true)"
        ),
        format!(
            "CREATE SOURCE frozen TYPE s3 WITH (bucket = 'lake', endpoint = '{endpoint}', access_key_id = '{key}', secret_access_key = '{secret}', path_style = true)"
        ),
    ] {
        run(&engine, &session, &statement).await.expect(&statement);
    }
    let written = run(
        &engine,
        &session,
        "CREATE TABLE daily PARTITION BY (date) AS \
         SELECT date, city, sum(revenue) AS revenue, count(*) AS orders FROM orders \
         WHERE revenue > 0 GROUP BY date, city",
    )
    .await
    .expect("CTAS into the S3 warehouse");
    assert_eq!(first_u64(&written), 32, "8 days x 4 cities");
    let expected = run(
        &engine,
        &session,
        "SELECT count(*) FROM orders WHERE revenue > 0",
    )
    .await
    .expect("source count");
    let back = run(&engine, &session, "SELECT sum(orders) FROM daily")
        .await
        .expect("read back");
    assert_eq!(first_i64(&back), first_i64(&expected));
    let lines = run(&engine, &session, DAILY_ROWS).await.expect("rows");
    let quarry_rows: Vec<String> = lines
        .iter()
        .flat_map(|b| {
            let text = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
                .expect("as text");
            let column = arrow::array::cast::as_string_array(&text);
            (0..b.num_rows())
                .map(|i| column.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(quarry_rows.len(), 32);

    let script = format!(
        "import deltalake, os\n\
         opts = {{'AWS_ENDPOINT_URL': {endpoint:?}, 'AWS_ACCESS_KEY_ID': {key:?}, \
         'AWS_SECRET_ACCESS_KEY': {secret:?}, 'AWS_REGION': 'us-east-1', \
         'AWS_ALLOW_HTTP': 'true', 'AWS_S3_ALLOW_UNSAFE_RENAME': 'true'}}\n\
         t = deltalake.DeltaTable('s3://lake/wh/public/daily', storage_options=opts)\n\
         data = t.to_pyarrow_table().to_pylist()\n\
         print(t.metadata().partition_columns, flush=True)\n\
         for line in sorted(f\"{{r['date']}}|{{r['city']}}|{{round(r['revenue'] * 100)}}|{{r['orders']}}\" for r in data):\n\
         \x20   print(line, flush=True)\n\
         os._exit(0)\n"
    );
    let printed = run_python(&script, &[]);
    let mut printed = printed.lines();
    assert_eq!(printed.next(), Some("['date']"), "partitioned by date");
    let delta_rows: Vec<String> = printed.map(str::to_string).collect();
    assert_eq!(
        delta_rows, quarry_rows,
        "deltalake reads the rows Quarry wrote"
    );

    // The same table in a writable S3 source.
    let copied = run(
        &engine,
        &session,
        "CREATE TABLE daily_copy WITH (source = 'lake', path = 'daily') AS SELECT * FROM daily",
    )
    .await
    .expect("CTAS into a writable source");
    assert_eq!(first_u64(&copied), 32);
    let script = format!(
        "import deltalake, os\n\
         opts = {{'AWS_ENDPOINT_URL': {endpoint:?}, 'AWS_ACCESS_KEY_ID': {key:?}, \
         'AWS_SECRET_ACCESS_KEY': {secret:?}, 'AWS_REGION': 'us-east-1', \
         'AWS_ALLOW_HTTP': 'true', 'AWS_S3_ALLOW_UNSAFE_RENAME': 'true'}}\n\
         t = deltalake.DeltaTable('s3://lake/warehouse/daily', storage_options=opts)\n\
         print(t.to_pyarrow_table().num_rows, flush=True)\n\
         os._exit(0)\n"
    );
    assert_eq!(run_python(&script, &[]).trim(), "32");

    let refused = run(
        &engine,
        &session,
        "CREATE TABLE nope WITH (source = 'frozen') AS SELECT 1 AS a",
    )
    .await
    .expect_err("read-only source");
    assert!(refused.contains("read-only"), "{refused}");
    let escape = run(
        &engine,
        &session,
        "CREATE TABLE nope WITH (source = 'lake', path = '../x') AS SELECT 1 AS a",
    )
    .await
    .expect_err("escaping path");
    assert!(escape.contains("leaves the root"), "{escape}");

    // COPY: plain partitioned Parquet, for tools that read folders of files.
    let copied = run(
        &engine,
        &session,
        "COPY (SELECT date, city, revenue FROM orders WHERE revenue > 0) TO lake 'exports/orders' \
         WITH (FORMAT parquet, PARTITION BY (date))",
    )
    .await
    .expect("COPY into S3");
    assert_eq!(first_u64(&copied) as i64, first_i64(&expected));
    let read_copy = format!(
        "import pyarrow.dataset as ds, pyarrow.fs as fs, os\n\
         s3 = fs.S3FileSystem(endpoint_override={endpoint:?}, scheme='http', access_key={key:?}, \
         secret_key={secret:?}, region='us-east-1')\n\
         d = ds.dataset('lake/warehouse/exports/orders', filesystem=s3, format='parquet', partitioning='hive')\n\
         t = d.to_table()\n\
         print(t.num_rows, sorted(set(str(v) for v in t.column('date').to_pylist()))[0], flush=True)\n\
         os._exit(0)\n"
    );
    let printed = run_python(&read_copy, &[]);
    assert_eq!(
        printed.trim(),
        format!("{} 2024-05-01", first_i64(&expected)),
        "pyarrow reads the copied files"
    );
}

fn first_u64(batches: &[arrow::array::RecordBatch]) -> u64 {
    use arrow::array::{Array, UInt64Array};
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| a.value(0))
        })
        .expect("a count")
}

/// A storage fault half-way through a write (S3 refuses the files of one partition, as a
/// full bucket or a revoked key would): the statement fails with S3's reason, the table
/// stays readable at its previous version, and the files the write did put are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_half_way_leaves_the_previous_version_and_no_files() {
    let port = free_port();
    let _moto = start_moto(port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let keys = run_python(SETUP, &[&endpoint]);
    let mut parts = keys.split_whitespace();
    let (key, secret) = (parts.next().expect("key"), parts.next().expect("secret"));
    let warehouse = s3_warehouse(&endpoint, key, secret);
    let cluster = TestCluster::start_with(2, |c| c.coordinator.warehouse = Some(warehouse)).await;
    let engine = cluster.cluster.coordinator.service();
    let session = quarry_coordinator::service::in_process_session(&engine, "test");
    for statement in [
        "CREATE TABLE faulty (date DATE, city VARCHAR, n BIGINT) PARTITION BY (date)",
        "INSERT INTO faulty VALUES (DATE '2024-05-01', 'Lyon', 1), (DATE '2024-05-02', 'Oslo', 2)",
    ] {
        run(&engine, &session, statement).await.expect(statement);
    }
    let failed = run(
        &engine,
        &session,
        "INSERT INTO faulty VALUES (DATE '2024-05-01', 'Lyon', 10), (DATE '2024-05-02', 'Oslo', 20), \
         (DATE '2024-05-03', 'Paris', 30), (DATE '2024-05-04', 'Rome', 40), (DATE '2024-05-05', 'Bern', 50)",
    )
    .await
    .expect_err("S3 refuses one partition's file");
    assert!(
        failed.contains("Access Denied") || failed.contains("AccessDenied"),
        "{failed}"
    );
    assert!(
        !failed.contains("incident"),
        "a storage fault is not a bug: {failed}"
    );
    let rows = run(&engine, &session, "SELECT sum(n) FROM faulty")
        .await
        .expect("still readable");
    assert_eq!(first_i64(&rows), 3, "the table is at its previous version");

    // Every object under the table is the log or a file of the committed version.
    let script = format!(
        "import boto3, deltalake, os\n\
         s3 = boto3.client('s3', endpoint_url={endpoint:?}, region_name='us-east-1', \
         aws_access_key_id={key:?}, aws_secret_access_key={secret:?})\n\
         keys = [o['Key'] for o in s3.list_objects_v2(Bucket='lake', Prefix='wh/public/faulty/').get('Contents', [])]\n\
         data = [k[len('wh/public/faulty/'):] for k in keys if '/_delta_log/' not in k]\n\
         opts = {{'AWS_ENDPOINT_URL': {endpoint:?}, 'AWS_ACCESS_KEY_ID': {key:?}, \
         'AWS_SECRET_ACCESS_KEY': {secret:?}, 'AWS_REGION': 'us-east-1', 'AWS_ALLOW_HTTP': 'true'}}\n\
         t = deltalake.DeltaTable('s3://lake/wh/public/faulty', storage_options=opts)\n\
         files = [u.split('/faulty/', 1)[1] for u in t.file_uris()]\n\
         print(t.version(), len(files), sorted(set(data) - set(files)), flush=True)\n\
         os._exit(0)\n"
    );
    let mut printed = String::new();
    for _ in 0..50 {
        printed = run_python(&script, &[]);
        if printed.trim() == "1 2 []" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        printed.trim(),
        "1 2 []",
        "version 1, its 2 files, nothing else"
    );
}
