//! The records the catalog keeps. They are the on-disk format: change them only in
//! backwards-compatible ways (new optional fields), or bump [`FORMAT_VERSION`] and migrate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The newest record format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A record as stored: the payload plus the bookkeeping every record carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored<T> {
    /// On-disk format of this record.
    pub format: u32,
    /// Starts at 1 and grows by one on every update; updates name the version they read.
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub record: T,
}

/// A place data lives: a local directory or an S3 bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    pub config: SourceConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    /// Files under a directory of the machines running Quarry.
    Local {
        root: String,
        /// Managed tables may be created in it (`WITH (writable = true)`).
        #[serde(default)]
        writable: bool,
    },
    /// Objects in an S3 (or S3-protocol) bucket.
    S3(S3Config),
    /// Files in the data directories of the executors (`quarry executor --data-dir`),
    /// each scanned by an executor that holds it.
    Cluster {},
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-protocol servers.
    #[serde(default)]
    pub path_style: bool,
    /// Allow plain http endpoints.
    #[serde(default)]
    pub allow_http: bool,
    /// Managed tables may be created in it (`WITH (writable = true)`).
    #[serde(default)]
    pub writable: bool,
}

impl SourceConfig {
    /// May managed tables be written in this source?
    pub fn writable(&self) -> bool {
        match self {
            SourceConfig::Local { writable, .. } => *writable,
            SourceConfig::S3(s3) => s3.writable,
            SourceConfig::Cluster {} => false,
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// A namespace for datasets (`demo` in `demo.orders`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaRecord {
    pub name: String,
}

/// A table promoted from files, or a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub schema: String,
    pub name: String,
    pub definition: DatasetDefinition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DatasetDefinition {
    Table(TableDefinition),
    View(ViewDefinition),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDefinition {
    /// The source the files belong to; absent for `CREATE EXTERNAL TABLE` locations.
    #[serde(default)]
    pub source: Option<String>,
    /// The path inside the source, as the user wrote it.
    #[serde(default)]
    pub path: Option<String>,
    /// Resolved URL of the file or folder (`file:///...`, `s3://bucket/...`).
    pub location: String,
    /// `parquet`, `csv` or `json`.
    pub format: String,
    /// Format options (`format.has_header` = `true`, ...), as DataFusion names them.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Only files with this extension are read (`.parquet`); empty reads every file.
    #[serde(default)]
    pub file_extension: String,
    /// Hive-style `key=value` folder columns, in folder order.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// The table's Arrow schema (file columns then partition columns), encoded by the planner.
    pub arrow_schema: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDefinition {
    pub sql: String,
    /// The schema unqualified names in `sql` resolve against.
    #[serde(default)]
    pub default_schema: Option<String>,
}

/// A login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// Hex of the salted password hash.
    pub password_hash: String,
    pub salt: String,
    /// Roles granted to the user.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A named set of privileges that users are granted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: String,
}

/// Who a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GranteeKind {
    User,
    Role,
}

impl GranteeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GranteeKind::User => "user",
            GranteeKind::Role => "role",
        }
    }
}

/// What a grant is on. Datasets are named `schema.name`; the system has no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurableKind {
    System,
    Source,
    Schema,
    Dataset,
}

impl SecurableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurableKind::System => "system",
            SecurableKind::Source => "source",
            SecurableKind::Schema => "schema",
            SecurableKind::Dataset => "dataset",
        }
    }
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    Select,
    Insert,
    Alter,
    CreateTable,
    ManageGrants,
}

impl Privilege {
    pub const ALL: [Privilege; 5] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Alter,
        Privilege::CreateTable,
        Privilege::ManageGrants,
    ];

    /// The name as SQL spells it.
    pub fn as_sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Alter => "ALTER",
            Privilege::CreateTable => "CREATE TABLE",
            Privilege::ManageGrants => "MANAGE GRANTS",
        }
    }
}

/// The privileges one grantee holds on one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub grantee_kind: GranteeKind,
    pub grantee: String,
    pub object_kind: SecurableKind,
    /// Empty for the system.
    pub object: String,
    pub privileges: Vec<Privilege>,
}

/// A bearer token; the key is a hash of the token, never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user: String,
    pub expires_ms: u64,
    /// Personal access tokens have an id (to list and revoke them by) and a name.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub created_ms: u64,
}

/// One query's history: what ran, how it went, and its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub sql: String,
    pub user: String,
    pub state: String,
    pub submitted_ms: u64,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    #[serde(default)]
    pub row_count: u64,
    /// Progress: tasks finished of tasks planned.
    #[serde(default)]
    pub tasks_done: u64,
    #[serde(default)]
    pub tasks_total: u64,
    #[serde(default)]
    pub error: Option<JobError>,
    /// Stages, tasks and their metrics, as the coordinator records them.
    #[serde(default)]
    pub profile: serde_json::Value,
    /// The reflections the query's planning considered: `name: chosen ...` or why not.
    #[serde(default)]
    pub reflections: Vec<String>,
    /// When the oldest data of the reflections it used was read (ms since the epoch);
    /// None when it read only base data.
    #[serde(default)]
    pub data_as_of_ms: Option<u64>,
    /// The aggregates it ran that a reflection could serve, for recommendations.
    #[serde(default)]
    pub aggregates: Vec<crate::reflection_records::AggregateShape>,
    /// The door the statement came in by: `flight_sql`, `rest`, `pgwire`, `in_process`, or
    /// empty for the engine's own jobs (reflection refreshes) and older records.
    #[serde(default)]
    pub frontend: String,
    /// The OpenTelemetry trace of the job, when traces are exported (`--otlp-endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// "served from the results cache (the result of job ...)" when it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_cache: Option<String>,
    /// Where its time went, in microseconds: parse, plan, admission, schedule,
    /// first_batch, last_batch (each from submission).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub timings_us: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}
