//! Where a process's logs and traces go: logs to stderr (filtered by `--log`), and with
//! `--otlp-endpoint` spans of every query (the job, planning, each stage and task, the
//! executors' runs of them, exchange reads, commits, the results read) over OTLP/gRPC;
//! none at all without it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use quarry_common::QuarryError;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::prelude::*;

/// The trace pipeline, flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Send what is still buffered, then stop. Call it outside the runtime's workers but
    /// while the runtime still runs: the export happens there.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: traces not all sent at exit: {e}");
        }
    }
}

/// Runs the OTLP exporter's calls on the process's runtime: the SDK's batch processor
/// exports from a thread of its own, where tonic would find no reactor.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        // Not background work: the batch processor waits for this export (which has its
        // own timeout) before it sends the next.
        #[allow(clippy::disallowed_methods)]
        let sent = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            sent.await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Install the logging (and, with `otlp_endpoint`, tracing) subscriber; call from inside
/// the runtime.
pub fn init(
    filter: Option<&str>,
    default: &str,
    otlp_endpoint: Option<&str>,
    service: &'static str,
) -> Result<Telemetry, QuarryError> {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    // The Delta log library reports every snapshot it builds at INFO: not news to an
    // operator. An explicit directive in the filter still wins.
    let filter = format!("buoyant_kernel=warn,deltalake_core=warn,{filter}");
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::new(filter));
    let provider = otlp_endpoint
        .map(|endpoint| provider(endpoint, service))
        .transpose()?;
    // Spans are Quarry's own, whatever the log filter says.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("quarry"))
            .with_filter(
                Targets::new()
                    .with_target("quarry_coordinator", tracing::Level::INFO)
                    .with_target("quarry_common", tracing::Level::INFO)
                    .with_target("quarry_executor", tracing::Level::INFO),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str, service: &'static str) -> Result<SdkTracerProvider, QuarryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| QuarryError::invalid(format!("--otlp-endpoint {endpoint}: {e}")))?;
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        runtime: tokio::runtime::Handle::current(),
    };
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_batch_exporter(exporter)
        .build())
}
