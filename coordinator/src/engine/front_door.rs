//! The engine as the [`QueryService`] every frontend holds: each call checks what the
//! session's user may do, then hands the work to the engine. Frontends see only the
//! service's handles; this is the one place that opens them.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use quarry_catalog::{
    DatasetDefinition, DatasetRecord, JobRecord, Privilege, SYSTEM_SCHEMA, SchemaRecord,
    SourceConfig, SourceRecord, Stored,
};
use quarry_common::QuarryError;

use super::catalog_ops::{CreateMode, DatasetUpdate, TableRequest};
use super::{Engine, PreparedStatement, Session};
use crate::access::auth::{Credentials, Principal, ScramSecret, blocking};
use crate::access::{UserAccess, can_read, source_of};
use crate::datasets::schema_codec::decode_schema;
use crate::error::catalog_error;
use crate::service::{
    Frontend, Health, JobHandle, JobState, Prepared, QueryService, SessionHandle, TableEntry,
};
use crate::sql::reflections::ReflectionStatement;
use crate::sql::security::SecurityStatement;

/// Schemas the session's user may see, `sys` included.
fn visible_schemas(engine: &Engine, session: &Session) -> Vec<String> {
    engine
        .datasets
        .visible_schema_names(&Some(engine.access_for(session)))
}

/// A statement the session prepared.
fn prepared(session: &Session, handle: &str) -> Result<PreparedStatement, QuarryError> {
    session.prepared(handle).ok_or_else(|| {
        QuarryError::not_found(format!(
            "prepared statement {handle} does not exist in this session"
        ))
    })
}

/// The engine is the service; an `Arc` because queries it starts outlive the call.
#[async_trait]
impl QueryService for Arc<Engine> {
    fn auth_enabled(&self) -> bool {
        self.auth.enabled()
    }

    async fn authenticate(&self, credentials: Credentials) -> Result<Principal, QuarryError> {
        self.auth.authenticate(credentials).await
    }

    async fn login(&self, user: &str, password: &str) -> Result<String, QuarryError> {
        self.auth.login(user, password).await
    }

    async fn scram_secret(&self, user: &str) -> Result<ScramSecret, QuarryError> {
        self.auth.scram_secret(user).await
    }

    fn scram_finished(&self, user: &str, succeeded: bool) -> Option<Principal> {
        self.auth.login_checked(user, succeeded);
        succeeded.then(|| Principal {
            user: user.to_string(),
            token: String::new(),
            issued: false,
        })
    }

    fn session(&self, principal: &Principal, keep: bool, frontend: Frontend) -> SessionHandle {
        let session = if keep {
            self.sessions.get_or_create(
                &principal.token,
                &principal.user,
                quarry_catalog::DEFAULT_SCHEMA,
            )
        } else {
            self.new_session(&principal.user)
        };
        SessionHandle::new(session, frontend)
    }

    fn close_session(&self, session: &SessionHandle) {
        let session = session.inner();
        self.sessions.remove(&session.id);
    }

    async fn logout(&self, session: &SessionHandle) -> Result<(), QuarryError> {
        let session = session.inner();
        // Kept sessions are keyed by their token.
        if self.sessions.remove(&session.id).is_some() && self.auth.enabled() {
            self.auth.logout(&session.id).await?;
        }
        Ok(())
    }

    fn access(&self, session: &SessionHandle) -> Arc<UserAccess> {
        let session = session.inner();
        self.access_for(session)
    }

    async fn submit(
        &self,
        session: &SessionHandle,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<JobHandle, QuarryError> {
        let frontend = session.frontend().as_str();
        let session = session.inner();
        Engine::submit(self, session, sql, parameters, frontend)
            .await
            .map(JobHandle::new)
    }

    async fn describe(
        &self,
        session: &SessionHandle,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), QuarryError> {
        let session = session.inner();
        Engine::describe(self, session, sql).await
    }

    async fn security(
        &self,
        session: &SessionHandle,
        statement: SecurityStatement,
    ) -> Result<RecordBatch, QuarryError> {
        let session = session.inner();
        let actor = self.access_for(session);
        Ok(self
            .catalog
            .run_security(session, &actor, statement)
            .await?)
    }

    async fn reflection(
        &self,
        session: &SessionHandle,
        statement: ReflectionStatement,
    ) -> Result<RecordBatch, QuarryError> {
        let session = session.inner();
        self.run_reflection(session, statement).await
    }

    fn fetch_timeout(&self) -> Duration {
        Engine::fetch_timeout(self)
    }

    async fn prepare(&self, session: &SessionHandle, sql: &str) -> Result<Prepared, QuarryError> {
        let session = session.inner();
        let (dataset_schema, parameter_schema) = Engine::describe(self, session, sql).await?;
        let handle = session.add_prepared(PreparedStatement {
            sql: sql.to_string(),
            dataset_schema: Arc::clone(&dataset_schema),
            parameter_schema: Arc::clone(&parameter_schema),
            parameters: None,
        });
        Ok(Prepared {
            handle,
            dataset_schema,
            parameter_schema,
        })
    }

    fn prepared_parameters(
        &self,
        session: &SessionHandle,
        handle: &str,
    ) -> Result<SchemaRef, QuarryError> {
        Ok(prepared(session.inner(), handle)?.parameter_schema)
    }

    fn bind(
        &self,
        session: &SessionHandle,
        handle: &str,
        parameters: Vec<ScalarValue>,
    ) -> Result<(), QuarryError> {
        session.inner().bind(handle, parameters)
    }

    async fn submit_prepared(
        &self,
        session: &SessionHandle,
        handle: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<JobHandle, QuarryError> {
        let frontend = session.frontend().as_str();
        let session = session.inner();
        let prepared = prepared(session, handle)?;
        let parameters = parameters.or(prepared.parameters);
        Engine::submit(self, session, &prepared.sql, parameters, frontend)
            .await
            .map(JobHandle::new)
    }

    fn close_prepared(&self, session: &SessionHandle, handle: &str) {
        session.inner().close_prepared(handle);
    }

    fn get_job(&self, session: &SessionHandle, id: &str) -> Result<JobRecord, QuarryError> {
        let session = session.inner();
        let record = self
            .jobs
            .record(id)?
            .ok_or_else(|| QuarryError::not_found(format!("job {id} does not exist")))?;
        self.require_job_owner(session, &record.user, id)?;
        Ok(record)
    }

    fn live_job(
        &self,
        session: &SessionHandle,
        id: &str,
    ) -> Result<Option<JobHandle>, QuarryError> {
        let session = session.inner();
        let Some(job) = self.jobs.live(id) else {
            return Ok(None);
        };
        self.require_job_owner(session, &job.user(), id)?;
        Ok(Some(JobHandle::new(job)))
    }

    fn list_jobs(
        &self,
        session: &SessionHandle,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QuarryError> {
        let session = session.inner();
        let state = state.map(JobState::as_str);
        let access = self.access_for(session);
        if access.admin {
            return self.jobs.list(state, limit);
        }
        self.jobs
            .list_where(state, limit, |job| access.owns_job(&job.user))
    }

    fn cancel(&self, session: &SessionHandle, id: &str, reason: &str) -> Result<bool, QuarryError> {
        match self.live_job(session, id)? {
            Some(job) => Ok(job.cancel(reason)),
            None => {
                // Still say "not found" for jobs that never were, and check ownership.
                self.get_job(session, id)?;
                Ok(false)
            }
        }
    }

    fn use_schema(&self, session: &SessionHandle, schema: &str) -> Result<(), QuarryError> {
        let session = session.inner();
        Engine::use_schema(self, session, schema)
    }

    fn default_schema(&self, session: &SessionHandle) -> String {
        session.inner().default_schema()
    }

    fn settings(&self, session: &SessionHandle) -> std::collections::BTreeMap<String, String> {
        session.inner().settings()
    }

    fn reset_option(&self, session: &SessionHandle, key: &str) {
        session.inner().reset(key);
    }

    fn knows_option(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.datasets
            .base_config()
            .options()
            .entries()
            .iter()
            .any(|e| e.key == key)
    }

    fn set_option(
        &self,
        session: &SessionHandle,
        key: &str,
        value: &str,
    ) -> Result<(), QuarryError> {
        let session = session.inner();
        session.set(self.datasets.base_config(), key, value)
    }

    fn list_sources(
        &self,
        session: &SessionHandle,
    ) -> Result<Vec<Stored<SourceRecord>>, QuarryError> {
        let session = session.inner();
        Ok(self.catalog.readable_sources(&self.access_for(session))?)
    }

    fn get_source(
        &self,
        session: &SessionHandle,
        name: &str,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        let session = session.inner();
        let stored = self
            .datasets
            .catalog()
            .get_source(name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("source '{name}' does not exist")))?;
        self.access_for(session)
            .require_source(Privilege::Select, name)?;
        Ok(stored)
    }

    async fn create_source(
        &self,
        session: &SessionHandle,
        name: &str,
        config: SourceConfig,
        mode: CreateMode,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        let session = session.inner();
        let actor = self.access_for(session);
        Ok(self
            .catalog
            .create_source(&actor, name, config, mode)
            .await?)
    }

    async fn update_source(
        &self,
        session: &SessionHandle,
        name: &str,
        config: SourceConfig,
        version: u64,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        let session = session.inner();
        let actor = self.access_for(session);
        Ok(self
            .catalog
            .update_source(&actor, name, config, version)
            .await?)
    }

    async fn drop_source(
        &self,
        session: &SessionHandle,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError> {
        let (engine, actor) = (Arc::clone(self), self.access_for(session.inner()));
        let name = name.to_string();
        // Catalog writes are durable (fsync): off the workers that serve clients.
        blocking(move || {
            engine.catalog.drop_source(&actor, &name, false, version)?;
            Ok(())
        })
        .await
    }

    fn list_schemas(
        &self,
        session: &SessionHandle,
    ) -> Result<Vec<Stored<SchemaRecord>>, QuarryError> {
        let session = session.inner();
        let visible = visible_schemas(self, session);
        let mut schemas = self
            .datasets
            .catalog()
            .list_schemas()
            .map_err(catalog_error)?;
        schemas.retain(|s| visible.contains(&s.record.name));
        Ok(schemas)
    }

    fn schema_names(&self, session: &SessionHandle) -> Vec<String> {
        let session = session.inner();
        visible_schemas(self, session)
    }

    fn get_schema(
        &self,
        session: &SessionHandle,
        name: &str,
    ) -> Result<Stored<SchemaRecord>, QuarryError> {
        let session = session.inner();
        let stored = self
            .datasets
            .catalog()
            .get_schema(name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("schema '{name}' does not exist")))?;
        if !visible_schemas(self, session).iter().any(|s| s == name) {
            self.access_for(session)
                .require_schema(Privilege::Select, name)?;
        }
        Ok(stored)
    }

    async fn create_schema(
        &self,
        session: &SessionHandle,
        name: &str,
        if_not_exists: bool,
    ) -> Result<bool, QuarryError> {
        let (engine, actor) = (Arc::clone(self), self.access_for(session.inner()));
        let name = name.to_string();
        blocking(move || Ok(engine.catalog.create_schema(&actor, &name, if_not_exists)?)).await
    }

    async fn drop_schema(
        &self,
        session: &SessionHandle,
        name: &str,
        cascade: bool,
        version: Option<u64>,
    ) -> Result<(), QuarryError> {
        let (engine, actor) = (Arc::clone(self), self.access_for(session.inner()));
        let name = name.to_string();
        blocking(move || {
            engine
                .catalog
                .drop_schema(&actor, &name, false, cascade, version)?;
            Ok(())
        })
        .await
    }

    fn list_datasets(
        &self,
        session: &SessionHandle,
        schema: Option<&str>,
    ) -> Result<Vec<Stored<DatasetRecord>>, QuarryError> {
        let session = session.inner();
        let viewer = Some(self.access_for(session));
        let mut datasets = self
            .datasets
            .catalog()
            .list_datasets(schema)
            .map_err(catalog_error)?;
        datasets.retain(|d| can_read(&viewer, &d.record));
        Ok(datasets)
    }

    fn get_dataset(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let session = session.inner();
        let stored = self
            .datasets
            .catalog()
            .get_dataset(schema, name)
            .map_err(catalog_error)?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{name} does not exist")))?;
        self.access_for(session).require_dataset(
            Privilege::Select,
            schema,
            name,
            source_of(&stored.record),
        )?;
        Ok(stored)
    }

    async fn tables(
        &self,
        session: &SessionHandle,
        with_columns: bool,
    ) -> Result<Vec<TableEntry>, QuarryError> {
        let viewer = Some(self.access_for(session.inner()));
        let mut entries = Vec::new();
        for dataset in QueryService::list_datasets(self, session, None)? {
            let record = dataset.record;
            let (kind, arrow_schema) = match &record.definition {
                DatasetDefinition::Table(table) => ("TABLE", decode_schema(&table.arrow_schema)?),
                DatasetDefinition::View(_) => {
                    let schema = if with_columns {
                        match self.datasets.provider(&record.schema, &record.name).await {
                            Ok(Some(provider)) => provider.schema(),
                            // A view that no longer plans is still listed.
                            _ => Arc::new(arrow::datatypes::Schema::empty()),
                        }
                    } else {
                        Arc::new(arrow::datatypes::Schema::empty())
                    };
                    ("VIEW", schema)
                }
            };
            entries.push(TableEntry {
                schema: record.schema,
                name: record.name,
                kind,
                arrow_schema,
            });
        }
        if let Some(system) = self.datasets.system_schema(SYSTEM_SCHEMA, &viewer) {
            for name in system.table_names() {
                if let Ok(Some(table)) = system.table(&name).await {
                    entries.push(TableEntry {
                        schema: SYSTEM_SCHEMA.to_string(),
                        name,
                        kind: "SYSTEM TABLE",
                        arrow_schema: table.schema(),
                    });
                }
            }
        }
        Ok(entries)
    }

    async fn create_table(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        request: TableRequest,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let session = session.inner();
        let actor = self.access_for(session);
        Ok(self
            .catalog
            .create_table(&actor, schema, name, request, mode)
            .await?)
    }

    async fn create_view(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        sql: &str,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let session = session.inner();
        let actor = self.access_for(session);
        // Unqualified names in the view resolve against the session's schema, or the
        // view's own when the session has none set.
        let context = if session.default_schema() == quarry_catalog::DEFAULT_SCHEMA {
            schema.to_string()
        } else {
            session.default_schema()
        };
        Ok(self
            .catalog
            .create_view(&actor, schema, name, sql, &context, mode)
            .await?)
    }

    async fn update_dataset(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        update: DatasetUpdate,
        version: u64,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let session = session.inner();
        let actor = self.access_for(session);
        Ok(self
            .catalog
            .update_dataset(&actor, schema, name, update, version)
            .await?)
    }

    async fn drop_dataset(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError> {
        let actor = self.access_for(session.inner());
        self.catalog
            .drop_dataset_and_files(&actor, schema, name, None, false, version)
            .await?;
        Ok(())
    }

    fn health(&self) -> Health {
        let (running, queued) = self.admission().load();
        Health {
            executors: self.scheduler.cluster().active().len(),
            running,
            queued,
        }
    }

    async fn backup(
        &self,
        session: &SessionHandle,
        with_jobs: bool,
    ) -> Result<Vec<u8>, QuarryError> {
        let actor = self.access_for(session.inner());
        Ok(self.catalog.backup(&actor, with_jobs).await?)
    }

    async fn metrics(&self) -> Result<String, QuarryError> {
        let (running, queued) = self.admission().load();
        let executors = self.scheduler.cluster().all();
        let catalog = self.datasets.catalog().clone();
        let state = Arc::clone(self.datasets.reflection_state());
        // Reading the reflections (sled) and /proc for the process's figures is I/O.
        blocking(move || {
            let now_ms = quarry_catalog::now_ms();
            let reflections = crate::reflections::statuses(&catalog, &state, now_ms);
            let scrape = crate::metrics::Scrape {
                running,
                queued,
                executors,
                reflections,
                now_ms,
            };
            crate::metrics::render(&scrape)
                .map_err(|e| crate::error::CoordinatorError::encode("metrics", e).into())
        })
        .await
    }
}
