//! Changes to the catalog, shared by SQL DDL and the REST catalog API. Every change is
//! checked (paths exist and stay inside their source, files parse, view SQL plans) before
//! it is written, so a failed statement leaves no half-made entry behind. Each change
//! names who asks, and is refused without the privilege it needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use quarry_catalog::{
    CatalogError, DatasetDefinition, DatasetRecord, GranteeKind, Privilege, S3Config, SchemaRecord,
    SecurableKind, SourceConfig, SourceRecord, Stored, TableDefinition, ViewDefinition,
};
use quarry_common::object_stores::{
    S3_ACCESS_KEY_ID, S3_ALLOW_HTTP, S3_ENDPOINT, S3_REGION, S3_SECRET_ACCESS_KEY, s3_spec,
};
use quarry_common::{ErrorCode, QuarryError};
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::access::{UserAccess, dataset_object};
use crate::datasets::schema_codec::encode_schema;
use crate::datasets::sources::{self, Location};
use crate::datasets::tables::{self, NewTable};
use crate::datasets::{delta, source_of};

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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

pub(crate) use crate::error::catalog_error;

/// Source settings from `WITH (...)` options.
pub fn source_config(
    kind: &str,
    options: &[(String, String)],
) -> Result<SourceConfig, QuarryError> {
    let get = |names: &[&str]| {
        options
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    let flag = |names: &[&str]| -> Result<Option<bool>, QuarryError> {
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
            )));
        }
    };
    if let Some((key, _)) = options.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(QuarryError::invalid(format!(
            "unknown option '{key}' for a {kind} source; known options: {}",
            allowed.join(", ")
        )));
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

impl Engine {
    // ---- sources ----

    /// The sources `actor` may read from (all of them for admins).
    pub(crate) fn readable_sources(
        &self,
        actor: &UserAccess,
    ) -> Result<Vec<Stored<SourceRecord>>, QuarryError> {
        let mut sources = self
            .datasets
            .catalog()
            .list_sources()
            .map_err(catalog_error)?;
        sources.retain(|s| actor.on_source(Privilege::Select, &s.record.name));
        Ok(sources)
    }

    pub(crate) async fn create_source(
        &self,
        actor: &UserAccess,
        name: &str,
        config: SourceConfig,
        mode: CreateMode,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        actor.require_admin("create or replace sources")?;
        let catalog = self.datasets.catalog();
        let existing = catalog.get_source(name).map_err(catalog_error)?;
        if let (Some(existing), CreateMode::IfNotExists) = (&existing, mode) {
            return Ok(existing.clone());
        }
        if existing.is_some() && mode == CreateMode::Create {
            return Err(catalog_error(CatalogError::AlreadyExists {
                kind: quarry_catalog::ObjectKind::Source,
                name: name.to_string(),
            }));
        }
        let config = sources::validate_source(name, &config).await?;
        if let SourceConfig::S3(s3) = &config {
            self.datasets
                .register_store(&sources::s3_store_spec(name, s3))?;
        }
        let record = SourceRecord {
            name: name.to_string(),
            config,
        };
        match existing {
            Some(current) => catalog.update_source(record, current.version),
            None => catalog.create_source(record),
        }
        .map_err(catalog_error)
    }

    pub(crate) async fn update_source(
        &self,
        actor: &UserAccess,
        name: &str,
        config: SourceConfig,
        expected_version: u64,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        actor.require_admin("change sources")?;
        let config = sources::validate_source(name, &config).await?;
        if let SourceConfig::S3(s3) = &config {
            self.datasets
                .register_store(&sources::s3_store_spec(name, s3))?;
        }
        self.datasets
            .catalog()
            .update_source(
                SourceRecord {
                    name: name.to_string(),
                    config,
                },
                expected_version,
            )
            .map_err(catalog_error)
    }

    pub(crate) fn drop_source(
        &self,
        actor: &UserAccess,
        name: &str,
        if_exists: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, QuarryError> {
        actor.require_admin("drop sources")?;
        match self
            .datasets
            .catalog()
            .delete_source(name, expected_version)
        {
            Ok(()) => {
                self.forget_grants_on(SecurableKind::Source, name)?;
                self.datasets
                    .catalog()
                    .delete_reflection_policy(quarry_catalog::PolicyOn::Source(name))
                    .map_err(catalog_error)?;
                Ok(true)
            }
            Err(CatalogError::NotFound { .. }) if if_exists => Ok(false),
            Err(e) => Err(catalog_error(e)),
        }
    }

    // ---- schemas ----

    pub(crate) fn create_schema(
        &self,
        actor: &UserAccess,
        name: &str,
        if_not_exists: bool,
    ) -> Result<bool, QuarryError> {
        actor.require_system(Privilege::CreateTable, "create schemas")?;
        match self.datasets.catalog().create_schema(SchemaRecord {
            name: name.to_string(),
        }) {
            Ok(_) => Ok(true),
            Err(CatalogError::AlreadyExists { .. }) if if_not_exists => Ok(false),
            Err(e) => Err(catalog_error(e)),
        }
    }

    pub(crate) fn drop_schema(
        &self,
        actor: &UserAccess,
        name: &str,
        if_exists: bool,
        cascade: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, QuarryError> {
        actor.require_schema(Privilege::Alter, name)?;
        let catalog = self.datasets.catalog();
        let Some(current) = catalog.get_schema(name).map_err(catalog_error)? else {
            return if if_exists {
                Ok(false)
            } else {
                Err(QuarryError::not_found(format!(
                    "schema '{name}' does not exist"
                )))
            };
        };
        // A stale version deletes nothing, not even the datasets CASCADE would.
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(catalog_error(CatalogError::Conflict {
                kind: quarry_catalog::ObjectKind::Schema,
                name: name.to_string(),
                expected,
                found: current.version,
            }));
        }
        if cascade {
            let mut folders = Vec::new();
            for dataset in catalog.list_datasets(Some(name)).map_err(catalog_error)? {
                folders.extend(super::writes::managed_folder(&dataset.record));
                catalog
                    .delete_dataset(name, &dataset.record.name, None)
                    .map_err(catalog_error)?;
                self.drop_reflections_of(name, &dataset.record.name);
                self.forget_grants_on(
                    SecurableKind::Dataset,
                    &dataset_object(name, &dataset.record.name),
                )?;
            }
            self.purge_in_background(folders);
        }
        catalog
            .delete_schema(name, expected_version)
            .map_err(catalog_error)?;
        self.forget_grants_on(SecurableKind::Schema, name)?;
        Ok(true)
    }

    // ---- datasets ----

    pub(crate) fn require_schema(&self, schema: &str) -> Result<(), QuarryError> {
        match self
            .datasets
            .catalog()
            .get_schema(schema)
            .map_err(catalog_error)?
        {
            Some(_) => Ok(()),
            None => Err(QuarryError::not_found(format!(
                "schema '{schema}' does not exist; create it with CREATE SCHEMA {schema}"
            ))),
        }
    }

    /// Grants on a dropped object go with it, so a new object of that name starts bare.
    fn forget_grants_on(&self, kind: SecurableKind, object: &str) -> Result<(), QuarryError> {
        self.datasets
            .catalog()
            .remove_grants_on(kind, object)
            .map_err(catalog_error)?;
        self.access.reload()
    }

    /// The creator of a dataset may read, change and share it.
    pub(crate) fn grant_to_creator(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
    ) -> Result<(), QuarryError> {
        if actor.admin {
            return Ok(());
        }
        self.datasets
            .catalog()
            .grant(
                GranteeKind::User,
                &actor.user,
                SecurableKind::Dataset,
                &dataset_object(schema, name),
                &Privilege::ALL,
            )
            .map_err(catalog_error)?;
        self.access.reload()
    }

    /// The existing dataset, after applying `mode`: Ok(Some) means "keep it, done".
    /// Replacing one needs ALTER on it.
    pub(crate) fn check_existing(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
        mode: CreateMode,
        replacing_view: bool,
    ) -> Result<Option<Stored<DatasetRecord>>, QuarryError> {
        let existing = self
            .datasets
            .catalog()
            .get_dataset(schema, name)
            .map_err(catalog_error)?;
        let Some(existing) = existing else {
            return Ok(None);
        };
        if mode == CreateMode::OrReplace {
            let record = &existing.record;
            actor.require_dataset(Privilege::Alter, schema, name, source_of(record))?;
        }
        match mode {
            CreateMode::IfNotExists => Ok(Some(existing)),
            CreateMode::Create => Err(QuarryError::new(
                ErrorCode::AlreadyExists,
                format!("{schema}.{name} already exists"),
            )),
            CreateMode::OrReplace => {
                let is_view = matches!(existing.record.definition, DatasetDefinition::View(_));
                if is_view != replacing_view {
                    let what = if is_view { "a view" } else { "a table" };
                    return Err(QuarryError::invalid(format!(
                        "{schema}.{name} is {what}; drop it first to replace it"
                    )));
                }
                Ok(None)
            }
        }
    }

    /// Resolve a table request to its files.
    async fn locate(&self, request: &TableRequest) -> Result<Location, QuarryError> {
        match (&request.source, &request.location) {
            (Some(source), _) => {
                let record = self
                    .datasets
                    .catalog()
                    .get_source(source)
                    .map_err(catalog_error)?
                    .ok_or_else(|| {
                        QuarryError::not_found(format!("source '{source}' does not exist"))
                    })?;
                let path = request.path.clone().unwrap_or_default();
                let cluster_files = self.datasets.cluster_files()?;
                let location = sources::resolve_in_source(
                    source,
                    &record.record.config,
                    &path,
                    cluster_files.as_ref(),
                )
                .await?;
                if let Some(spec) = &location.store {
                    self.datasets.register_store(spec)?;
                }
                Ok(location)
            }
            (None, Some(location)) => self.locate_url(location).await,
            (None, None) => Err(QuarryError::invalid(
                "a table needs a source and a path, or a location",
            )),
        }
    }

    async fn locate_url(&self, location: &str) -> Result<Location, QuarryError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            // Credentials come from an S3 source of the same bucket, else the environment.
            let spec = self
                .datasets
                .catalog()
                .list_sources()
                .map_err(catalog_error)?
                .into_iter()
                .find_map(|s| match s.record.config {
                    SourceConfig::S3(s3) if s3.bucket == bucket => {
                        Some(sources::s3_store_spec(&s.record.name, &s3))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| s3_spec_from_env(bucket));
            self.datasets.register_store(&spec)?;
            return sources::resolve_s3(bucket, key, spec).await;
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        if !std::path::Path::new(path).is_absolute() {
            return Err(QuarryError::invalid(format!(
                "location '{location}' must be an absolute path or an s3:// URL"
            )));
        }
        sources::resolve_local("(location)", std::path::Path::new("/"), path)
    }

    pub(crate) async fn create_table(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
        request: TableRequest,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        self.require_schema(schema)?;
        actor.require_schema(Privilege::CreateTable, schema)?;
        self.require_readable_files(actor, &request)?;
        if let Some(existing) = self.check_existing(actor, schema, name, mode, false)? {
            return Ok(existing);
        }
        let definition = self.table_definition(&request).await?;
        let stored = self.store_dataset(schema, name, definition, mode)?;
        self.grant_to_creator(actor, schema, name)?;
        Ok(stored)
    }

    /// A table's files must be in a source the user may read; raw locations (paths and
    /// URLs outside every source) are for admins only.
    fn require_readable_files(
        &self,
        actor: &UserAccess,
        request: &TableRequest,
    ) -> Result<(), QuarryError> {
        match &request.source {
            Some(source) => actor.require_source(Privilege::Select, source),
            None => {
                actor.require_admin("read a raw LOCATION; create the table FROM a source instead")
            }
        }
    }

    /// Write a checked definition: created, or replacing the old one for OR REPLACE.
    pub(crate) fn store_dataset(
        &self,
        schema: &str,
        name: &str,
        definition: DatasetDefinition,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let record = DatasetRecord {
            schema: schema.to_string(),
            name: name.to_string(),
            definition,
        };
        let catalog = self.datasets.catalog();
        match mode {
            CreateMode::OrReplace => catalog.create_or_replace_dataset(record),
            _ => catalog.create_dataset(record),
        }
        .map_err(catalog_error)
    }

    /// Check a table request against its files and produce the definition to store.
    async fn table_definition(
        &self,
        request: &TableRequest,
    ) -> Result<DatasetDefinition, QuarryError> {
        let location = self.locate(request).await?;
        if request
            .format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case(delta::DELTA_FORMAT))
        {
            // A Delta table someone else writes: read at its latest version each query.
            let folder = delta::folder_url(&location.url)?;
            let (schema, partition_columns) =
                delta::existing_table(self.datasets.runtime(), &folder).await?;
            return Ok(DatasetDefinition::Table(TableDefinition {
                source: request.source.clone(),
                path: request.path.clone(),
                location: folder.to_string(),
                format: delta::DELTA_FORMAT.to_string(),
                options: BTreeMap::new(),
                file_extension: ".parquet".to_string(),
                partition_columns,
                arrow_schema: encode_schema(&schema)?,
            }));
        }
        let format = match &request.format {
            Some(f) => tables::normalize_format(f)?,
            None => location
                .sample_file
                .as_deref()
                .and_then(tables::format_of)
                .ok_or_else(|| {
                    QuarryError::invalid(format!(
                        "cannot tell the format of {}: add FORMAT parquet, csv or json",
                        location.url
                    ))
                })?,
        };
        let state = self.datasets.planning_state(None);
        let (definition, _) = tables::infer_table(
            &state,
            NewTable {
                source: request.source.clone(),
                path: request.path.clone(),
                url: location.url.clone(),
                sample_file: location.sample_file.clone(),
                format,
                options: format_options(format, &request.options),
                partition_columns: request.partition_columns.clone(),
                columns: request.columns.clone(),
            },
        )
        .await
        .map_err(|e| e.context(format!("cannot read {}", location.url)))?;
        Ok(DatasetDefinition::Table(definition))
    }

    pub(crate) async fn create_view(
        &self,
        actor: &Arc<UserAccess>,
        schema: &str,
        name: &str,
        sql: &str,
        default_schema: &str,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        self.require_schema(schema)?;
        actor.require_schema(Privilege::CreateTable, schema)?;
        if let Some(existing) = self.check_existing(actor, schema, name, mode, true)? {
            return Ok(existing);
        }
        let definition = self.view_definition(actor, sql, default_schema).await?;
        let stored = self.store_dataset(schema, name, definition, mode)?;
        self.grant_to_creator(actor, schema, name)?;
        Ok(stored)
    }

    /// Check a view's query, planned as its creator: a view can only expose what its
    /// creator may read.
    async fn view_definition(
        &self,
        actor: &Arc<UserAccess>,
        sql: &str,
        default_schema: &str,
    ) -> Result<DatasetDefinition, QuarryError> {
        let mut config = self.datasets.base_config().clone();
        config.options_mut().catalog.default_schema = default_schema.to_string();
        let state = self.datasets.session_state(config, Some(Arc::clone(actor)));
        let plan = crate::datasets::as_view_definition(crate::sql::guard::plan_query_text(
            &state,
            sql,
            self.request_limits(),
        ))
        .await?;
        if matches!(
            plan,
            datafusion::logical_expr::LogicalPlan::Ddl(_)
                | datafusion::logical_expr::LogicalPlan::Dml(_)
                | datafusion::logical_expr::LogicalPlan::Statement(_)
        ) {
            return Err(QuarryError::invalid("a view must be defined by a query"));
        }
        Ok(DatasetDefinition::View(ViewDefinition {
            sql: sql.to_string(),
            default_schema: Some(default_schema.to_string()),
        }))
    }

    /// Replace a dataset's definition, refusing if someone else changed it since
    /// `expected_version`.
    pub(crate) async fn update_dataset(
        &self,
        actor: &Arc<UserAccess>,
        schema: &str,
        name: &str,
        definition: DatasetUpdate,
        expected_version: u64,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let current = self
            .datasets
            .catalog()
            .get_dataset(schema, name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{name} does not exist")))?;
        actor.require_dataset(Privilege::Alter, schema, name, source_of(&current.record))?;
        let definition = match definition {
            DatasetUpdate::Table(request) => {
                self.require_readable_files(actor, &request)?;
                self.table_definition(&request).await?
            }
            DatasetUpdate::View { sql } => {
                let default_schema = match self
                    .datasets
                    .catalog()
                    .get_dataset(schema, name)
                    .map_err(catalog_error)?
                    .map(|d| d.record.definition)
                {
                    Some(DatasetDefinition::View(v)) => {
                        v.default_schema.unwrap_or_else(|| schema.to_string())
                    }
                    _ => schema.to_string(),
                };
                self.view_definition(actor, &sql, &default_schema).await?
            }
        };
        self.datasets
            .catalog()
            .update_dataset(
                DatasetRecord {
                    schema: schema.to_string(),
                    name: name.to_string(),
                    definition,
                },
                expected_version,
            )
            .map_err(catalog_error)
    }

    /// Drop a dataset; `kind` ("table" or "view") must match when given.
    pub(crate) fn drop_dataset(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
        kind: Option<&str>,
        if_exists: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, QuarryError> {
        let catalog = self.datasets.catalog();
        let Some(existing) = catalog.get_dataset(schema, name).map_err(catalog_error)? else {
            return if if_exists {
                Ok(false)
            } else {
                Err(QuarryError::not_found(format!(
                    "{schema}.{name} does not exist"
                )))
            };
        };
        let actual = match existing.record.definition {
            DatasetDefinition::Table(_) => "table",
            DatasetDefinition::View(_) => "view",
        };
        actor.require_dataset(Privilege::Alter, schema, name, source_of(&existing.record))?;
        if let Some(kind) = kind
            && kind != actual
        {
            return Err(QuarryError::invalid(format!(
                "{schema}.{name} is a {actual}; use DROP {}",
                actual.to_ascii_uppercase()
            )));
        }
        catalog
            .delete_dataset(schema, name, expected_version)
            .map_err(catalog_error)?;
        self.drop_reflections_of(schema, name);
        self.forget_grants_on(SecurableKind::Dataset, &dataset_object(schema, name))?;
        Ok(true)
    }
}

/// A new definition for an existing dataset.
#[derive(Debug, Clone)]
pub enum DatasetUpdate {
    Table(TableRequest),
    View { sql: String },
}

/// An S3 spec for a bucket no source describes: credentials and endpoint from the
/// usual AWS environment variables, anonymous when there are none.
fn s3_spec_from_env(bucket: &str) -> quarry_common::protocol::ObjectStoreSpec {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT"));
    let allow_http = env("AWS_ALLOW_HTTP").or_else(|| {
        endpoint
            .as_deref()
            .filter(|e| e.starts_with("http://"))
            .map(|_| "true".to_string())
    });
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let key = env("AWS_ACCESS_KEY_ID");
    let secret = env("AWS_SECRET_ACCESS_KEY");
    let path_style = endpoint.as_ref().map(|_| "true".to_string());
    s3_spec(
        bucket,
        None,
        &[
            (S3_REGION, region.as_deref()),
            (S3_ENDPOINT, endpoint.as_deref()),
            (S3_ACCESS_KEY_ID, key.as_deref()),
            (S3_SECRET_ACCESS_KEY, secret.as_deref()),
            (
                quarry_common::object_stores::S3_PATH_STYLE,
                path_style.as_deref(),
            ),
            (S3_ALLOW_HTTP, allow_http.as_deref()),
        ],
    )
}
