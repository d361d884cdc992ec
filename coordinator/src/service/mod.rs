//! [`QueryService`]: the one door every frontend (Flight SQL, REST and the console, and
//! any to come) goes through. Frontends hold an `Arc<dyn QueryService>` and nothing else:
//! they turn their protocol into these calls and the answers back into their protocol,
//! and never reach into sessions, jobs, the catalog or the scheduler themselves.
//!
//! Every call names the session it is made in; the service decides what that session's
//! user may do (privileges, ownership of jobs) so no frontend can forget a check.
//!
//! This module owns the trait and the types frontends see: opaque [`SessionHandle`]s and
//! [`JobHandle`]s (`handles.rs`), catalog entries and request types. It holds no state and
//! no policy: the engine implements the trait (`engine/front_door.rs`). Frontends may import
//! from here and from `access::auth` (credentials) only; a test keeps modules from
//! importing each other in a circle (`tests/module_cycles.rs`).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use quarry_catalog::{DatasetRecord, JobRecord, SchemaRecord, SourceConfig, SourceRecord, Stored};
use quarry_common::QuarryError;

pub use crate::access::UserAccess;
pub use crate::access::auth::{Credentials, Principal, ScramSecret};
pub use crate::datasets::schema_codec::decode_schema;
pub use crate::engine::catalog_ops::{CreateMode, DatasetUpdate, TableRequest};
pub use crate::scheduler::{QueryProfile, StageProfile, TaskProfile};
/// The PostgreSQL version the PostgreSQL door reports (clients choose their SQL by it),
/// and PostgreSQL's settings as the server has them.
pub use crate::sql::pg_functions::{SERVER_VERSION, SETTING_DEFAULTS};
pub use crate::sql::reflections::ReflectionStatement;
pub use crate::sql::security::SecurityStatement;
pub use handles::{Frontend, JobHandle, JobState, Prepared, SessionHandle, job_error};

mod handles;

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
    /// What a SCRAM-SHA-256 exchange for `user` checks the client's proof against (a
    /// made-up secret for an unknown user); refused after too many failed logins.
    async fn scram_secret(&self, user: &str) -> Result<ScramSecret, QuarryError>;
    /// How a SCRAM exchange ended; failures count like failed password logins. A
    /// successful one yields the principal a session is opened for.
    fn scram_finished(&self, user: &str, succeeded: bool) -> Option<Principal>;
    /// The session of a principal coming in by `frontend`: kept under its token, or
    /// (`keep` false) a one-off.
    fn session(&self, principal: &Principal, keep: bool, frontend: Frontend) -> SessionHandle;
    fn close_session(&self, session: &SessionHandle);
    /// Revoke the token a session is kept under (with authentication on) and forget the
    /// session; a one-off session has nothing to revoke.
    async fn logout(&self, session: &SessionHandle) -> Result<(), QuarryError>;
    /// What the session's user may do now.
    fn access(&self, session: &SessionHandle) -> Arc<UserAccess>;

    // ---- statements and jobs ----

    /// Start SQL as a job; planning errors are returned.
    async fn submit(
        &self,
        session: &SessionHandle,
        sql: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<JobHandle, QuarryError>;
    /// Result and parameter schemas of a statement, without running it.
    async fn describe(
        &self,
        session: &SessionHandle,
        sql: &str,
    ) -> Result<(SchemaRef, SchemaRef), QuarryError>;
    /// Run a statement about users, roles, grants or tokens (for REST, which does not
    /// spell them in SQL); its result rows.
    async fn security(
        &self,
        session: &SessionHandle,
        statement: SecurityStatement,
    ) -> Result<RecordBatch, QuarryError>;
    /// Run a reflection statement (for REST, which does not spell them in SQL); its
    /// result rows.
    async fn reflection(
        &self,
        session: &SessionHandle,
        statement: ReflectionStatement,
    ) -> Result<RecordBatch, QuarryError>;
    /// How long a client that reads results later has to start reading.
    fn fetch_timeout(&self) -> Duration;

    // ---- prepared statements (kept in the session) ----

    /// Prepare a statement: its handle and its result and parameter schemas.
    async fn prepare(&self, session: &SessionHandle, sql: &str) -> Result<Prepared, QuarryError>;
    /// The schema of a prepared statement's parameters.
    fn prepared_parameters(
        &self,
        session: &SessionHandle,
        handle: &str,
    ) -> Result<SchemaRef, QuarryError>;
    /// Bind parameters to a prepared statement, for its next runs.
    fn bind(
        &self,
        session: &SessionHandle,
        handle: &str,
        parameters: Vec<ScalarValue>,
    ) -> Result<(), QuarryError>;
    /// Run a prepared statement with `parameters`, or those last bound.
    async fn submit_prepared(
        &self,
        session: &SessionHandle,
        handle: &str,
        parameters: Option<Vec<ScalarValue>>,
    ) -> Result<JobHandle, QuarryError>;
    fn close_prepared(&self, session: &SessionHandle, handle: &str);
    /// A job's record, if the session's user may see it.
    fn get_job(&self, session: &SessionHandle, id: &str) -> Result<JobRecord, QuarryError>;
    /// A job whose results are still kept, if the session's user may read them.
    fn live_job(&self, session: &SessionHandle, id: &str)
    -> Result<Option<JobHandle>, QuarryError>;
    /// Jobs the session's user may see, newest first.
    fn list_jobs(
        &self,
        session: &SessionHandle,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QuarryError>;
    /// Cancel a job of the session's user (any job, for admins); false when it had ended.
    fn cancel(&self, session: &SessionHandle, id: &str, reason: &str) -> Result<bool, QuarryError>;

    // ---- session settings ----

    /// Make `schema` the session's default schema.
    fn use_schema(&self, session: &SessionHandle, schema: &str) -> Result<(), QuarryError>;
    /// Is `key` a setting (`datafusion.*`, `quarry.*`) a session may change?
    fn knows_option(&self, key: &str) -> bool;
    /// The schema unqualified names resolve against.
    fn default_schema(&self, session: &SessionHandle) -> String;
    /// The settings the session changed from the defaults.
    fn settings(&self, session: &SessionHandle) -> std::collections::BTreeMap<String, String>;
    /// Forget a `SET` in the session: the setting is the default again.
    fn reset_option(&self, session: &SessionHandle, key: &str);
    /// `SET key = value` in the session.
    fn set_option(
        &self,
        session: &SessionHandle,
        key: &str,
        value: &str,
    ) -> Result<(), QuarryError>;

    // ---- catalog ----

    fn list_sources(
        &self,
        session: &SessionHandle,
    ) -> Result<Vec<Stored<SourceRecord>>, QuarryError>;
    fn get_source(
        &self,
        session: &SessionHandle,
        name: &str,
    ) -> Result<Stored<SourceRecord>, QuarryError>;
    async fn create_source(
        &self,
        session: &SessionHandle,
        name: &str,
        config: SourceConfig,
        mode: CreateMode,
    ) -> Result<Stored<SourceRecord>, QuarryError>;
    async fn update_source(
        &self,
        session: &SessionHandle,
        name: &str,
        config: SourceConfig,
        version: u64,
    ) -> Result<Stored<SourceRecord>, QuarryError>;
    async fn drop_source(
        &self,
        session: &SessionHandle,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError>;
    /// Catalog schemas the user may see (not `sys`).
    fn list_schemas(
        &self,
        session: &SessionHandle,
    ) -> Result<Vec<Stored<SchemaRecord>>, QuarryError>;
    /// Names of every schema the user may see, `sys` included.
    fn schema_names(&self, session: &SessionHandle) -> Vec<String>;
    fn get_schema(
        &self,
        session: &SessionHandle,
        name: &str,
    ) -> Result<Stored<SchemaRecord>, QuarryError>;
    async fn create_schema(
        &self,
        session: &SessionHandle,
        name: &str,
        if_not_exists: bool,
    ) -> Result<bool, QuarryError>;
    async fn drop_schema(
        &self,
        session: &SessionHandle,
        name: &str,
        cascade: bool,
        version: Option<u64>,
    ) -> Result<(), QuarryError>;
    /// Datasets of a schema (all schemas when None) the user may read.
    fn list_datasets(
        &self,
        session: &SessionHandle,
        schema: Option<&str>,
    ) -> Result<Vec<Stored<DatasetRecord>>, QuarryError>;
    fn get_dataset(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    /// Every table and view the user may read, with its columns (for Flight SQL GetTables).
    async fn tables(
        &self,
        session: &SessionHandle,
        with_columns: bool,
    ) -> Result<Vec<TableEntry>, QuarryError>;
    async fn create_table(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        request: TableRequest,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    async fn create_view(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        sql: &str,
        mode: CreateMode,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    async fn update_dataset(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        update: DatasetUpdate,
        version: u64,
    ) -> Result<Stored<DatasetRecord>, QuarryError>;
    async fn drop_dataset(
        &self,
        session: &SessionHandle,
        schema: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<(), QuarryError>;

    fn health(&self) -> Health;
    /// This coordinator's metrics in the OpenMetrics text format (`docs/metrics.md`).
    async fn metrics(&self) -> Result<String, QuarryError>;

    /// The catalog as of one moment, as a backup file's bytes (admins only); job history
    /// only with `with_jobs`.
    async fn backup(
        &self,
        session: &SessionHandle,
        with_jobs: bool,
    ) -> Result<Vec<u8>, QuarryError>;
}

/// A session of `user` for a client in this process, which vouches for the user itself
/// (tests, the in-process SQL logic tests); remote clients authenticate instead.
pub fn in_process_session(service: &Arc<dyn QueryService>, user: &str) -> SessionHandle {
    let principal = Principal {
        user: user.to_string(),
        token: String::new(),
        issued: false,
    };
    service.session(&principal, false, Frontend::InProcess)
}
