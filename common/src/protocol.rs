//! The coordinator<->executor wire contract.
//!
//! Executors register with the coordinator's internal Flight service and heartbeat to it;
//! the coordinator runs tasks on an executor's Flight service with `do_action(RUN_TASK)`,
//! and tasks read each other's output with `do_get(ExchangeTicket)`. Every message is a
//! protobuf message (prost), so fields can be added without breaking older peers.
//!
//! A task is one partition of one stage: its plan (DataFusion protobuf with Quarry's
//! extension nodes) runs partition `partition`, and its output is split by
//! `output_partitioning` into numbered output partitions kept in the executor's exchange
//! store until the query is released. `attempt` makes every retry's output distinct, so a
//! consumer never mixes two attempts of the same task.

use prost::Message;

/// The object store URL of files in executors' data directories.
pub const CLUSTER_FILES_URL: &str = "cluster://data/";

/// Action types on the coordinator's internal service.
pub const ACTION_REGISTER: &str = "quarry.register";
pub const ACTION_HEARTBEAT: &str = "quarry.heartbeat";
pub const ACTION_DEREGISTER: &str = "quarry.deregister";

/// Action types on an executor's Flight service.
pub const ACTION_RUN_TASK: &str = "quarry.run_task";
pub const ACTION_RELEASE_QUERY: &str = "quarry.release_query";
pub const ACTION_STATUS: &str = "quarry.status";
/// Read bytes of a file in the executor's data directory; results are the bytes, in chunks.
pub const ACTION_READ_FILE: &str = "quarry.read_file";
/// Executor → coordinator: the full spec (credentials included) of an object store a
/// task names by URL and fingerprint only.
pub const ACTION_OBJECT_STORE: &str = "quarry.object_store";

#[derive(Clone, PartialEq, Message)]
pub struct ExecutorRegistration {
    #[prost(string, tag = "1")]
    pub executor_id: String,
    /// Where the coordinator and other executors reach this executor's Flight service.
    #[prost(string, tag = "2")]
    pub flight_endpoint: String,
    /// How many tasks may run at once.
    #[prost(uint32, tag = "3")]
    pub slots: u32,
    /// The local data directory this executor serves, if any.
    #[prost(string, tag = "4")]
    pub data_dir: String,
    /// Files under `data_dir`, so scans of them can be placed here.
    #[prost(message, repeated, tag = "5")]
    pub local_files: Vec<LocalFile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LocalFile {
    /// Path relative to the data directory, `/`-separated.
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct RegistrationResponse {
    #[prost(uint64, tag = "1")]
    pub heartbeat_interval_ms: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Heartbeat {
    #[prost(string, tag = "1")]
    pub executor_id: String,
    #[prost(uint32, tag = "2")]
    pub running_tasks: u32,
    #[prost(uint64, tag = "3")]
    pub memory_used_bytes: u64,
    #[prost(uint64, tag = "4")]
    pub exchange_bytes: u64,
    /// Spill files (operators and exchange) on disk now.
    #[prost(uint32, tag = "5")]
    pub spill_files: u32,
    /// What each running task is doing, for the coordinator's watchdog.
    #[prost(message, repeated, tag = "6")]
    pub tasks: Vec<TaskActivityReport>,
    /// Task outputs held in the exchange store.
    #[prost(uint32, tag = "7")]
    pub exchange_outputs: u32,
}

/// One running task as its executor sees it.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct TaskActivityReport {
    #[prost(string, tag = "1")]
    pub query_id: String,
    #[prost(uint32, tag = "2")]
    pub stage_id: u32,
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
    /// Rows that have left any operator of the task so far.
    #[prost(uint64, tag = "5")]
    pub rows: u64,
    /// Time since `rows` last grew (or since the task started), in milliseconds.
    #[prost(uint64, tag = "6")]
    pub idle_ms: u64,
    /// Inputs the task has open and not finished: exchange pieces and scans.
    #[prost(string, repeated, tag = "7")]
    pub waiting_on: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeartbeatResponse {
    /// False when the coordinator does not know this executor (it restarted, or declared
    /// the executor lost): the executor registers again.
    #[prost(bool, tag = "1")]
    pub known: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Deregistration {
    #[prost(string, tag = "1")]
    pub executor_id: String,
}

/// One partition of one stage, ready to run.
#[derive(Clone, PartialEq, Message)]
pub struct TaskDefinition {
    #[prost(string, tag = "1")]
    pub query_id: String,
    #[prost(uint32, tag = "2")]
    pub stage_id: u32,
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
    /// `datafusion_proto::protobuf::PhysicalPlanNode` with Quarry extension nodes.
    #[prost(bytes = "vec", tag = "5")]
    pub plan: Vec<u8>,
    /// `datafusion_proto::protobuf::Partitioning` of the output, evaluated against the
    /// plan's schema; empty means one output partition.
    #[prost(bytes = "vec", tag = "6")]
    pub output_partitioning: Vec<u8>,
    /// DataFusion settings of the session that submitted the query.
    #[prost(message, repeated, tag = "7")]
    pub settings: Vec<Setting>,
    /// Object stores the plan's scans read from.
    #[prost(message, repeated, tag = "8")]
    pub object_stores: Vec<ObjectStoreSpec>,
    /// The W3C `traceparent` of the coordinator's span of this task; empty when the query
    /// is not traced.
    #[prost(string, tag = "9")]
    pub trace_context: String,
    /// Output columns whose smallest and largest values the task reports, for dynamic
    /// filters on the scans of later stages (see [`crate::column_bounds`]).
    #[prost(uint32, repeated, tag = "10")]
    pub bound_columns: Vec<u32>,
    /// When the task's whole output takes at most this many bytes, it comes back in the
    /// result too (`TaskResult::inline_pieces`), so its reader needs no fetch; 0: never.
    #[prost(uint64, tag = "11")]
    pub inline_output_limit: u64,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Message)]
pub struct Setting {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Which object store an executor asks for.
#[derive(Clone, PartialEq, Message)]
pub struct ObjectStoreRequest {
    #[prost(string, tag = "1")]
    pub url: String,
}

/// How to reach an object store: its URL (`s3://bucket`) and client options. Tasks carry
/// only a reference (the URL and a fingerprint of the options, see
/// [`crate::object_stores::reference`]); executors fetch the rest over the authenticated
/// internal channel and keep it in memory.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct ObjectStoreSpec {
    #[prost(string, tag = "1")]
    pub url: String,
    #[prost(message, repeated, tag = "2")]
    pub options: Vec<Setting>,
}

/// What a finished task reports.
#[derive(Clone, PartialEq, Message)]
pub struct TaskResult {
    #[prost(string, tag = "1")]
    pub executor_id: String,
    /// Rows and bytes written to each output partition.
    #[prost(uint64, repeated, tag = "2")]
    pub output_rows: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub output_bytes: Vec<u64>,
    #[prost(uint64, tag = "4")]
    pub elapsed_ms: u64,
    /// Per-operator metrics of the task's plan, as JSON (see `metrics::OperatorMetrics`).
    #[prost(string, tag = "5")]
    pub metrics_json: String,
    /// The smallest and largest value of each of the task's `bound_columns` it could
    /// measure.
    #[prost(message, repeated, tag = "6")]
    pub column_bounds: Vec<ColumnBound>,
    /// Each output piece as an Arrow IPC stream, when the output was within the task's
    /// `inline_output_limit`; empty otherwise.
    #[prost(bytes = "bytes", repeated, tag = "7")]
    pub inline_pieces: Vec<bytes::Bytes>,
}

/// The range of one output column over a task's output rows (nulls left out).
#[derive(Clone, PartialEq, Message)]
pub struct ColumnBound {
    #[prost(uint32, tag = "1")]
    pub column: u32,
    /// `datafusion.ScalarValue` protobuf; both empty when the column had no value.
    #[prost(bytes = "vec", tag = "2")]
    pub min: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub max: Vec<u8>,
}

/// Names one output partition of one attempt of one task.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct ExchangeTicket {
    #[prost(string, tag = "1")]
    pub query_id: String,
    #[prost(uint32, tag = "2")]
    pub stage_id: u32,
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
    #[prost(uint32, tag = "5")]
    pub output_partition: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ReleaseQuery {
    #[prost(string, tag = "1")]
    pub query_id: String,
}

/// An executor's view of itself, for `sys.nodes` and tests.
#[derive(Clone, PartialEq, Message)]
pub struct ExecutorStatus {
    #[prost(string, tag = "1")]
    pub executor_id: String,
    #[prost(uint32, tag = "2")]
    pub running_tasks: u32,
    #[prost(uint64, tag = "3")]
    pub exchange_bytes: u64,
    #[prost(uint32, tag = "4")]
    pub exchange_entries: u32,
    #[prost(uint64, tag = "5")]
    pub memory_used_bytes: u64,
    #[prost(uint32, tag = "6")]
    pub spill_files: u32,
}

/// Decode a protobuf message, naming what it was in the error.
pub fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, crate::QuarryError> {
    M::decode(bytes).map_err(|e| crate::QuarryError::invalid(format!("malformed {what}: {e}")))
}

/// Why a task failed, carried in the gRPC status details of a failed `RUN_TASK`.
#[derive(Clone, PartialEq, Message)]
pub struct TaskFailure {
    /// An [`crate::ErrorCode`] name.
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub message: String,
    /// Set when the task could not read an input piece: that producer must be recomputed.
    #[prost(message, optional, tag = "3")]
    pub fetch_failed: Option<FetchFailure>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FetchFailure {
    #[prost(string, tag = "1")]
    pub executor_id: String,
    #[prost(uint32, tag = "2")]
    pub stage_id: u32,
    #[prost(uint32, tag = "3")]
    pub partition: u32,
}

/// A byte range of a file in an executor's data directory.
#[derive(Clone, PartialEq, Message)]
pub struct ReadFile {
    /// Relative to the data directory, `/`-separated.
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint64, tag = "2")]
    pub start: u64,
    /// Exclusive.
    #[prost(uint64, tag = "3")]
    pub end: u64,
}
