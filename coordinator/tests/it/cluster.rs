//! Executors joining and leaving, and queries spread over them.

use std::time::Duration;

use crate::harness::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_register_and_leave() {
    let mut cluster = TestCluster::start(2).await;
    let membership = std::sync::Arc::clone(&cluster.cluster.coordinator.cluster);
    assert_eq!(membership.active().len(), 2);
    assert_eq!(membership.total_slots(), 2);
    cluster
        .cluster
        .add_executor(3, None)
        .await
        .expect("third executor");
    assert!(
        membership
            .wait_for_executors(3, Duration::from_secs(10))
            .await
    );
    assert_eq!(cluster.cluster.coordinator.cluster.total_slots(), 5);
    // A graceful stop deregisters at once.
    let leaving = cluster.cluster.executors.remove(0);
    leaving.shutdown().await.expect("shutdown");
    let active: Vec<String> = cluster
        .cluster
        .coordinator
        .cluster
        .active()
        .into_iter()
        .map(|e| e.executor_id)
        .collect();
    assert_eq!(
        active,
        vec!["executor-2".to_string(), "executor-3".to_string()]
    );
    // A silent one is declared lost after missed heartbeats.
    let silent = cluster.cluster.executors.remove(0);
    silent.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.cluster.coordinator.cluster.active().len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "a silent executor stayed active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.cluster.shutdown().await;
}
