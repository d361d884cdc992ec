//! Tables and views: where a table's files are and what they hold, a view's checked
//! definition, storing them with their creator's grants, changing and dropping them.

use std::collections::BTreeMap;
use std::sync::Arc;

use quarry_catalog::{
    DatasetDefinition, DatasetRecord, GranteeKind, Privilege, SecurableKind, SourceConfig, Stored,
    TableDefinition, ViewDefinition,
};
use quarry_common::{ErrorCode, QuarryError};

use crate::access::source_of;
use crate::access::{UserAccess, dataset_object};
use crate::datasets::delta;
use crate::datasets::schema_codec::encode_schema;
use crate::datasets::sources::{self, Location};
use crate::datasets::tables::{self, NewTable};
use crate::error::CoordinatorError;

use super::*;
use crate::datasets::location::s3_config_from_env;

impl CatalogOps {
    pub(crate) fn require_schema(&self, schema: &str) -> Result<(), CoordinatorError> {
        match self.datasets.catalog().get_schema(schema)? {
            Some(_) => Ok(()),
            None => Err(QuarryError::not_found(format!(
                "schema '{schema}' does not exist; create it with CREATE SCHEMA {schema}"
            ))
            .into()),
        }
    }

    /// The creator of a dataset may read, change and share it.
    pub(crate) fn grant_to_creator(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
    ) -> Result<(), CoordinatorError> {
        if actor.admin {
            return Ok(());
        }
        self.datasets.catalog().grant(
            GranteeKind::User,
            &actor.user,
            SecurableKind::Dataset,
            &dataset_object(schema, name),
            &Privilege::ALL,
        )?;
        self.access.reload().map_err(CoordinatorError::from)
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
    ) -> Result<Option<Stored<DatasetRecord>>, CoordinatorError> {
        let existing = self.datasets.catalog().get_dataset(schema, name)?;
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
            )
            .into()),
            CreateMode::OrReplace => {
                let is_view = matches!(existing.record.definition, DatasetDefinition::View(_));
                if is_view != replacing_view {
                    let what = if is_view { "a view" } else { "a table" };
                    return Err(QuarryError::invalid(format!(
                        "{schema}.{name} is {what}; drop it first to replace it"
                    ))
                    .into());
                }
                Ok(None)
            }
        }
    }

    /// Resolve a table request to its files.
    async fn locate(&self, request: &TableRequest) -> Result<Location, CoordinatorError> {
        match (&request.source, &request.location) {
            (Some(source), _) => {
                let record = self.datasets.catalog().get_source(source)?.ok_or_else(|| {
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
            (None, None) => {
                Err(QuarryError::invalid("a table needs a source and a path, or a location").into())
            }
        }
    }

    async fn locate_url(&self, location: &str) -> Result<Location, CoordinatorError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            // Credentials come from an S3 source of the same bucket, else the environment.
            let spec = self
                .datasets
                .catalog()
                .list_sources()?
                .into_iter()
                .find_map(|s| match s.record.config {
                    SourceConfig::S3(s3) if s3.bucket == bucket => {
                        Some(sources::s3_store_spec(&s.record.name, &s3))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| {
                    // A bucket no source describes: the AWS environment's settings,
                    // anonymous without credentials.
                    let config = s3_config_from_env(bucket, "", |key| std::env::var(key).ok());
                    sources::s3_spec_keyed(None, &config)
                });
            self.datasets.register_store(&spec)?;
            return sources::resolve_s3(bucket, key, spec)
                .await
                .map_err(CoordinatorError::from);
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        if !std::path::Path::new(path).is_absolute() {
            return Err(QuarryError::invalid(format!(
                "location '{location}' must be an absolute path or an s3:// URL"
            ))
            .into());
        }
        sources::resolve_local("(location)", std::path::Path::new("/"), path)
            .map_err(CoordinatorError::from)
    }

    pub(crate) async fn create_table(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
        request: TableRequest,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, CoordinatorError> {
        self.require_schema(schema)?;
        actor.require_schema(Privilege::CreateTable, schema)?;
        self.require_readable_files(actor, &request)?;
        if let Some(existing) = self.check_existing(actor, schema, name, mode, false)? {
            return Ok(existing);
        }
        let definition = self.table_definition(&request).await?;
        self.store_for_creator(actor, schema, name, definition, mode)
            .await
    }

    /// Store a checked definition and grant its creator what they need, off the runtime.
    async fn store_for_creator(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
        definition: DatasetDefinition,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, CoordinatorError> {
        let (actor, schema, name) = (actor.clone(), schema.to_string(), name.to_string());
        self.write(move |ops| {
            let stored = ops.store_dataset(&schema, &name, definition, mode)?;
            ops.grant_to_creator(&actor, &schema, &name)?;
            Ok(stored)
        })
        .await
    }

    /// A table's files must be in a source the user may read; raw locations (paths and
    /// URLs outside every source) are for admins only.
    fn require_readable_files(
        &self,
        actor: &UserAccess,
        request: &TableRequest,
    ) -> Result<(), CoordinatorError> {
        match &request.source {
            Some(source) => actor
                .require_source(Privilege::Select, source)
                .map_err(CoordinatorError::from),
            None => actor
                .require_admin("read a raw LOCATION; create the table FROM a source instead")
                .map_err(CoordinatorError::from),
        }
    }

    /// Write a checked definition: created, or replacing the old one for OR REPLACE.
    pub(crate) fn store_dataset(
        &self,
        schema: &str,
        name: &str,
        definition: DatasetDefinition,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, CoordinatorError> {
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
        .map_err(CoordinatorError::from)
    }

    /// Check a table request against its files and produce the definition to store.
    async fn table_definition(
        &self,
        request: &TableRequest,
    ) -> Result<DatasetDefinition, CoordinatorError> {
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
    ) -> Result<Stored<DatasetRecord>, CoordinatorError> {
        self.require_schema(schema)?;
        actor.require_schema(Privilege::CreateTable, schema)?;
        if let Some(existing) = self.check_existing(actor, schema, name, mode, true)? {
            return Ok(existing);
        }
        let definition = self.view_definition(actor, sql, default_schema).await?;
        self.store_for_creator(actor, schema, name, definition, mode)
            .await
    }

    /// Check a view's query, planned as its creator: a view can only expose what its
    /// creator may read.
    async fn view_definition(
        &self,
        actor: &Arc<UserAccess>,
        sql: &str,
        default_schema: &str,
    ) -> Result<DatasetDefinition, CoordinatorError> {
        let mut config = self.datasets.base_config().clone();
        config.options_mut().catalog.default_schema = default_schema.to_string();
        let state = self.datasets.session_state(config, Some(Arc::clone(actor)));
        let plan = crate::datasets::as_view_definition(crate::sql::parser::plan_query_text(
            &state,
            sql,
            &self.request_limits,
        ))
        .await?;
        if matches!(
            plan,
            datafusion::logical_expr::LogicalPlan::Ddl(_)
                | datafusion::logical_expr::LogicalPlan::Dml(_)
                | datafusion::logical_expr::LogicalPlan::Statement(_)
        ) {
            return Err(QuarryError::invalid("a view must be defined by a query").into());
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
    ) -> Result<Stored<DatasetRecord>, CoordinatorError> {
        let current = self
            .datasets
            .catalog()
            .get_dataset(schema, name)?
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
                    .get_dataset(schema, name)?
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
        let record = DatasetRecord {
            schema: schema.to_string(),
            name: name.to_string(),
            definition,
        };
        self.write(move |ops| {
            Ok(ops
                .datasets
                .catalog()
                .update_dataset(record, expected_version)?)
        })
        .await
    }

    /// Drop a dataset; `kind` ("table" or "view") must match when given.
    pub(super) fn drop_dataset(
        &self,
        actor: &UserAccess,
        schema: &str,
        name: &str,
        kind: Option<&str>,
        if_exists: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, CoordinatorError> {
        let catalog = self.datasets.catalog();
        let Some(existing) = catalog.get_dataset(schema, name)? else {
            return if if_exists {
                Ok(false)
            } else {
                Err(QuarryError::not_found(format!("{schema}.{name} does not exist")).into())
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
            ))
            .into());
        }
        catalog.delete_dataset(schema, name, expected_version)?;
        self.drop_reflections_of(schema, name);
        self.forget_grants_on(SecurableKind::Dataset, &dataset_object(schema, name))?;
        Ok(true)
    }
}
