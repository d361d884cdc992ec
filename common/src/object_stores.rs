//! Building object store clients from their specs, the same way on every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::error::QuarryError;
use crate::protocol::{ObjectStoreSpec, Setting};

/// Option names of an S3 spec.
pub const S3_REGION: &str = "region";
pub const S3_ENDPOINT: &str = "endpoint";
pub const S3_ACCESS_KEY_ID: &str = "access_key_id";
pub const S3_SECRET_ACCESS_KEY: &str = "secret_access_key";
pub const S3_PATH_STYLE: &str = "path_style";
pub const S3_ALLOW_HTTP: &str = "allow_http";

/// A spec for an S3 bucket.
pub fn s3_spec(bucket: &str, options: &[(&str, Option<&str>)]) -> ObjectStoreSpec {
    let mut settings: Vec<Setting> = options
        .iter()
        .filter_map(|(k, v)| {
            v.map(|v| Setting {
                key: (*k).to_string(),
                value: v.to_string(),
            })
        })
        .collect();
    settings.sort();
    ObjectStoreSpec {
        url: format!("s3://{bucket}"),
        options: settings,
    }
}

/// Build the client a spec describes.
pub fn build_object_store(spec: &ObjectStoreSpec) -> Result<Arc<dyn ObjectStore>, QuarryError> {
    let url = Url::parse(&spec.url)
        .map_err(|e| QuarryError::invalid(format!("bad object store URL {}: {e}", spec.url)))?;
    let options: HashMap<&str, &str> = spec
        .options
        .iter()
        .map(|s| (s.key.as_str(), s.value.as_str()))
        .collect();
    match url.scheme() {
        "s3" => {
            let bucket = url
                .host_str()
                .ok_or_else(|| QuarryError::invalid(format!("no bucket in {}", spec.url)))?;
            // Fail fast on a wrong endpoint or credentials instead of retrying for minutes.
            let retry = RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            };
            let client = ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60));
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(options.get(S3_REGION).copied().unwrap_or("us-east-1"))
                .with_retry(retry)
                .with_client_options(client)
                .with_virtual_hosted_style_request(!flag(&options, S3_PATH_STYLE))
                .with_allow_http(flag(&options, S3_ALLOW_HTTP));
            if let Some(endpoint) = options.get(S3_ENDPOINT) {
                builder = builder.with_endpoint(*endpoint);
            }
            match (
                options.get(S3_ACCESS_KEY_ID),
                options.get(S3_SECRET_ACCESS_KEY),
            ) {
                (Some(key), Some(secret)) => {
                    builder = builder
                        .with_access_key_id(*key)
                        .with_secret_access_key(*secret);
                }
                // Without credentials, read anonymously rather than asking cloud
                // metadata services for some.
                _ => builder = builder.with_skip_signature(true),
            }
            let store = builder.build().map_err(|e| {
                QuarryError::invalid(format!("cannot configure S3 bucket {bucket}: {e}"))
            })?;
            Ok(Arc::new(store))
        }
        other => Err(QuarryError::invalid(format!(
            "unsupported object store scheme '{other}' in {}",
            spec.url
        ))),
    }
}

fn flag(options: &HashMap<&str, &str>, key: &str) -> bool {
    options
        .get(key)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
        .unwrap_or(false)
}

/// Registers specs into a runtime, once per distinct spec.
#[derive(Debug, Default)]
pub struct ObjectStoreRegistrar {
    registered: Mutex<HashMap<String, ObjectStoreSpec>>,
}

impl ObjectStoreRegistrar {
    pub fn register(
        &self,
        runtime: &RuntimeEnv,
        spec: &ObjectStoreSpec,
    ) -> Result<(), QuarryError> {
        let mut registered = self
            .registered
            .lock()
            .map_err(|_| QuarryError::internal("object store registry lock poisoned"))?;
        if registered.get(&spec.url) == Some(spec) {
            return Ok(());
        }
        let store = build_object_store(spec)?;
        let url = Url::parse(&spec.url)
            .map_err(|e| QuarryError::invalid(format!("bad object store URL {}: {e}", spec.url)))?;
        runtime.register_object_store(&url, store);
        registered.insert(spec.url.clone(), spec.clone());
        Ok(())
    }

    /// The spec registered for a store URL (`s3://bucket`), if any.
    pub fn spec(&self, url: &str) -> Option<ObjectStoreSpec> {
        let url = url.trim_end_matches('/');
        self.registered.lock().ok()?.get(url).cloned()
    }
}
