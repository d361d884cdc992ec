//! Catalog statements: Quarry's own (`CREATE SOURCE`, `CREATE TABLE ... FROM`, `USE`, the
//! reflection statements) and DataFusion's DDL (`CREATE EXTERNAL TABLE`, views, schemas,
//! `DROP`), made persistent through the catalog operations; reflection statements also
//! start refresh jobs and wait for them.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{SchemaReference, TableReference};
use datafusion::logical_expr::DdlStatement;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use quarry_catalog::ReflectionKind;
use quarry_catalog::SourceConfig;
use quarry_common::{ErrorCode, QuarryError};
use std::time::Duration;

use super::catalog_ops::{CreateMode, TableRequest, source_config};
use super::{Engine, Session, message_batch};
use crate::access::UserAccess;
use crate::datasets::schema_codec::encode_schema;
use crate::error::CoordinatorError;
use crate::error::catalog_error;
use crate::reflections::{self as reflection};
use crate::sql::parser::Statement;
use crate::sql::reflections::ReflectionStatement;
use quarry_catalog::CATALOG_NAME;
use quarry_catalog::now_ms;

/// `[catalog.][schema.]name` parts as a table reference.
pub(super) fn reference_of(parts: &[String]) -> Result<TableReference, QuarryError> {
    match parts {
        [table] => Ok(TableReference::bare(table.as_str())),
        [schema, table] => Ok(TableReference::partial(schema.as_str(), table.as_str())),
        [catalog, schema, table] => Ok(TableReference::full(
            catalog.as_str(),
            schema.as_str(),
            table.as_str(),
        )),
        _ => Err(QuarryError::invalid("a table name has at most three parts")),
    }
}

fn done(message: String) -> Result<RecordBatch, QuarryError> {
    message_batch("result", &[message])
}

impl Engine {
    pub(super) async fn run_extension(
        &self,
        session: &Arc<Session>,
        statement: Statement,
    ) -> Result<RecordBatch, QuarryError> {
        let actor = self.access_for(session);
        match statement {
            Statement::Security(security) => self
                .catalog
                .run_security(session, &actor, security)
                .await
                .map_err(QuarryError::from),
            Statement::CreateSource(create) => {
                let config = source_config(&create.kind, &create.options)?;
                let mode = CreateMode::from_flags(create.if_not_exists, create.or_replace);
                let stored = self
                    .catalog
                    .create_source(&actor, &create.name, config, mode)
                    .await?;
                done(format!(
                    "Source {} ready (version {})",
                    create.name, stored.version
                ))
            }
            Statement::DropSource { name, if_exists } => {
                if self.catalog.drop_source(&actor, &name, if_exists, None)? {
                    done(format!("Source {name} dropped"))
                } else {
                    done(format!("Source {name} does not exist"))
                }
            }
            Statement::ShowSources => self.show_sources(&actor),
            Statement::CreateTable(create) => {
                let (schema, name) = session.dataset_name(&reference_of(&create.name)?)?;
                let request = TableRequest {
                    source: Some(create.source),
                    path: Some(create.path),
                    format: create.format,
                    options: create.options.into_iter().collect(),
                    ..TableRequest::default()
                };
                let mode = CreateMode::from_flags(create.if_not_exists, create.or_replace);
                self.catalog
                    .create_table(&actor, &schema, &name, request, mode)
                    .await?;
                done(format!("Table {schema}.{name} created"))
            }
            Statement::Use { schema } => {
                self.use_schema(session, &schema)?;
                done(format!("Using schema {schema}"))
            }
            Statement::DescribeHistory { name } => {
                let (schema, name) = session.dataset_name(&reference_of(&name)?)?;
                let (_, folder) = self.catalog.managed_table(
                    &actor,
                    &schema,
                    &name,
                    quarry_catalog::Privilege::Select,
                )?;
                crate::datasets::delta::history(self.datasets.runtime(), &folder).await
            }
            Statement::Vacuum { name, retain_hours } => {
                let (schema, name) = session.dataset_name(&reference_of(&name)?)?;
                let removed = self
                    .catalog
                    .vacuum(&actor, &schema, &name, retain_hours)
                    .await?;
                done(format!("Removed {removed} files from {schema}.{name}"))
            }
            Statement::DataFusion(_)
            | Statement::ManagedTable { .. }
            | Statement::Copy(_)
            | Statement::Optimize { .. }
            | Statement::Reflection(_)
            | Statement::ExplainReflections(_) => {
                Err(CoordinatorError::invariant("not a Quarry statement").into())
            }
        }
    }

    /// `USE schema`: the session's default schema, which must exist (or be `sys`).
    pub(crate) fn use_schema(&self, session: &Session, schema: &str) -> Result<(), QuarryError> {
        let exists = self
            .datasets
            .catalog()
            .get_schema(schema)
            .map_err(crate::error::catalog_error)?
            .is_some();
        if !exists && schema != quarry_catalog::SYSTEM_SCHEMA {
            return Err(QuarryError::not_found(format!(
                "schema '{schema}' does not exist"
            )));
        }
        session.set_default_schema(schema);
        Ok(())
    }

    /// Sources the user may read from (all of them for admins).
    fn show_sources(&self, actor: &UserAccess) -> Result<RecordBatch, QuarryError> {
        let sources = self.catalog.readable_sources(actor)?;
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        let mut locations = Vec::new();
        let mut versions = Vec::new();
        for source in sources {
            names.push(source.record.name);
            versions.push(source.version);
            match source.record.config {
                SourceConfig::Local { root, .. } => {
                    kinds.push("local".to_string());
                    locations.push(root);
                }
                SourceConfig::Cluster {} => {
                    kinds.push("cluster".to_string());
                    locations.push("executors' data directories".to_string());
                }
                SourceConfig::S3(s3) => {
                    kinds.push("s3".to_string());
                    let endpoint = s3.endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
                    locations.push(format!("s3://{}/{}{endpoint}", s3.bucket, s3.prefix));
                }
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("location", DataType::Utf8, false),
            Field::new("version", DataType::UInt64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(kinds)),
                Arc::new(StringArray::from(locations)),
                Arc::new(UInt64Array::from(versions)),
            ],
        )
        .map_err(CoordinatorError::batch("a result"))
        .map_err(QuarryError::from)
    }

    pub(super) async fn run_ddl(
        &self,
        session: &Arc<Session>,
        ddl: DdlStatement,
    ) -> Result<RecordBatch, QuarryError> {
        let actor = self.access_for(session);
        match ddl {
            DdlStatement::CreateExternalTable(cmd) => {
                if cmd.temporary {
                    return Err(unsupported("temporary tables"));
                }
                let location = match cmd.locations.as_slice() {
                    [one] => one.clone(),
                    _ => return Err(QuarryError::invalid("a table reads one location")),
                };
                let (schema, name) = session.dataset_name(&cmd.name)?;
                let arrow_schema = cmd.schema.as_arrow();
                let partition_columns = if cmd.table_partition_cols.is_empty() {
                    None
                } else {
                    let mut cols = Vec::new();
                    for col in &cmd.table_partition_cols {
                        let data_type = arrow_schema
                            .field_with_name(col)
                            .map(|f| f.data_type().clone())
                            .unwrap_or_else(|_| crate::datasets::tables::partition_type());
                        cols.push((col.clone(), data_type));
                    }
                    Some(cols)
                };
                let columns = (!arrow_schema.fields().is_empty()).then(|| {
                    let fields: Vec<_> = arrow_schema
                        .fields()
                        .iter()
                        .filter(|f| !cmd.table_partition_cols.contains(f.name()))
                        .cloned()
                        .collect();
                    Arc::new(Schema::new(fields))
                });
                let request = TableRequest {
                    location: Some(location),
                    format: Some(cmd.file_type.to_ascii_lowercase()),
                    options: cmd.options.clone().into_iter().collect(),
                    columns,
                    partition_columns,
                    ..TableRequest::default()
                };
                let mode = CreateMode::from_flags(cmd.if_not_exists, cmd.or_replace);
                self.catalog
                    .create_table(&actor, &schema, &name, request, mode)
                    .await?;
                done(format!("Table {schema}.{name} created"))
            }
            DdlStatement::CreateView(view) => {
                if view.temporary {
                    return Err(unsupported("temporary views"));
                }
                let (schema, name) = session.dataset_name(&view.name)?;
                let sql = view_query(view.definition.as_deref())?;
                let mode = CreateMode::from_flags(false, view.or_replace);
                self.catalog
                    .create_view(
                        &actor,
                        &schema,
                        &name,
                        &sql,
                        &session.default_schema(),
                        mode,
                    )
                    .await?;
                done(format!("View {schema}.{name} created"))
            }
            DdlStatement::CreateCatalogSchema(create) => {
                let name = match create.schema_name.split_once('.') {
                    Some((catalog, schema)) if catalog == CATALOG_NAME => schema.to_string(),
                    Some((catalog, _)) => {
                        return Err(QuarryError::not_found(format!(
                            "catalog '{catalog}' does not exist"
                        )));
                    }
                    None => create.schema_name.clone(),
                };
                if self
                    .catalog
                    .create_schema(&actor, &name, create.if_not_exists)?
                {
                    done(format!("Schema {name} created"))
                } else {
                    done(format!("Schema {name} already exists"))
                }
            }
            DdlStatement::DropTable(drop) => {
                let (schema, name) = session.dataset_name(&drop.name)?;
                let dropped = self
                    .catalog
                    .drop_dataset_and_files(
                        &actor,
                        &schema,
                        &name,
                        Some("table"),
                        drop.if_exists,
                        None,
                    )
                    .await?;
                done(if dropped {
                    format!("Table {schema}.{name} dropped")
                } else {
                    format!("Table {schema}.{name} does not exist")
                })
            }
            DdlStatement::DropView(drop) => {
                let (schema, name) = session.dataset_name(&drop.name)?;
                let dropped = self
                    .catalog
                    .drop_dataset_and_files(
                        &actor,
                        &schema,
                        &name,
                        Some("view"),
                        drop.if_exists,
                        None,
                    )
                    .await?;
                done(if dropped {
                    format!("View {schema}.{name} dropped")
                } else {
                    format!("View {schema}.{name} does not exist")
                })
            }
            DdlStatement::DropCatalogSchema(drop) => {
                let name = match &drop.name {
                    SchemaReference::Bare { schema } => schema.to_string(),
                    SchemaReference::Full { schema, .. } => schema.to_string(),
                };
                if self
                    .catalog
                    .drop_schema(&actor, &name, drop.if_exists, drop.cascade, None)?
                {
                    done(format!("Schema {name} dropped"))
                } else {
                    done(format!("Schema {name} does not exist"))
                }
            }
            DdlStatement::CreateMemoryTable(_) => Err(QuarryError::new(
                ErrorCode::Unimplemented,
                "Quarry reads data where it lives: create tables from files with \
                 CREATE TABLE name FROM source 'path' or CREATE EXTERNAL TABLE, or use a view",
            )),
            DdlStatement::CreateCatalog(_) => Err(unsupported("more catalogs")),
            DdlStatement::CreateIndex(_) => Err(unsupported("indexes")),
            DdlStatement::CreateFunction(_) | DdlStatement::DropFunction(_) => {
                Err(unsupported("user-defined functions"))
            }
        }
    }

    pub(crate) async fn run_reflection(
        self: &Arc<Self>,
        session: &Arc<Session>,
        statement: ReflectionStatement,
    ) -> Result<RecordBatch, QuarryError> {
        match statement {
            ReflectionStatement::Create {
                dataset,
                definition,
            } => {
                let (schema, name) = self.catalog.altered_dataset(session, &dataset)?;
                let created = self
                    .catalog
                    .create_reflection(&schema, &name, definition)
                    .await?;
                let job = self.start_refresh(&created, &session.user)?;
                message_batch(
                    "result",
                    &[format!(
                        "Reflection {created} created on {schema}.{name}; refresh job {job}"
                    )],
                )
            }
            ReflectionStatement::Drop { dataset, name } => {
                let (schema, table) = self.catalog.altered_dataset(session, &dataset)?;
                let stored = self.catalog.reflection_on(&name, &schema, &table)?;
                self.datasets
                    .catalog()
                    .delete_reflection(&name, Some(stored.version))
                    .map_err(catalog_error)?;
                self.catalog.purge_materializations(&stored.record);
                message_batch("result", &[format!("Reflection {name} dropped")])
            }
            ReflectionStatement::Refresh { dataset } => {
                let (schema, table) = self.catalog.altered_dataset(session, &dataset)?;
                let mut lines = Vec::new();
                for stored in self.catalog.reflections_of(&schema, &table)? {
                    let job = self.start_refresh(&stored.record.name, &session.user)?;
                    lines.push(format!("{}: refresh job {job}", stored.record.name));
                }
                if lines.is_empty() {
                    lines.push(format!("{schema}.{table} has no reflections"));
                }
                message_batch("result", &lines)
            }
            ReflectionStatement::Acceleration {
                dataset,
                raw,
                enable,
            } => {
                let (schema, table) = self.catalog.altered_dataset(session, &dataset)?;
                let mut changed = 0;
                for stored in self.catalog.reflections_of(&schema, &table)? {
                    if matches!(stored.record.kind, ReflectionKind::Raw { .. }) == raw {
                        self.catalog
                            .update_reflection(&stored.record.name, |r| r.enabled = enable)?;
                        changed += 1;
                    }
                }
                let kind = if raw { "raw" } else { "aggregate" };
                let state = if enable { "enabled" } else { "disabled" };
                message_batch(
                    "result",
                    &[format!(
                        "{kind} acceleration {state} on {schema}.{table} ({changed} reflections)"
                    )],
                )
            }
            ReflectionStatement::Policy {
                dataset,
                on_source,
                every,
                grace,
            } => self
                .catalog
                .set_policy(session, &dataset, on_source, every, grace)
                .map_err(QuarryError::from),
            ReflectionStatement::Wait {
                name,
                timeout_seconds,
            } => self.wait_for_reflection(&name, timeout_seconds).await,
            ReflectionStatement::RefreshOne { name } => {
                let record = self.catalog.named_reflection(session, &name)?;
                let job = self.start_refresh(&record.name, &session.user)?;
                message_batch("result", &[format!("{name}: refresh job {job}")])
            }
            ReflectionStatement::Update {
                name,
                version,
                enabled,
                kind,
                partition_by,
                localsort_by,
            } => {
                let stored = self.catalog.named_stored(session, &name)?;
                if stored.version != version {
                    return Err(QuarryError::new(
                        ErrorCode::Conflict,
                        format!(
                            "reflection {name} is at version {}, not {version}: read it again",
                            stored.version
                        ),
                    ));
                }
                let old = stored.record;
                let mut record = old.clone();
                if let Some(enabled) = enabled {
                    record.enabled = enabled;
                }
                let redefined = kind.is_some() || partition_by.is_some() || localsort_by.is_some();
                if redefined {
                    record.kind = kind.unwrap_or(record.kind);
                    record.partition_by = partition_by.unwrap_or(record.partition_by);
                    record.localsort_by = localsort_by.unwrap_or(record.localsort_by);
                    let columns = self
                        .datasets
                        .provider(&record.schema, &record.dataset)
                        .await?
                        .ok_or_else(|| {
                            QuarryError::not_found(format!(
                                "{}.{} does not exist",
                                record.schema, record.dataset
                            ))
                        })?
                        .schema();
                    reflection::validate(
                        &record.kind,
                        &record.partition_by,
                        &record.localsort_by,
                        &columns,
                    )?;
                    record.dataset_columns = encode_schema(&columns)?;
                    // The old data is of the old definition: it never serves the new one.
                    record.materialization = None;
                    record.last_error = None;
                }
                let updated = self
                    .datasets
                    .catalog()
                    .update_reflection(record, version)
                    .map_err(catalog_error)?;
                let mut message =
                    format!("Reflection {name} updated to version {}", updated.version);
                if redefined {
                    if let Some(m) = &old.materialization {
                        self.purge_later(crate::datasets::delta::folder_url(&m.location)?);
                    }
                    let job = self.start_refresh(&name, &session.user)?;
                    message.push_str(&format!("; refresh job {job}"));
                }
                message_batch("result", &[message])
            }
            ReflectionStatement::DropByName { name } => {
                let record = self.catalog.named_reflection(session, &name)?;
                self.datasets
                    .catalog()
                    .delete_reflection(&name, None)
                    .map_err(catalog_error)?;
                self.catalog.purge_materializations(&record);
                message_batch("result", &[format!("Reflection {name} dropped")])
            }
        }
    }

    async fn wait_for_reflection(
        &self,
        name: &str,
        timeout_seconds: Option<f64>,
    ) -> Result<RecordBatch, QuarryError> {
        let timeout = Duration::from_secs_f64(timeout_seconds.unwrap_or(600.0));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stored = self
                .datasets
                .catalog()
                .get_reflection(name)
                .map_err(catalog_error)?
                .ok_or_else(|| {
                    QuarryError::not_found(format!("reflection {name} does not exist"))
                })?;
            let record = stored.record;
            let refreshing = self.datasets.reflection_state().is_refreshing(name);
            let (status, reason) = reflection::status(&record, None, refreshing, now_ms());
            match status {
                "CAN_ACCELERATE" => {
                    let rows = record.materialization.as_ref().map_or(0, |m| m.rows);
                    return message_batch(
                        "result",
                        &[format!("Reflection {name} can accelerate ({rows} rows)")],
                    );
                }
                "FAILED" | "DISABLED" | "INVALID" if !refreshing => {
                    return Err(QuarryError::invalid(format!(
                        "reflection {name} cannot accelerate: {}",
                        reason.unwrap_or_default()
                    )));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QuarryError::new(
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "reflection {name} could not accelerate within {} ({status})",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn unsupported(what: &str) -> QuarryError {
    QuarryError::new(
        ErrorCode::Unimplemented,
        format!("Quarry does not support {what}"),
    )
}

/// A view definition in the catalog is the CREATE VIEW statement that made it.
fn not_a_view() -> QuarryError {
    CoordinatorError::invariant("a view definition that is not CREATE VIEW").into()
}

/// The query of a `CREATE VIEW` statement's text.
fn view_query(definition: Option<&str>) -> Result<String, QuarryError> {
    let definition =
        definition.ok_or_else(|| QuarryError::invalid("the view has no definition"))?;
    let mut parser = DFParserBuilder::new(definition).build()?;
    match parser.parse_statement()? {
        DFStatement::Statement(statement) => match *statement {
            SqlStatement::CreateView(view) => Ok(view.query.to_string()),
            _ => Err(not_a_view()),
        },
        _ => Err(not_a_view()),
    }
}
