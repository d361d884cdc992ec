//! Reflections in the engine: their statements (this file), refresh jobs (`refresh.rs`:
//! a distributed write of the materialization's query into a Delta table in the
//! reflection store, and the scheduler), and what a query's planning makes of them
//! (`planning.rs`: candidates, the rules of `crate::reflections::matching`, reports).
//! `policy.rs` keeps refresh policies of datasets and sources.

mod planning;
mod policy;
mod refresh;

pub(crate) use planning::PlanningReports;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use quarry_catalog::{CatalogError, Privilege, ReflectionKind, ReflectionRecord, Stored};
use quarry_common::{ErrorCode, QuarryError};

use crate::access::source_of;
use crate::datasets::schema_codec::encode_schema;
use crate::engine::ddl::reference_of;
use crate::engine::{Engine, Session, message_batch};
use crate::error::catalog_error;
use crate::reflections::{self as reflection};
use crate::sql::reflections::{ReflectionDefinition, ReflectionStatement};
use quarry_catalog::now_ms;

impl Engine {
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
                let (schema, name) = self.altered_dataset(session, &dataset)?;
                let created = self.create_reflection(&schema, &name, definition).await?;
                let job = self.start_refresh(&created, &session.user)?;
                message_batch(
                    "result",
                    &[format!(
                        "Reflection {created} created on {schema}.{name}; refresh job {job}"
                    )],
                )
            }
            ReflectionStatement::Drop { dataset, name } => {
                let (schema, table) = self.altered_dataset(session, &dataset)?;
                let stored = self.reflection_on(&name, &schema, &table)?;
                self.datasets
                    .catalog()
                    .delete_reflection(&name, Some(stored.version))
                    .map_err(catalog_error)?;
                self.catalog.purge_materializations(&stored.record);
                message_batch("result", &[format!("Reflection {name} dropped")])
            }
            ReflectionStatement::Refresh { dataset } => {
                let (schema, table) = self.altered_dataset(session, &dataset)?;
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
                let (schema, table) = self.altered_dataset(session, &dataset)?;
                let mut changed = 0;
                for stored in self.catalog.reflections_of(&schema, &table)? {
                    if matches!(stored.record.kind, ReflectionKind::Raw { .. }) == raw {
                        self.update_reflection(&stored.record.name, |r| r.enabled = enable)?;
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
            } => self.set_policy(session, &dataset, on_source, every, grace),
            ReflectionStatement::Wait {
                name,
                timeout_seconds,
            } => self.wait_for_reflection(&name, timeout_seconds).await,
            ReflectionStatement::RefreshOne { name } => {
                let record = self.named_reflection(session, &name)?;
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
                let stored = self.named_stored(session, &name)?;
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
                let record = self.named_reflection(session, &name)?;
                self.datasets
                    .catalog()
                    .delete_reflection(&name, None)
                    .map_err(catalog_error)?;
                self.catalog.purge_materializations(&record);
                message_batch("result", &[format!("Reflection {name} dropped")])
            }
        }
    }

    /// The dataset of an `ALTER TABLE|VIEW` on reflections, for a user with ALTER on it.
    fn altered_dataset(
        &self,
        session: &Session,
        parts: &[String],
    ) -> Result<(String, String), QuarryError> {
        let (schema, name) = session.dataset_name(&reference_of(parts)?)?;
        let record = self
            .datasets
            .catalog()
            .get_dataset(&schema, &name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{name} does not exist")))?;
        self.access_for(session).require_dataset(
            Privilege::Alter,
            &schema,
            &name,
            source_of(&record.record),
        )?;
        Ok((schema, name))
    }

    /// A reflection by name, for a user with ALTER on its dataset.
    fn named_reflection(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<ReflectionRecord, QuarryError> {
        Ok(self.named_stored(session, name)?.record)
    }

    fn named_stored(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<Stored<ReflectionRecord>, QuarryError> {
        let stored = self
            .datasets
            .catalog()
            .get_reflection(name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("reflection {name} does not exist")))?;
        let record = &stored.record;
        self.altered_dataset(session, &[record.schema.clone(), record.dataset.clone()])?;
        Ok(stored)
    }

    async fn create_reflection(
        &self,
        schema: &str,
        dataset: &str,
        definition: ReflectionDefinition,
    ) -> Result<String, QuarryError> {
        let provider = self
            .datasets
            .provider(schema, dataset)
            .await?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{dataset} does not exist")))?;
        let columns = provider.schema();
        reflection::validate(
            &definition.kind,
            &definition.partition_by,
            &definition.localsort_by,
            &columns,
        )?;
        let (refresh_every_ms, grace_ms) = self.effective_policy(schema, dataset)?;
        let record = ReflectionRecord {
            name: definition.name.clone(),
            schema: schema.to_string(),
            dataset: dataset.to_string(),
            kind: definition.kind,
            partition_by: definition.partition_by,
            localsort_by: definition.localsort_by,
            enabled: true,
            dataset_columns: encode_schema(&columns)?,
            refresh_every_ms,
            grace_ms,
            materialization: None,
            last_error: None,
        };
        match self.datasets.catalog().create_reflection(record) {
            Ok(_) => Ok(definition.name),
            Err(CatalogError::AlreadyExists { .. }) => Err(QuarryError::new(
                ErrorCode::AlreadyExists,
                format!("a reflection named {} already exists", definition.name),
            )),
            Err(e) => Err(catalog_error(e)),
        }
    }

    fn reflection_on(
        &self,
        name: &str,
        schema: &str,
        dataset: &str,
    ) -> Result<Stored<ReflectionRecord>, QuarryError> {
        self.datasets
            .catalog()
            .get_reflection(name)
            .map_err(catalog_error)?
            .filter(|r| r.record.schema == schema && r.record.dataset == dataset)
            .ok_or_else(|| {
                QuarryError::not_found(format!("{schema}.{dataset} has no reflection {name}"))
            })
    }

    /// Change a reflection's record, retrying when another change won.
    fn update_reflection(
        &self,
        name: &str,
        mut change: impl FnMut(&mut ReflectionRecord),
    ) -> Result<Option<ReflectionRecord>, QuarryError> {
        let catalog = self.datasets.catalog();
        loop {
            let Some(stored) = catalog.get_reflection(name).map_err(catalog_error)? else {
                return Ok(None);
            };
            let mut record = stored.record.clone();
            change(&mut record);
            match catalog.update_reflection(record.clone(), stored.version) {
                Ok(_) => return Ok(Some(record)),
                Err(CatalogError::Conflict { .. }) => continue,
                Err(CatalogError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(catalog_error(e)),
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
