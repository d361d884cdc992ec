//! Where Quarry keeps data of its own (the warehouse of managed tables): a local folder
//! or an S3 prefix. An S3 location uses the standard AWS environment variables for its
//! endpoint and credentials, as the AWS tools do.

use std::path::PathBuf;

use quarry_catalog::S3Config;
use quarry_common::QuarryError;

use super::Datasets;
use super::sources::s3_store_spec;

/// The names S3 locations' object stores are keyed by (never a source's name: those
/// cannot contain a colon).
pub(crate) const WAREHOUSE: &str = "quarry:warehouse";
pub(crate) const REFLECTIONS: &str = "quarry:reflections";

#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Local(PathBuf),
    S3 { config: S3Config },
}

impl Location {
    /// `DIR` or `s3://bucket/prefix`; `env` gives the AWS variables (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, QuarryError> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.contains("://") {
                return Err(QuarryError::invalid(format!(
                    "{text}: give a local folder or an s3:// URL"
                )));
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(QuarryError::invalid(format!("{text} names no bucket")));
        }
        Ok(Location::S3 {
            config: s3_config_from_env(bucket, prefix, env),
        })
    }

    /// The folder URL of this location, its store (keyed by `key`) set up in `datasets`
    /// (and a local folder created).
    pub fn folder(&self, datasets: &Datasets, key: &str) -> Result<url::Url, QuarryError> {
        match self {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    QuarryError::invalid(format!("cannot create {}: {e}", dir.display()))
                })?;
                let dir = dir.canonicalize().map_err(|e| {
                    QuarryError::invalid(format!("cannot use {}: {e}", dir.display()))
                })?;
                url::Url::from_directory_path(&dir).map_err(|_| {
                    QuarryError::invalid(format!("{} is not an absolute path", dir.display()))
                })
            }
            Location::S3 { config } => {
                if let Some(endpoint) = &config.endpoint {
                    super::sources::refuse_metadata_endpoint(key, endpoint)?;
                }
                let spec = s3_store_spec(key, config);
                datasets.register_store(&spec)?;
                let folder = if config.prefix.is_empty() {
                    format!("{}/", spec.url)
                } else {
                    format!("{}/{}/", spec.url, config.prefix)
                };
                url::Url::parse(&folder)
                    .map_err(|e| QuarryError::invalid(format!("warehouse {folder}: {e}")))
            }
        }
    }
}

/// A bucket's settings from the standard AWS environment variables, read as the AWS tools
/// read them: the one place Quarry reads them. `env` gives a variable (None when unset or
/// empty).
pub(crate) fn s3_config_from_env(
    bucket: &str,
    prefix: &str,
    env: impl Fn(&str) -> Option<String>,
) -> S3Config {
    let env = |key: &str| env(key).filter(|v| !v.is_empty());
    let endpoint = env("AWS_ENDPOINT_URL_S3")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"));
    let allow_http = env("AWS_ALLOW_HTTP").is_some_and(|v| v == "true" || v == "1")
        || endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
    S3Config {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        region: env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string()),
        // S3-protocol servers other than AWS want path-style addresses.
        path_style: endpoint.is_some(),
        endpoint,
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
        allow_http,
        writable: true,
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(dir) => write!(f, "{}", dir.display()),
            Location::S3 { config } => write!(f, "s3://{}/{}", config.bucket, config.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_take_the_aws_environment() {
        let env = |key: &str| match key {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("key".to_string()),
            _ => None,
        };
        let Location::S3 { config } = Location::parse("s3://lake/wh/", env).expect("s3") else {
            panic!("not S3");
        };
        assert_eq!(
            (config.bucket.as_str(), config.prefix.as_str()),
            ("lake", "wh")
        );
        assert!(config.allow_http && config.path_style && config.writable);
        assert_eq!(config.access_key_id.as_deref(), Some("key"));
        assert_eq!(config.region, "us-east-1");
        assert!(Location::parse("s3:///x", |_| None).is_err());
        assert!(Location::parse("gs://b/x", |_| None).is_err());
        assert_eq!(
            Location::parse("/data/wh", |_| None).expect("local"),
            Location::Local(PathBuf::from("/data/wh"))
        );
    }
}
