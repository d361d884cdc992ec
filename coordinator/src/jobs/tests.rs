//! How long the job table keeps results: newer jobs, clients told to come for them, and
//! the bound on those.

use super::*;

fn finished(jobs: &Jobs) -> Arc<Job> {
    let job = jobs.create("SELECT 1", "alice", "test");
    job.complete();
    job
}

#[tokio::test]
async fn a_ticketed_job_outlives_many_newer_jobs_until_read_or_overdue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(&dir.path().join("catalog")).expect("catalog");
    let jobs = Jobs::new(catalog, dir.path().join("results")).expect("jobs");
    let plain = finished(&jobs);
    let ticketed = jobs.create("VACUUM t", "alice", "test");
    ticketed.expect_reader(Duration::from_secs(60));
    ticketed.complete();
    let overdue = jobs.create("OPTIMIZE TABLE t", "alice", "test");
    overdue.expect_reader(Duration::ZERO);
    overdue.complete();
    // An asynchronous REST submission is kept the same way, and is never cancelled
    // for want of a reader.
    let submitted = jobs.create("SELECT 2", "alice", "test");
    submitted.keep_for_reader(Duration::from_secs(60));
    assert!(!submitted.abandoned());
    submitted.complete();
    for _ in 0..LIVE_JOBS + 10 {
        finished(&jobs);
    }
    assert!(jobs.live(&plain.id).is_none(), "an unticketed job goes");
    assert!(
        jobs.live(&overdue.id).is_none(),
        "a ticket past its time goes"
    );
    assert!(
        jobs.live(&ticketed.id).is_some(),
        "its client may still come"
    );
    assert!(
        jobs.live(&submitted.id).is_some(),
        "its client may still come"
    );
    // Once its client has read it, it goes like any other.
    drop(ticketed.watched(futures::stream::empty::<()>()));
    drop(submitted.results(0, None));
    for _ in 0..LIVE_JOBS + 10 {
        finished(&jobs);
    }
    assert!(jobs.live(&ticketed.id).is_none());
    assert!(jobs.live(&submitted.id).is_none());
}

#[tokio::test]
async fn unread_results_are_kept_only_up_to_a_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(&dir.path().join("catalog")).expect("catalog");
    let jobs = Jobs::new(catalog, dir.path().join("results")).expect("jobs");
    let unread = || {
        let job = jobs.create("INSERT INTO t VALUES (1)", "alice", "test");
        job.keep_for_reader(Duration::from_secs(60));
        job.complete();
        job
    };
    let first = unread();
    for _ in 0..LIVE_JOBS + UNREAD_KEPT - 1 {
        unread();
    }
    assert!(jobs.live(&first.id).is_some(), "within the bound");
    unread();
    assert!(jobs.live(&first.id).is_none(), "past the bound");
    assert!(jobs.live_jobs().len() <= LIVE_JOBS + UNREAD_KEPT);
}
