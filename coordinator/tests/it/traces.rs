//! Traces: a `quarry up --otlp-endpoint` sends the spans of a distributed query to an OTLP
//! receiver of the test's own on loopback — one trace per job with the job id, its trace
//! id in the job record, a span per stage and task on the coordinator and per task run on
//! the executors, every parent link intact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::harness::QuarryProcess;
use crate::rest::Api;

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn named<'a>(spans: &'a [Span], name: &'a str) -> impl Iterator<Item = &'a Span> {
    spans.iter().filter(move |s| s.name == name)
}

impl Receiver {
    /// The spans of `trace`, once every one of `needed` has arrived (30 s at most).
    async fn spans_of(&self, trace: &str, needed: &[&str]) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Span> = self
                .0
                .lock()
                .expect("spans")
                .iter()
                .filter(|s| hex(&s.trace_id) == trace)
                .cloned()
                .collect();
            if needed
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
            {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans of {trace} did not all arrive: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_query_arrives_as_one_trace_with_every_stage_and_task() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(quarry_common::flight_channels::grpc_incoming(listener)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let quarry = QuarryProcess::up(
        dir.path(),
        &["--demo-rows", "20000", "--otlp-endpoint", &endpoint],
    );
    let api = Api::new(quarry.http.clone());
    let (id, job) = api
        .run_async("SET quarry.local_execution = false; SELECT city, count(*) AS n, sum(revenue) AS r FROM demo.orders GROUP BY city")
        .await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    let trace_id = job["traceId"]
        .as_str()
        .expect("the job records its trace")
        .to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // The batch exporter sends every few seconds; the job's root span ends with the job.
    let spans = receiver
        .spans_of(&trace_id, &["query", "run task", "results"])
        .await;
    // A write's trace has its commit.
    let (_, written) = api
        .run_async("SET quarry.local_execution = false; CREATE TABLE public.by_city AS SELECT city, count(*) AS n FROM demo.orders GROUP BY city")
        .await;
    assert_eq!(written["state"], "COMPLETED", "{written}");
    let write_trace = written["traceId"].as_str().expect("trace").to_string();
    receiver.spans_of(&write_trace, &["query", "commit"]).await;
    drop(quarry);
    server.abort();

    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let parent = |s: &Span| by_id.get(&hex(&s.parent_span_id)).map(|p| p.name.clone());
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root");
    assert_eq!(roots[0].name, "query");
    assert_eq!(attribute(roots[0], "job_id").as_deref(), Some(id.as_str()));
    for s in &spans {
        if !s.parent_span_id.is_empty() {
            assert!(parent(s).is_some(), "{}'s parent is in the trace", s.name);
        }
    }
    let expect_parent = |name: &str, wanted: &str| {
        let mut n = 0;
        for s in named(&spans, name) {
            assert_eq!(parent(s).as_deref(), Some(wanted), "{name} under {wanted}");
            n += 1;
        }
        n
    };
    assert_eq!(expect_parent("plan", "query"), 1);
    assert_eq!(expect_parent("execute", "query"), 1);
    let stages = expect_parent("stage", "execute");
    let tasks = expect_parent("task", "stage");
    let runs = expect_parent("run task", "task");
    assert_eq!(expect_parent("results", "execute"), 1);
    assert!(stages >= 2, "a distributed query has stages: {stages}");
    assert!(
        tasks >= stages && runs >= tasks,
        "{stages} stages, {tasks} tasks, {runs} runs"
    );
    // Every stage has its tasks; runs on the executors name the job and their executor.
    for stage in named(&spans, "stage") {
        assert!(
            named(&spans, "task").any(|t| t.parent_span_id == stage.span_id),
            "stage {:?} has tasks",
            attribute(stage, "stage")
        );
    }
    // Exchange reads: the second stage's tasks read the first's output on the executors
    // (the coordinator reads the last stage's when it did not come back with the task).
    let reads: Vec<Option<String>> = named(&spans, "exchange read").map(parent).collect();
    assert!(reads.contains(&Some("run task".to_string())), "{reads:?}");
    assert!(
        reads
            .iter()
            .all(|p| p.as_deref() == Some("run task") || p.as_deref() == Some("results"))
    );
    for run in named(&spans, "run task") {
        assert_eq!(attribute(run, "job_id").as_deref(), Some(id.as_str()));
        assert!(attribute(run, "executor").is_some_and(|e| e.starts_with("executor-")));
    }
    eprintln!(
        "{} spans: {stages} stages, {tasks} tasks, {runs} task runs",
        spans.len()
    );
}
