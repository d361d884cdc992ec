//! [`QueryService`]: the one door every frontend (Flight SQL, REST and the console, and
//! any to come) goes through. Frontends hold an `Arc<dyn QueryService>` and nothing else:
//! they turn their protocol into these calls and the answers back into their protocol,
//! and never reach into sessions, jobs, the catalog or the scheduler themselves.
//!
//! Every call names the session it is made in; the service decides what that session's
//! user may do (privileges, ownership of jobs) so no frontend can forget a check.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use quarry_catalog::{
    DatasetDefinition, DatasetRecord, JobRecord, Privilege, SchemaRecord, SourceConfig,
    SourceRecord, Stored,
};
use quarry_common::QuarryError;

use crate::access::UserAccess;
use crate::access::auth::{Credentials, Principal};
use crate::datasets::schema_codec::decode_schema;
use crate::datasets::{SYSTEM_SCHEMA, can_read, source_of};
use crate::engine::catalog_ops::{CreateMode, DatasetUpdate, TableRequest, catalog_error};
use crate::engine::{Engine, Session};
use crate::jobs::Job;
use crate::sql::security::SecurityStatement;

/// What `/healthz` reports.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub executors: usize,
    pub running: usize,
    pub queued: usize,
}

/// A table or view as catalog listings show it.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    /// `TABLE`, `VIEW` or `SYSTEM TABLE`.
    pub kind: &'static str,
    pub arrow_schema: SchemaRef,
}

#[async_trait]
pub trait QueryService: Send + Sync + 'static {
    // ---- who is asking ----

    /// Is authentication on?
    fn auth_enabled(&self) -> bool;
    /// Check credentials (Basic, Bearer or none); with none and authentication off, a
    /// fresh anonymous principal.
    async fn authenticate(&self, credentials: Credentials) -> Result<Principal, QuarryError>;
    /// Check a password and hand out a token.
    async fn login(&self, user: &str, password: &str) -> Result<String, QuarryError>;
    /// The session of a principal: kept under its token, or (`keep` false) a one-off.
    fn session(&self, principal: &Principal, keep: bool) -> Arc<Session>;
    fn close_session(&self, session: &Session);
    /// What the session's user may do now.
    fn access(&self, session: &Session) -> Arc<UserAccess>;

    // ---- statements and jobs ----

    /// Start SQL as a job; planning errors are returned.
    async fn submit(
        &self,
        session: &Arc<Session>,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<Arc<Job>, QuarryError>;
    /// Result and parameter schemas of a statement, without running it.
    async fn describe(
        &self,
        session: &Arc<Session>,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), QuarryError>;
    /// Run a statement about users, roles, grants or tokens (for REST, which does not
    /// spell them in SQL); its result rows.
    async fn security(
        &self,
        session: &Arc<Session>,
        statement: SecurityStatement,
    ) -> Result<RecordBatch, QuarryError>;
    /// Run a reflection statement (for REST, which does not spell them in SQL); its
    /// result rows.
    async fn reflection(
        &self,
        session: &Arc<Session>,
        statement: crate::sql::reflections::ReflectionStatement,
    ) -> Result<RecordBatch, QuarryError>;
    /// How long a client that reads results later has to start reading.
    fn fetch_timeout(&self) -> Duration;
    /// A job's record, if the session's user may see it.
    fn get_job(&self, session: &Session, id: &str) -> Result<JobRecord, QuarryError>;
    /// A job whose results are still kept, if the session's user may read them.
    fn live_job(&self, session: &Session, id: &str) -> Result<Option<Arc<Job>>, QuarryError>;
    /// Jobs the session's user may see, newest first.
    fn list_jobs(
        &self,
        session: &Session,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QuarryError>;
    /// Cancel a job of the session's user (any job, for admins); false when it had ended.
    fn cancel(&self, session: &Session, id: &str, reason: &str) -> Result<bool, QuarryError>;

    // ---- session settings ----

    /// Make `schema` the session's default schema.
    fn use_schema(&self, session: &Session, schema: &str) -> Result<(), QuarryError>;
    /// Is `key` a setting (`datafusion.*`, `quarry.*`) a session may change?
    fn knows_option(&self, key: &str) -> bool;
    /// `SET key = value` in the session.
    fn set_option(&self, session: &Session, key: &str, value: &str) -> Result<(), QuarryError>;

    // ---- catalog ----

    fn list_sources(&self, session: &Session) -> Result<Vec<Stored<SourceRecord>>, QuarryError>;
    fn get_source(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<Stored<SourceRecord>, QuarryError>;
    async fn create_source(
        &self,
        session: &Session,
        name: &str,
        config: SourceConfig,
        mode: CreateMode,
    ) -> Result<Stored<SourceRecord>, QuarryError>;
    async fn update_source(
        &self,
        session: &Session,
        name: &str,
        config: SourceConfig,
        version: u64,
    ) -> Result<Stored<SourceRecord>, QuarryError>;
    fn drop_source(
        &self,
        session: &Session,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError>;
    /// Catalog schemas the user may see (not `sys`).
    fn list_schemas(&self, session: &Session) -> Result<Vec<Stored<SchemaRecord>>, QuarryError>;
    /// Names of every schema the user may see, `sys` included.
    fn schema_names(&self, session: &Session) -> Vec<String>;
    fn get_schema(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<Stored<SchemaRecord>, QuarryError>;
    fn create_schema(
        &self,
        session: &Session,
        name: &str,
        if_not_exists: bool,
    ) -> Result<bool, QuarryError>;
    fn drop_schema(
        &self,
        session: &Session,
        name: &str,
        cascade: bool,
        version: Option<u64>,
    ) -> Result<(), QuarryError>;
    /// Datasets of a schema (all schemas when None) the user may read.
    fn list_datasets(
        &self,
        session: &Session,
        schema: Option<&str>,
    ) -> Result<Vec<Stored<DatasetRecord>>, QuarryError>;
    fn get_dataset(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    /// Every table and view the user may read, with its columns (for Flight SQL GetTables).
    async fn tables(
        &self,
        session: &Session,
        with_columns: bool,
    ) -> Result<Vec<TableEntry>, QuarryError>;
    async fn create_table(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        request: TableRequest,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    async fn create_view(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        sql: &str,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    async fn update_dataset(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        update: DatasetUpdate,
        version: u64,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    fn drop_dataset(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError>;

    fn health(&self) -> Health;
}

/// Schemas the session's user may see, `sys` included.
fn visible_schemas(engine: &Engine, session: &Session) -> Vec<String> {
    engine
        .datasets
        .visible_schema_names(&Some(engine.access_for(session)))
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

    fn session(&self, principal: &Principal, keep: bool) -> Arc<Session> {
        if keep {
            self.sessions.get_or_create(
                &principal.token,
                &principal.user,
                quarry_catalog::DEFAULT_SCHEMA,
            )
        } else {
            self.new_session(&principal.user)
        }
    }

    fn close_session(&self, session: &Session) {
        self.sessions.remove(&session.id);
    }

    fn access(&self, session: &Session) -> Arc<UserAccess> {
        self.access_for(session)
    }

    async fn submit(
        &self,
        session: &Arc<Session>,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<Arc<Job>, QuarryError> {
        Engine::submit(self, session, sql, parameters).await
    }

    async fn describe(
        &self,
        session: &Arc<Session>,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), QuarryError> {
        Engine::describe(self, session, sql).await
    }

    async fn security(
        &self,
        session: &Arc<Session>,
        statement: SecurityStatement,
    ) -> Result<RecordBatch, QuarryError> {
        let actor = self.access_for(session);
        Engine::run_security(self, session, &actor, statement).await
    }

    async fn reflection(
        &self,
        session: &Arc<Session>,
        statement: crate::sql::reflections::ReflectionStatement,
    ) -> Result<RecordBatch, QuarryError> {
        self.run_reflection(session, statement).await
    }

    fn fetch_timeout(&self) -> Duration {
        Engine::fetch_timeout(self)
    }

    fn get_job(&self, session: &Session, id: &str) -> Result<JobRecord, QuarryError> {
        let record = self
            .jobs
            .record(id)?
            .ok_or_else(|| QuarryError::not_found(format!("job {id} does not exist")))?;
        self.require_job_owner(session, &record.user, id)?;
        Ok(record)
    }

    fn live_job(&self, session: &Session, id: &str) -> Result<Option<Arc<Job>>, QuarryError> {
        let Some(job) = self.jobs.live(id) else {
            return Ok(None);
        };
        self.require_job_owner(session, &job.user(), id)?;
        Ok(Some(job))
    }

    fn list_jobs(
        &self,
        session: &Session,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QuarryError> {
        let access = self.access_for(session);
        if access.admin {
            return self.jobs.list(state, limit);
        }
        let mut mine = self.jobs.list(state, usize::MAX)?;
        mine.retain(|j| access.owns_job(&j.user));
        mine.truncate(limit);
        Ok(mine)
    }

    fn cancel(&self, session: &Session, id: &str, reason: &str) -> Result<bool, QuarryError> {
        match self.live_job(session, id)? {
            Some(job) => Ok(job.cancel(reason)),
            None => {
                // Still say "not found" for jobs that never were, and check ownership.
                self.get_job(session, id)?;
                Ok(false)
            }
        }
    }

    fn use_schema(&self, session: &Session, schema: &str) -> Result<(), QuarryError> {
        Engine::use_schema(self, session, schema)
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

    fn set_option(&self, session: &Session, key: &str, value: &str) -> Result<(), QuarryError> {
        session.set(self.datasets.base_config(), key, value)
    }

    fn list_sources(&self, session: &Session) -> Result<Vec<Stored<SourceRecord>>, QuarryError> {
        Engine::readable_sources(self, &self.access_for(session))
    }

    fn get_source(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
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
        session: &Session,
        name: &str,
        config: SourceConfig,
        mode: CreateMode,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        let actor = self.access_for(session);
        Engine::create_source(self.as_ref(), &actor, name, config, mode).await
    }

    async fn update_source(
        &self,
        session: &Session,
        name: &str,
        config: SourceConfig,
        version: u64,
    ) -> Result<Stored<SourceRecord>, QuarryError> {
        let actor = self.access_for(session);
        Engine::update_source(self.as_ref(), &actor, name, config, version).await
    }

    fn drop_source(
        &self,
        session: &Session,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError> {
        let actor = self.access_for(session);
        Engine::drop_source(self.as_ref(), &actor, name, false, version).map(|_| ())
    }

    fn list_schemas(&self, session: &Session) -> Result<Vec<Stored<SchemaRecord>>, QuarryError> {
        let visible = visible_schemas(self, session);
        let mut schemas = self
            .datasets
            .catalog()
            .list_schemas()
            .map_err(catalog_error)?;
        schemas.retain(|s| visible.contains(&s.record.name));
        Ok(schemas)
    }

    fn schema_names(&self, session: &Session) -> Vec<String> {
        visible_schemas(self, session)
    }

    fn get_schema(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<Stored<SchemaRecord>, QuarryError> {
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

    fn create_schema(
        &self,
        session: &Session,
        name: &str,
        if_not_exists: bool,
    ) -> Result<bool, QuarryError> {
        let actor = self.access_for(session);
        Engine::create_schema(self.as_ref(), &actor, name, if_not_exists)
    }

    fn drop_schema(
        &self,
        session: &Session,
        name: &str,
        cascade: bool,
        version: Option<u64>,
    ) -> Result<(), QuarryError> {
        let actor = self.access_for(session);
        Engine::drop_schema(self.as_ref(), &actor, name, false, cascade, version).map(|_| ())
    }

    fn list_datasets(
        &self,
        session: &Session,
        schema: Option<&str>,
    ) -> Result<Vec<Stored<DatasetRecord>>, QuarryError> {
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
        session: &Session,
        schema: &str,
        name: &str,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
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
        session: &Session,
        with_columns: bool,
    ) -> Result<Vec<TableEntry>, QuarryError> {
        let viewer = Some(self.access_for(session));
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
        session: &Session,
        schema: &str,
        name: &str,
        request: TableRequest,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let actor = self.access_for(session);
        Engine::create_table(self.as_ref(), &actor, schema, name, request, mode).await
    }

    async fn create_view(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        sql: &str,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let actor = self.access_for(session);
        // Unqualified names in the view resolve against the session's schema, or the
        // view's own when the session has none set.
        let context = if session.default_schema() == quarry_catalog::DEFAULT_SCHEMA {
            schema.to_string()
        } else {
            session.default_schema()
        };
        Engine::create_view(self.as_ref(), &actor, schema, name, sql, &context, mode).await
    }

    async fn update_dataset(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        update: DatasetUpdate,
        version: u64,
    ) -> Result<Stored<DatasetRecord>, QuarryError> {
        let actor = self.access_for(session);
        Engine::update_dataset(self.as_ref(), &actor, schema, name, update, version).await
    }

    fn drop_dataset(
        &self,
        session: &Session,
        schema: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError> {
        let actor = self.access_for(session);
        let folder = self
            .datasets
            .catalog()
            .get_dataset(schema, name)
            .ok()
            .flatten()
            .and_then(|stored| crate::engine::managed_folder(&stored.record));
        Engine::drop_dataset(self.as_ref(), &actor, schema, name, None, false, version)?;
        self.purge_in_background(folder.into_iter().collect());
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
}
