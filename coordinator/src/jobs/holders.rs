//! Who holds on to a job: clients reading its results (cancelled when they stop
//! early), frontends answering from it (its results are kept) and callers waiting for
//! its planning (cancelled when they go away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures::Stream;

use super::Job;

/// One client reading a job's results.
pub(super) struct Reader {
    pub(super) job: Arc<Job>,
    pub(super) finished: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.job.readers.fetch_sub(1, Ordering::Relaxed);
        if !self.finished && self.job.cancel("the client stopped reading the results") {
            tracing::info!(job = %self.job.id, "cancelled: its client stopped reading");
        }
    }
}

/// Cancels a job if dropped before [`CancelOnDrop::disarm`]: whoever was waiting for it
/// went away.
#[derive(Debug)]
pub(crate) struct CancelOnDrop {
    job: Option<Arc<Job>>,
    reason: &'static str,
}

impl CancelOnDrop {
    pub(crate) fn new(job: &Arc<Job>, reason: &'static str) -> Self {
        CancelOnDrop {
            job: Some(Arc::clone(job)),
            reason,
        }
    }

    /// The wait ended: nothing to cancel.
    pub(crate) fn disarm(mut self) {
        self.job = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job) = self.job.take()
            && job.cancel(self.reason)
        {
            tracing::info!(job = %job.id, reason = self.reason, "cancelled");
        }
    }
}

/// A frontend's hold on a job: its results are kept while the hold lives (see
/// [`Job::hold`]).
#[derive(Debug)]
pub struct Hold(pub(super) Arc<Job>);

impl Hold {
    pub fn job(&self) -> &Arc<Job> {
        &self.0
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.holds.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Results on their way to a client; see [`Job::watched`].
pub struct WatchedResults<S> {
    pub(super) inner: S,
    pub(super) reader: Option<Reader>,
}

impl<S, T, E> Stream for WatchedResults<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled
            && let Some(reader) = self.reader.as_mut()
        {
            // The end, or an error that ends the job anyway.
            reader.finished = true;
        }
        polled
    }
}
