//! The Flight SQL service through arrow-flight's own client: the metadata commands,
//! cancellation and session options that the Python test does not reach.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

use crate::harness::TestCluster;

async fn client(cluster: &TestCluster) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cluster.cluster.coordinator.flight_addr
    ))
    .expect("endpoint")
    .connect()
    .await
    .expect("connect");
    let mut client = FlightSqlServiceClient::new(channel);
    client
        .handshake("", "")
        .await
        .expect("handshake gives a token");
    client
}

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = client.do_get(ticket).await.expect("do_get");
        let mut part: Vec<RecordBatch> = stream.try_collect().await.expect("batches");
        batches.append(&mut part);
    }
    batches
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b
                .column_by_name(column)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .expect("a string column");
            (0..array.len()).map(move |i| array.value(i).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_commands() {
    let cluster = TestCluster::start(1).await;
    quarry_coordinator::demo::install(
        &cluster.cluster.coordinator.engine,
        &cluster.dir.path().join("demo"),
        1000,
    )
    .await
    .expect("demo");
    let mut client = client(&cluster).await;

    let info = client.get_catalogs().await.expect("catalogs");
    assert_eq!(
        strings(&fetch(&mut client, info).await, "catalog_name"),
        vec!["quarry"]
    );

    let info = client.get_table_types().await.expect("table types");
    assert_eq!(
        strings(&fetch(&mut client, info).await, "table_type"),
        vec!["SYSTEM TABLE", "TABLE", "VIEW"]
    );

    // GetTables with patterns and schemas
    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("de%".to_string()),
            table_name_filter_pattern: Some("orders%".to_string()),
            table_types: vec!["TABLE".to_string()],
            include_schema: true,
        })
        .await
        .expect("tables");
    let schema = info.clone().try_decode_schema().expect("schema");
    assert!(schema.field_with_name("table_schema").is_ok());
    let batches = fetch(&mut client, info).await;
    assert_eq!(
        strings(&batches, "table_name"),
        vec!["orders", "orders_csv"]
    );

    // SqlInfo
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .expect("sql info");
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    // XDBC type info, all and one type
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("xdbc");
    let names = strings(&fetch(&mut client, info).await, "type_name");
    assert!(names.contains(&"BIGINT".to_string()) && names.contains(&"VARCHAR".to_string()));

    // No keys, but the right (empty) answer
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("demo".to_string()),
            table: "orders".to_string(),
        })
        .await
        .expect("primary keys");
    let schema = info.clone().try_decode_schema().expect("schema");
    assert_eq!(schema.field(2).name(), "table_name");
    assert!(!schema.field(2).is_nullable());
    assert_eq!(
        fetch(&mut client, info)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        0
    );
    cluster.cluster.shutdown().await;
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionValue {
    #[prost(string, optional, tag = "1")]
    string_value: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetOptions {
    #[prost(map = "string, message", tag = "1")]
    session_options: HashMap<String, SessionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetError {
    #[prost(int32, tag = "1")]
    value: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetResult {
    #[prost(map = "string, message", tag = "1")]
    errors: HashMap<String, SetError>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_options_and_cancel() {
    let cluster = TestCluster::start_with(2, |c| c.coordinator.test_sources = true).await;
    quarry_coordinator::demo::install(
        &cluster.cluster.coordinator.engine,
        &cluster.dir.path().join("demo"),
        100_000,
    )
    .await
    .expect("demo");
    let mut client = client(&cluster).await;

    // Session options: the default schema and a setting; an unknown setting is refused.
    let request = SetOptions {
        session_options: HashMap::from([
            (
                "schema".to_string(),
                SessionValue {
                    string_value: Some("demo".to_string()),
                },
            ),
            (
                "datafusion.execution.batch_size".to_string(),
                SessionValue {
                    string_value: Some("777".to_string()),
                },
            ),
            (
                "no.such.option".to_string(),
                SessionValue {
                    string_value: Some("1".to_string()),
                },
            ),
        ]),
    };
    let mut results = client
        .do_action(Action::new("SetSessionOptions", request.encode_to_vec()))
        .await
        .expect("SetSessionOptions");
    let result = SetResult::decode(
        results
            .try_next()
            .await
            .expect("a result")
            .expect("body")
            .body,
    )
    .expect("decode");
    assert_eq!(
        result.errors.keys().collect::<Vec<_>>(),
        vec!["no.such.option"]
    );
    let info = client
        .execute("SELECT count(*) AS n FROM orders".to_string(), None)
        .await
        .expect("the session's schema resolves 'orders'");
    assert_eq!(fetch(&mut client, info).await[0].num_rows(), 1);
    let info = client
        .execute(
            "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'"
                .to_string(),
            None,
        )
        .await
        .expect("settings");
    assert_eq!(
        strings(&fetch(&mut client, info).await, "value"),
        vec!["777"]
    );

    // CancelFlightInfo stops a running query (one whose scan never yields, so it is
    // certainly still running).
    let info = client
        .execute("SELECT count(*) FROM sys.test_stall".to_string(), None)
        .await
        .expect("the query starts");
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
    let cancel = CancelFlightInfoRequest::new(info.clone());
    let mut results = client
        .do_action(Action::new("CancelFlightInfo", cancel.encode_to_vec()))
        .await
        .expect("cancel");
    let result = CancelFlightInfoResult::decode(
        results
            .try_next()
            .await
            .expect("result")
            .expect("body")
            .body,
    )
    .expect("decode");
    assert_eq!(result.status(), CancelStatus::Cancelled);
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let error = match client.do_get(ticket).await {
        Ok(stream) => stream
            .try_collect::<Vec<RecordBatch>>()
            .await
            .expect_err("a cancelled query yields no results")
            .to_string(),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("cancelled"), "{error}");
    // Its tasks stop and its outputs go, within a second or so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.cluster.executors.iter().any(|e| {
        let s = e.status();
        s.running_tasks > 0
            || s.exchange_entries > 0
            || s.memory_used_bytes > 0
            || s.spill_files > 0
    }) {
        assert!(
            Instant::now() < deadline,
            "the cancelled query kept running: {:?}",
            cluster
                .cluster
                .executors
                .iter()
                .map(|e| e.status())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.cluster.shutdown().await;
}
