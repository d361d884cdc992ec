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

/// The bucket, when the store URL's host is a per-source key rather than the bucket.
pub const S3_BUCKET: &str = "bucket";

/// A spec for an S3 bucket. With a `store_key` (a source's name) the store's URL is
/// `s3://<bucket>_<hash of the key>`, so two sources on buckets of the same name (other
/// endpoints or credentials) never share a client; `_` cannot occur in bucket names.
pub fn s3_spec(
    bucket: &str,
    store_key: Option<&str>,
    options: &[(&str, Option<&str>)],
) -> ObjectStoreSpec {
    let mut settings: Vec<Setting> = options
        .iter()
        .filter_map(|(k, v)| {
            v.map(|v| Setting {
                key: (*k).to_string(),
                value: v.to_string(),
            })
        })
        .collect();
    settings.push(Setting {
        key: S3_BUCKET.to_string(),
        value: bucket.to_string(),
    });
    settings.sort();
    let url = match store_key {
        Some(key) => format!("s3://{bucket}_{:016x}", stable_hash(key)),
        None => format!("s3://{bucket}"),
    };
    ObjectStoreSpec {
        url,
        options: settings,
    }
}

/// The option a store reference carries instead of the store's options.
pub const FINGERPRINT: &str = "fingerprint";

/// A fingerprint of a spec's options (secrets included), to tell whether a store an
/// executor holds is the one a task means, without sending the options.
pub fn fingerprint(spec: &ObjectStoreSpec) -> String {
    let text: String = spec
        .options
        .iter()
        .map(|s| format!("{}={}\u{1f}", s.key, s.value))
        .collect();
    format!("{:016x}", stable_hash(&text))
}

/// What a task carries of a store: its URL and fingerprint, no credentials.
pub fn reference(spec: &ObjectStoreSpec) -> ObjectStoreSpec {
    ObjectStoreSpec {
        url: spec.url.clone(),
        options: vec![Setting {
            key: FINGERPRINT.to_string(),
            value: fingerprint(spec),
        }],
    }
}

/// The fingerprint a reference names.
pub fn referenced_fingerprint(reference: &ObjectStoreSpec) -> Option<&str> {
    reference
        .options
        .iter()
        .find(|s| s.key == FINGERPRINT)
        .map(|s| s.value.as_str())
}

/// FNV-1a: table locations keep the key, so it must not change between builds (std's
/// hasher may); a dozen lines do not warrant a crate.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// DataFusion's file caches, as an executor needs them. A cached listing never expires,
/// so a folder that gained files would not show them: the listing cache is off. An
/// executor plans no scans, so it needs no statistics cache either. The footer cache,
/// checked against each file's size and time, stays.
pub fn cache_config() -> datafusion::execution::cache::cache_manager::CacheManagerConfig {
    datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
        .with_list_files_cache_limit(0)
        .with_file_statistics_cache_limit(0)
}

/// DataFusion's file caches, as the coordinator needs them: an executor's, and a cache of
/// each file's statistics, checked against the file's size and time like the footer
/// cache, so planning does not turn every footer into statistics again. Its entries
/// are keyed by a table reference and the path inside the store; tables name their store
/// in that reference ([`store_scope`]), so two stores with the same paths (one bucket name
/// on two S3 servers) never answer for each other.
pub fn coordinator_cache_config() -> datafusion::execution::cache::cache_manager::CacheManagerConfig
{
    cache_config().with_file_statistics_cache_limit(
        datafusion::execution::cache::cache_manager::DEFAULT_FILE_STATISTICS_MEMORY_LIMIT,
    )
}

/// What names a store in the keys of the statistics cache: its URL and, when it has a
/// spec, the fingerprint of its options (a source altered to another endpoint is another
/// store).
pub fn store_scope(store_url: &str, spec: Option<&ObjectStoreSpec>) -> String {
    match spec {
        Some(spec) => format!("{store_url}#{}", fingerprint(spec)),
        None => store_url.to_string(),
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
            let bucket = options
                .get(S3_BUCKET)
                .copied()
                .or(url.host_str())
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

    /// Is the store a reference names registered, with the same options?
    pub fn holds(&self, reference: &ObjectStoreSpec) -> bool {
        let Some(wanted) = referenced_fingerprint(reference) else {
            return false;
        };
        self.spec(&reference.url)
            .is_some_and(|spec| fingerprint(&spec) == wanted)
    }

    /// What names a store URL's store in the keys of the statistics cache
    /// ([`store_scope`] of its registered spec).
    pub fn scope(&self, url: &str) -> String {
        store_scope(url, self.spec(url).as_ref())
    }

    /// The spec registered for a store URL (`s3://bucket`), if any.
    pub fn spec(&self, url: &str) -> Option<ObjectStoreSpec> {
        let url = url.trim_end_matches('/');
        self.registered.lock().ok()?.get(url).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_store_without_its_secrets() {
        let spec = s3_spec(
            "lake",
            Some("source-a"),
            &[
                (S3_ACCESS_KEY_ID, Some("AKIA1")),
                (S3_SECRET_ACCESS_KEY, Some("s3cr3t")),
            ],
        );
        let reference = reference(&spec);
        assert_eq!(reference.url, spec.url);
        let text = format!("{reference:?}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("AKIA1"),
            "{text}"
        );
        // Other credentials, another fingerprint: an executor holding the old ones refetches.
        let rotated = s3_spec(
            "lake",
            Some("source-a"),
            &[
                (S3_ACCESS_KEY_ID, Some("AKIA1")),
                (S3_SECRET_ACCESS_KEY, Some("new")),
            ],
        );
        assert_ne!(fingerprint(&spec), fingerprint(&rotated));
        let registrar = ObjectStoreRegistrar::default();
        assert!(!registrar.holds(&reference));
    }

    #[test]
    fn cached_statistics_are_scoped_by_store_and_its_options() {
        let at =
            |endpoint: &str| s3_spec("lake", Some("source-a"), &[(S3_ENDPOINT, Some(endpoint))]);
        let (one, other) = (at("http://one:9000"), at("http://other:9000"));
        // The same source name altered to another endpoint: another scope.
        assert_ne!(
            store_scope(&one.url, Some(&one)),
            store_scope(&other.url, Some(&other))
        );
        // Another source on a bucket of the same name: another URL, so another scope.
        let elsewhere = s3_spec(
            "lake",
            Some("source-b"),
            &[(S3_ENDPOINT, Some("http://one:9000"))],
        );
        assert_ne!(
            store_scope(&one.url, Some(&one)),
            store_scope(&elsewhere.url, Some(&elsewhere))
        );
        assert_eq!(store_scope("file:///", None), "file:///");
    }
}
