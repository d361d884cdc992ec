//! The runtime query work runs on.

use tracing::Instrument;

/// Threads a runtime may start for blocking work (local file reads of scans, spool and
/// catalog I/O). Tokio's default, 512, let a busy coordinator keep ~80 such threads per
/// runtime for as long as load lasted; past this bound blocking work waits its turn,
/// which none of it minds (no blocking job waits for another).
pub const MAX_BLOCKING_THREADS: usize = 32;

/// A tokio runtime for query work, apart from the one answering RPCs: DataFusion
/// operators can compute for a long time without yielding, and must not starve the
/// heartbeats, exchange reads and client calls of the process. Executors run tasks on
/// one; the coordinator runs root stages and local statements on one.
#[derive(Debug)]
pub struct CpuRuntime(Option<tokio::runtime::Runtime>);

impl CpuRuntime {
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        crate::stack::configure();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name(name)
            .thread_stack_size(crate::stack::THREAD_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(CpuRuntime(Some(runtime)))
    }

    /// Run `future` there, inside the caller's span; dropping the returned future aborts
    /// it.
    pub async fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let Some(runtime) = &self.0 else {
            return Err("shutting down".to_string());
        };
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut handle = AbortOnDrop(runtime.spawn(future.in_current_span()));
        (&mut handle.0).await.map_err(|e| {
            if e.is_panic() {
                crate::panics::panic_message(e.into_panic().as_ref())
            } else {
                "the task was cancelled".to_string()
            }
        })
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's thread would panic.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
