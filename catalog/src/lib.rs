//! Quarry's catalog: the metadata store on sled.
//!
//! ```text
//!   Catalog (typed, versioned records)  ──►  KvStore trait  ──►  SledStore (one tree per keyspace)
//! ```
//!
//! Records carry an explicit format version and a record version. Creates, updates and
//! deletes are compare-and-swap operations flushed to disk before they return, so an
//! acknowledged write survives a crash, and an update naming a version that is no longer
//! current is refused instead of silently overwriting a concurrent change.

mod access;
mod backup;
mod catalog;
mod error;
mod jobs;
mod records;
mod reflection_records;
mod reflections;
mod store;

pub use access::describe_securable;
pub use backup::{
    BACKUP_FORMAT, Backup, backup_spaces, read_backup, restore_backup, write_backup,
    write_backup_file,
};
pub use catalog::{CATALOG_NAME, Catalog, DEFAULT_SCHEMA, SYSTEM_SCHEMA, now_ms};
pub use error::{CatalogError, ObjectKind};
pub use records::{
    DatasetDefinition, DatasetRecord, FORMAT_VERSION, GrantRecord, GranteeKind, JobError,
    JobRecord, Privilege, RoleRecord, S3Config, SchemaRecord, SecurableKind, SourceConfig,
    SourceRecord, Stored, TableDefinition, TokenRecord, UserRecord, ViewDefinition,
};
pub use reflection_records::{
    AggregateShape, Dimension, InputSnapshot, Materialization, Measure, MeasureFunction,
    ReflectionKind, ReflectionPolicy, ReflectionRecord, Refresh,
};
pub use reflections::PolicyOn;
pub use store::{CasMismatch, Keyspace, KvStore, SledStore, observe_durable_writes};
