//! What can go wrong inside the coordinator that is not a query's own failure, and the one
//! mapping of it to the codes clients see. Users' mistakes (bad SQL, a missing table, a
//! forbidden read) are written as `QuarryError`s where they are found; DataFusion's errors
//! are classified in `quarry_common::error`. Everything here is either the machine's or the
//! operator's to fix (a full disk, a busy port, a bad certificate) or a bug of Quarry's,
//! which a client sees only as an incident id (`QuarryError::for_client`).

use std::fmt;

use arrow::error::ArrowError;
use quarry_catalog::CatalogError;
use quarry_common::{ErrorCode, QuarryError};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The caller's mistake or a refusal (a missing table, a forbidden change), written
    /// where it was found; it reaches the client as it is.
    #[error(transparent)]
    Refused(#[from] QuarryError),

    #[error(transparent)]
    Catalog(#[from] CatalogError),

    /// A managed table's log or files.
    #[error("table log: {0}")]
    Delta(#[from] deltalake_core::DeltaTableError),

    /// A file the coordinator writes or reads itself (demo data, results, its directory).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read the {what} listening address: {source}")]
    Listener {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot start the {what}: {detail}")]
    Runtime { what: &'static str, detail: String },

    #[error("the operating system has no randomness to give")]
    NoRandomness,

    /// The operator's certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),

    /// A result Quarry builds (its columns disagree with its schema).
    #[error("cannot build {what}: {source}")]
    Batch {
        what: &'static str,
        #[source]
        source: ArrowError,
    },

    /// Results or catalog records cannot be turned into bytes for a client or back.
    #[error("cannot {action} {format}: {detail}")]
    Codec {
        action: &'static str,
        format: &'static str,
        detail: String,
    },

    /// A data type stored in the catalog that this build cannot read.
    #[error("a stored table schema is unreadable: {0}")]
    StoredSchema(String),

    /// An executor answered with something that is not a task result.
    #[error("malformed task result: {0}")]
    TaskResult(String),

    /// Work on another task or thread panicked or was lost.
    #[error("{what} failed unexpectedly: {detail}")]
    Crashed { what: &'static str, detail: String },

    /// Something Quarry itself guarantees did not hold.
    #[error("{0}")]
    Invariant(String),
}

impl CoordinatorError {
    pub fn io(what: impl fmt::Display, source: std::io::Error) -> Self {
        CoordinatorError::Io {
            what: what.to_string(),
            source,
        }
    }

    pub fn crashed(what: &'static str, detail: impl fmt::Display) -> Self {
        CoordinatorError::Crashed {
            what,
            detail: detail.to_string(),
        }
    }

    pub fn encode(format: &'static str, detail: impl fmt::Display) -> Self {
        CoordinatorError::Codec {
            action: "encode",
            format,
            detail: detail.to_string(),
        }
    }

    pub fn decode(format: &'static str, detail: impl fmt::Display) -> Self {
        CoordinatorError::Codec {
            action: "decode",
            format,
            detail: detail.to_string(),
        }
    }

    pub fn batch(what: &'static str) -> impl FnOnce(ArrowError) -> Self {
        move |source| CoordinatorError::Batch { what, source }
    }

    pub fn invariant(what: impl Into<String>) -> Self {
        CoordinatorError::Invariant(what.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::Refused(e) => e.code,
            CoordinatorError::Catalog(e) => catalog_code(e),
            CoordinatorError::Delta(e) => delta_code(e),
            CoordinatorError::Io { source, .. } => ErrorCode::of_io(source),
            // The machine refused (ports, threads, entropy): not a bug, not the caller's.
            CoordinatorError::Listener { .. }
            | CoordinatorError::Runtime { .. }
            | CoordinatorError::NoRandomness => ErrorCode::Unavailable,
            CoordinatorError::Tls(_) => ErrorCode::InvalidArgument,
            CoordinatorError::Batch { .. }
            | CoordinatorError::Codec { .. }
            | CoordinatorError::StoredSchema(_)
            | CoordinatorError::TaskResult(_)
            | CoordinatorError::Crashed { .. }
            | CoordinatorError::Invariant(_) => ErrorCode::Internal,
        }
    }
}

fn delta_code(e: &deltalake_core::DeltaTableError) -> ErrorCode {
    use deltalake_core::DeltaTableError as E;
    match e {
        E::ObjectStore { source } => match source {
            object_store::Error::NotFound { .. } => ErrorCode::NotFound,
            object_store::Error::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            object_store::Error::Unauthenticated { .. } => ErrorCode::Unauthenticated,
            _ => ErrorCode::Unavailable,
        },
        E::Io { source } => ErrorCode::of_io(source),
        E::NotATable(_) | E::InvalidTableLocation(_) => ErrorCode::NotFound,
        E::InvalidVersion(_) | E::InvalidDateTimeString { .. } | E::SchemaMismatch { .. } => {
            ErrorCode::InvalidArgument
        }
        E::VersionAlreadyExists(_) | E::VersionMismatch(..) => ErrorCode::Conflict,
        E::MissingFeature { .. } | E::UnsupportedColumnMapping { .. } => ErrorCode::Unimplemented,
        // A log or data file that cannot be read (damaged, truncated, hand-edited): the
        // table's fault, not Quarry's; ErrorCode's "unreadable input data".
        E::KernelError(_)
        | E::Kernel { .. }
        | E::Parquet { .. }
        | E::Arrow { .. }
        | E::InvalidJsonLog { .. }
        | E::InvalidStatsJson { .. }
        | E::InvalidData { .. }
        | E::NoSchema
        | E::MetadataError(_) => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

fn catalog_code(e: &CatalogError) -> ErrorCode {
    match e {
        CatalogError::NotFound { .. } => ErrorCode::NotFound,
        CatalogError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
        CatalogError::Conflict { .. } => ErrorCode::Conflict,
        CatalogError::InUse { .. } | CatalogError::InvalidName { .. } | CatalogError::Backup(_) => {
            ErrorCode::InvalidArgument
        }
        // The machine's fault (a full or failing disk, a newer Quarry's catalog, a catalog
        // another process holds), not a bug: the operator must see what it is.
        CatalogError::NewerFormat { .. }
        | CatalogError::Storage { .. }
        | CatalogError::Io { .. } => ErrorCode::Unavailable,
        CatalogError::Corrupt { .. } => ErrorCode::Internal,
    }
}

impl From<CoordinatorError> for QuarryError {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::Refused(e) => e,
            e => QuarryError::new(e.code(), e.to_string()),
        }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        QuarryError::from(e).for_client().to_status()
    }
}

/// A catalog failure as clients see it (the closure form of `From`, which the orphan rule
/// does not allow between two other crates' types).
pub(crate) fn catalog_error(e: CatalogError) -> QuarryError {
    CoordinatorError::from(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_catalog::ObjectKind;

    #[test]
    fn each_kind_maps_to_its_code_once() {
        let cases = [
            (
                CoordinatorError::io(
                    "cannot write results",
                    std::io::Error::from(std::io::ErrorKind::StorageFull),
                ),
                ErrorCode::ResourceExhausted,
            ),
            (
                CoordinatorError::Listener {
                    what: "Flight SQL",
                    source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
                },
                ErrorCode::Unavailable,
            ),
            (
                CoordinatorError::Tls("no private key".into()),
                ErrorCode::InvalidArgument,
            ),
            (
                CoordinatorError::Catalog(CatalogError::Conflict {
                    kind: ObjectKind::Source,
                    name: "s".into(),
                    expected: 1,
                    found: 2,
                }),
                ErrorCode::Conflict,
            ),
            (
                CoordinatorError::Catalog(CatalogError::AlreadyExists {
                    kind: ObjectKind::Dataset,
                    name: "t".into(),
                }),
                ErrorCode::AlreadyExists,
            ),
            (CoordinatorError::encode("JSON", "x"), ErrorCode::Internal),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let mapped = QuarryError::from(error);
            assert_eq!(mapped.code, code, "{text}");
            assert_eq!(mapped.message, text);
        }
    }

    #[test]
    fn bugs_reach_grpc_clients_as_incidents() {
        let status = tonic::Status::from(CoordinatorError::invariant("stage 7 is not in the plan"));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("stage 7"),
            "{}",
            status.message()
        );
    }
}
