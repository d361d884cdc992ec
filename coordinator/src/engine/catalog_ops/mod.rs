//! Catalog operations, a service of their own: sources, schemas, tables and views, and
//! users, roles, grants and tokens (`security.rs`), shared by SQL statements and the REST
//! catalog API. [`CatalogOps`] owns the catalog, access control and logins, and what goes
//! with a dropped object (its grants, reflections and files, `drops.rs`); it plans no
//! query and runs no job — a view's SQL is only planned to check it.
//!
//! Every change is checked (paths exist and stay inside their source, files parse, view
//! SQL plans) before it is written, so a failed statement leaves no half-made entry
//! behind. Each change names who asks, and is refused without the privilege it needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use quarry_catalog::{S3Config, SourceConfig};
use quarry_common::QuarryError;
use serde::{Deserialize, Serialize};

use crate::access::AccessControl;
use crate::access::auth::Auth;
use crate::datasets::Datasets;
use crate::error::CoordinatorError;
use crate::tasks::Tasks;

mod backup;
mod datasets;
mod drops;
mod managed_tables;
mod reflection_policy;
mod reflections;
mod schemas;
mod security;
mod sources;

/// The catalog operations; see the module doc. Cloning one is cheap (shared handles), so a
/// durable write can take one onto a blocking thread.
#[derive(Clone)]
pub(crate) struct CatalogOps {
    datasets: Arc<Datasets>,
    access: Arc<AccessControl>,
    auth: Arc<Auth>,
    /// Where removing a dropped table's files runs.
    tasks: Tasks,
    /// What one request may ask, for planning a view's SQL.
    request_limits: crate::limits::Limits,
}

impl CatalogOps {
    pub(crate) fn new(
        datasets: Arc<Datasets>,
        auth: Arc<Auth>,
        tasks: Tasks,
        request_limits: crate::limits::Limits,
    ) -> Self {
        CatalogOps {
            datasets,
            access: Arc::clone(auth.control()),
            auth,
            tasks,
            request_limits,
        }
    }

    /// Run the durable writes of an operation that awaited I/O (a source's bucket, a
    /// table's files, a view's plan): the catalog flushes each write to disk before it
    /// returns, which must not stall the runtime that serves clients.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&CatalogOps) -> Result<T, CoordinatorError> + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let ops = self.clone();
        tokio::task::spawn_blocking(move || write(&ops))
            .await
            .map_err(|e| CoordinatorError::crashed("a catalog write", e))?
    }
}

/// What to do when the object already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Create,
    IfNotExists,
    OrReplace,
}

impl CreateMode {
    pub fn from_flags(if_not_exists: bool, or_replace: bool) -> Self {
        match (if_not_exists, or_replace) {
            (_, true) => CreateMode::OrReplace,
            (true, false) => CreateMode::IfNotExists,
            (false, false) => CreateMode::Create,
        }
    }
}

/// Where a table's files are and how to read them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TableRequest {
    /// A source name, with `path` inside it...
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// ...or a location: an absolute local path or an `s3://` URL.
    #[serde(default)]
    pub location: Option<String>,
    /// `parquet`, `csv` or `json`; guessed from file names when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// Format options: `header`, `delimiter`, ... or DataFusion's `format.*` keys.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(skip)]
    pub columns: Option<SchemaRef>,
    #[serde(skip)]
    pub partition_columns: Option<Vec<(String, DataType)>>,
}

/// Source settings from `WITH (...)` options.
pub(crate) fn source_config(
    kind: &str,
    options: &[(String, String)],
) -> Result<SourceConfig, CoordinatorError> {
    let get = |names: &[&str]| {
        options
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    let flag = |names: &[&str]| -> Result<Option<bool>, CoordinatorError> {
        get(names)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                other => Err(QuarryError::invalid(format!(
                    "option {} must be true or false, not '{other}'",
                    names[0]
                ))),
            })
            .transpose()
            .map_err(CoordinatorError::from)
    };
    let allowed: &[&str] = match kind {
        "local" => &["root", "path", "writable"],
        "cluster" => &[],
        "s3" => &[
            "bucket",
            "prefix",
            "region",
            "endpoint",
            "access_key_id",
            "access_key",
            "secret_access_key",
            "secret_key",
            "path_style",
            "allow_http",
            "writable",
        ],
        other => {
            return Err(QuarryError::invalid(format!(
                "unknown source type '{other}': use local, s3 or cluster"
            ))
            .into());
        }
    };
    if let Some((key, _)) = options.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(QuarryError::invalid(format!(
            "unknown option '{key}' for a {kind} source; known options: {}",
            allowed.join(", ")
        ))
        .into());
    }
    match kind {
        "cluster" => Ok(SourceConfig::Cluster {}),
        "local" => {
            let root = get(&["root", "path"]).ok_or_else(|| {
                QuarryError::invalid("a local source needs WITH (root = '/path')")
            })?;
            Ok(SourceConfig::Local {
                root,
                writable: flag(&["writable"])?.unwrap_or(false),
            })
        }
        _ => {
            let bucket = get(&["bucket"])
                .ok_or_else(|| QuarryError::invalid("an s3 source needs WITH (bucket = 'name')"))?;
            let endpoint = get(&["endpoint"]);
            let allow_http = flag(&["allow_http"])?.unwrap_or_else(|| {
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
            });
            Ok(SourceConfig::S3(S3Config {
                bucket,
                prefix: get(&["prefix"]).unwrap_or_default(),
                region: get(&["region"]).unwrap_or_else(|| "us-east-1".to_string()),
                endpoint,
                access_key_id: get(&["access_key_id", "access_key"]),
                secret_access_key: get(&["secret_access_key", "secret_key"]),
                path_style: flag(&["path_style"])?.unwrap_or(false),
                allow_http,
                writable: flag(&["writable"])?.unwrap_or(false),
            }))
        }
    }
}

/// User-friendly format options (`header`, `delimiter`) as DataFusion's keys.
fn format_options(format: &str, options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if format == "csv" {
        out.insert("format.has_header".to_string(), "true".to_string());
    }
    for (key, value) in options {
        let key = key.to_ascii_lowercase();
        let key = match key.as_str() {
            "header" | "has_header" => "format.has_header".to_string(),
            k if k.starts_with("format.") => k.to_string(),
            k => format!("format.{k}"),
        };
        out.insert(key, value.clone());
    }
    out
}

/// A new definition for an existing dataset.
#[derive(Debug, Clone)]
pub enum DatasetUpdate {
    Table(TableRequest),
    View { sql: String },
}
