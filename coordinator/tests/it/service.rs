//! The seam every frontend holds (`dyn QueryService`): what a job handle promises.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use quarry_coordinator::service::{Credentials, Frontend, JobState, QueryService, SessionHandle};

use crate::harness::TestCluster;

/// A cluster, the engine as the service frontends hold, and a one-off anonymous session.
async fn anonymous_session() -> (TestCluster, Arc<dyn QueryService>, SessionHandle) {
    let cluster = TestCluster::start(1).await;
    let service = cluster.cluster.coordinator.service();
    let principal = service
        .authenticate(Credentials::None)
        .await
        .expect("anonymous");
    let session = service.session(&principal, false, Frontend::InProcess);
    (cluster, service, session)
}

/// Only the newest 200 finished jobs keep their results, but results a client is still
/// being sent are kept however many jobs come after: a REST body is read after its handler
/// has returned and dropped the job's handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_being_read_outlive_newer_jobs() {
    let (cluster, service, session) = anonymous_session().await;
    let job = service
        .submit(
            &session,
            "SELECT * FROM (VALUES (1), (2), (3)) AS t(n)",
            None,
        )
        .await
        .expect("submitted");
    job.finished().await.expect("completed");
    let rows = job.results(0, None);
    drop(job);
    for i in 0..210 {
        let newer = service
            .submit(&session, &format!("SELECT {i}"), None)
            .await
            .expect("submitted");
        newer.finished().await.expect("completed");
    }
    let batches: Vec<RecordBatch> = rows.try_collect().await.expect("the results are kept");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    cluster.cluster.shutdown().await;
}

/// A client that goes away while its statement is still being planned leaves no job
/// PLANNING for ever: the job is cancelled with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_during_planning_cancels_the_job() {
    let (cluster, service, session) = anonymous_session().await;
    // Thousands of output columns: planning takes far longer than the client waits.
    let columns: Vec<String> = (0..20_000).map(|i| format!("{i} AS c{i}")).collect();
    let wide = format!("SELECT {}", columns.join(", "));
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        service.submit(&session, &wide, None),
    )
    .await;
    assert!(gave_up.is_err(), "planning ended within 20 ms");
    let jobs = service.list_jobs(&session, None, 10).expect("jobs listed");
    let job = jobs
        .iter()
        .find(|j| j.sql.starts_with("SELECT 0 AS c0"))
        .expect("the job is recorded");
    assert_eq!(job.state, "CANCELED", "job {}", job.id);
    let planning = service
        .list_jobs(&session, Some(JobState::Planning), 10)
        .expect("jobs listed");
    let ids: Vec<&str> = planning.iter().map(|j| j.id.as_str()).collect();
    assert!(ids.is_empty(), "still planning: {ids:?}");
    cluster.cluster.shutdown().await;
}
