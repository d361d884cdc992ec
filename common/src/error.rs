//! Error codes shared by every frontend, and the one mapping from them to HTTP and gRPC.
//!
//! Internals never leak into client errors: a client sees a code and a message written
//! for people. DataFusion errors are classified here once (plan errors are the user's,
//! internal errors are ours).

use std::fmt;

use datafusion::error::DataFusionError;
use serde::{Deserialize, Serialize};

/// What went wrong, in terms a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Malformed SQL, an unknown column, a bad option value, unreadable input data.
    InvalidArgument,
    /// A table, source, schema, job or file that does not exist.
    NotFound,
    AlreadyExists,
    /// A concurrent change won; re-read and retry.
    Conflict,
    Unauthenticated,
    PermissionDenied,
    /// No executor is available, or an executor was lost and retries ran out.
    Unavailable,
    Cancelled,
    ResourceExhausted,
    DeadlineExceeded,
    Unimplemented,
    /// A bug in Quarry.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The code of a file system failure: a full disk is RESOURCE_EXHAUSTED and other
    /// failures of the machine UNAVAILABLE, not bugs of Quarry's.
    pub fn of_io(e: &std::io::Error) -> ErrorCode {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::OutOfMemory => {
                ErrorCode::ResourceExhausted
            }
            ErrorKind::NotFound => ErrorCode::NotFound,
            _ => ErrorCode::Unavailable,
        }
    }

    pub fn parse(s: &str) -> ErrorCode {
        match s {
            "INVALID_ARGUMENT" => ErrorCode::InvalidArgument,
            "NOT_FOUND" => ErrorCode::NotFound,
            "ALREADY_EXISTS" => ErrorCode::AlreadyExists,
            "CONFLICT" => ErrorCode::Conflict,
            "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
            "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
            "UNAVAILABLE" => ErrorCode::Unavailable,
            "CANCELLED" => ErrorCode::Cancelled,
            "RESOURCE_EXHAUSTED" => ErrorCode::ResourceExhausted,
            "DEADLINE_EXCEEDED" => ErrorCode::DeadlineExceeded,
            "UNIMPLEMENTED" => ErrorCode::Unimplemented,
            _ => ErrorCode::Internal,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => 409,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::Unavailable => 503,
            // The query is gone: cancelled by someone, its results will not come.
            ErrorCode::Cancelled => 410,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::DeadlineExceeded => 504,
            ErrorCode::Unimplemented => 501,
            ErrorCode::Internal => 500,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Conflict => tonic::Code::Aborted,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Cancelled => tonic::Code::Cancelled,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Unimplemented => tonic::Code::Unimplemented,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            tonic::Code::Cancelled => ErrorCode::Cancelled,
            tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            tonic::Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            tonic::Code::Unimplemented => ErrorCode::Unimplemented,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error every client-facing path returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct QuarryError {
    pub code: ErrorCode,
    pub message: String,
}

pub type QuarryResult<T> = std::result::Result<T, QuarryError>;

impl QuarryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        QuarryError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Cancelled, message)
    }

    /// The error as a client may see it: a bug's text stays in this process's log, under
    /// an incident id the client is given instead.
    pub fn for_client(&self) -> QuarryError {
        if self.code != ErrorCode::Internal || self.message.starts_with(INCIDENT_PREFIX) {
            return QuarryError::new(self.code, shortened(&self.message));
        }
        let incident = uuid::Uuid::new_v4().simple().to_string();
        let incident = &incident[..12];
        tracing::error!(incident, "internal error: {}", self.message);
        QuarryError::new(
            ErrorCode::Internal,
            format!("{INCIDENT_PREFIX}{incident}); the server log has the details"),
        )
    }

    /// A file system failure, classified by its kind: a full disk is RESOURCE_EXHAUSTED
    /// and other failures of the machine UNAVAILABLE, not bugs of Quarry's.
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> Self {
        QuarryError::new(ErrorCode::of_io(e), format!("{what}: {e}"))
    }

    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code.grpc_code(), self.message.clone())
    }

    pub fn from_status(status: &tonic::Status) -> Self {
        QuarryError::new(
            ErrorCode::from_grpc(status.code()),
            status.message().to_string(),
        )
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<QuarryError> for tonic::Status {
    fn from(e: QuarryError) -> Self {
        e.to_status()
    }
}

const INCIDENT_PREFIX: &str = "an internal error occurred (incident ";

/// The longest message a client is sent, in bytes of UTF-8: errors that quote what a
/// client sent (a string literal, a name) must not echo megabytes back, and gRPC carries
/// the message percent-encoded in a header (up to three bytes per byte) that HTTP/2 peers
/// cap at 16 KiB.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 2_000;

/// `message`, cut to [`MAX_CLIENT_MESSAGE_BYTES`] (on a character boundary) with a note of
/// how much was left out.
pub fn shortened(message: &str) -> String {
    if message.len() <= MAX_CLIENT_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut cut = MAX_CLIENT_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… ({} more characters)",
        &message[..cut],
        message[cut..].chars().count()
    )
}

impl From<DataFusionError> for QuarryError {
    fn from(e: DataFusionError) -> Self {
        QuarryError::new(classify(&e), describe(&e))
    }
}

impl From<QuarryError> for DataFusionError {
    fn from(e: QuarryError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// The user-facing text of a DataFusion error: its Display, without backtraces, and
/// with SQL parser errors unwrapped from their Debug form.
pub fn describe(e: &DataFusionError) -> String {
    match e {
        DataFusionError::SQL(parser_error, _) => {
            let text = parser_error.to_string();
            let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
            format!("SQL error: {text}")
        }
        DataFusionError::Diagnostic(_, inner) => describe(inner),
        DataFusionError::Shared(inner) => describe(inner),
        DataFusionError::Context(ctx, inner) => format!("{ctx}: {}", describe(inner)),
        DataFusionError::External(inner) => match inner.downcast_ref::<QuarryError>() {
            Some(q) => q.message.clone(),
            None => inner.to_string(),
        },
        DataFusionError::Collection(errs) => match errs.first() {
            Some(first) => describe(first),
            None => e.strip_backtrace(),
        },
        DataFusionError::Internal(msg) => format!("Internal error: {msg}"),
        _ => e.strip_backtrace(),
    }
}

/// Which code a DataFusion error deserves.
pub fn classify(e: &DataFusionError) -> ErrorCode {
    match e {
        DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => ErrorCode::InvalidArgument,
        DataFusionError::Plan(msg) => {
            if is_missing_object(msg) {
                ErrorCode::NotFound
            } else {
                ErrorCode::InvalidArgument
            }
        }
        DataFusionError::NotImplemented(_) => ErrorCode::Unimplemented,
        DataFusionError::Execution(msg) => {
            if is_missing_object(msg) {
                ErrorCode::NotFound
            } else {
                ErrorCode::InvalidArgument
            }
        }
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ResourceExhausted,
        DataFusionError::ObjectStore(store_error) => store_code(store_error),
        DataFusionError::ParquetError(_) | DataFusionError::ArrowError(..) => {
            ErrorCode::InvalidArgument
        }
        DataFusionError::IoError(io) => io_code(io),
        DataFusionError::External(inner) => {
            if let Some(q) = inner.downcast_ref::<QuarryError>() {
                q.code
            } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                classify(df)
            } else if let Some(store) = inner.downcast_ref::<object_store::Error>() {
                store_code(store)
            } else if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                io_code(io)
            } else {
                ErrorCode::Internal
            }
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(inner)
        }
        DataFusionError::Shared(inner) => classify(inner),
        DataFusionError::Collection(errs) => errs
            .first()
            .map(classify)
            .unwrap_or(ErrorCode::InvalidArgument),
        _ => ErrorCode::Internal,
    }
}

/// Storage refusing or failing is the storage's doing, never a bug of ours.
fn store_code(e: &object_store::Error) -> ErrorCode {
    match e {
        object_store::Error::NotFound { .. } => ErrorCode::NotFound,
        object_store::Error::PermissionDenied { .. } => ErrorCode::PermissionDenied,
        object_store::Error::Unauthenticated { .. } => ErrorCode::Unauthenticated,
        _ => ErrorCode::Unavailable,
    }
}

/// File I/O errors by kind; writers wrap object store errors in I/O errors.
fn io_code(io: &std::io::Error) -> ErrorCode {
    if let Some(store) = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
    {
        return store_code(store);
    }
    match io.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            ErrorCode::ResourceExhausted
        }
        _ => ErrorCode::Internal,
    }
}

fn is_missing_object(msg: &str) -> bool {
    let lower = msg.to_ascii_lowercase();
    (lower.contains("table") || lower.contains("schema") || lower.contains("view"))
        && (lower.contains("not found") || lower.contains("does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::plan_datafusion_err;

    #[test]
    fn storage_faults_are_not_bugs() {
        let refused = object_store::Error::PermissionDenied {
            path: "t/f.parquet".to_string(),
            source: "Access Denied".into(),
        };
        let wrapped = DataFusionError::IoError(std::io::Error::other(refused));
        assert_eq!(classify(&wrapped), ErrorCode::PermissionDenied);
        let full = DataFusionError::IoError(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(classify(&full), ErrorCode::ResourceExhausted);
        let failed = object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        let external = DataFusionError::External(Box::new(failed));
        assert_eq!(classify(&external), ErrorCode::Unavailable);
    }

    #[test]
    fn missing_table_is_not_found() {
        let e = plan_datafusion_err!("table 'quarry.public.nope' not found");
        assert_eq!(classify(&e), ErrorCode::NotFound);
        let q: QuarryError = e.into();
        assert_eq!(q.to_status().code(), tonic::Code::NotFound);
    }

    #[test]
    fn plan_errors_are_invalid_argument() {
        let e = plan_datafusion_err!("Invalid function 'nope'");
        assert_eq!(classify(&e), ErrorCode::InvalidArgument);
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 400);
    }

    #[test]
    fn a_full_disk_is_not_a_bug() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = QuarryError::io("cannot write results to /x", &full);
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(
            e.message.starts_with("cannot write results to /x"),
            "{}",
            e.message
        );
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(QuarryError::io("x", &denied).code, ErrorCode::Unavailable);
    }

    #[test]
    fn internal_errors_reach_clients_as_an_incident() {
        let bug = QuarryError::internal("index out of bounds at shuffle.rs:12");
        let shown = bug.for_client();
        assert_eq!(shown.code, ErrorCode::Internal);
        assert!(!shown.message.contains("shuffle.rs"), "{}", shown.message);
        assert!(shown.message.contains("incident"), "{}", shown.message);
        // Mapped once: passing it on again keeps the same incident.
        assert_eq!(shown.for_client().message, shown.message);
        let user = QuarryError::invalid("no such column");
        assert_eq!(user.for_client().message, "no such column");
    }

    #[test]
    fn long_messages_reach_clients_shortened() {
        let echo = QuarryError::invalid(format!("cannot cast '{}' to INT", "x".repeat(100_000)));
        let shown = echo.for_client();
        assert!(shown.message.len() < MAX_CLIENT_MESSAGE_BYTES + 40);
        let wide = QuarryError::invalid("é".repeat(100_000)).for_client();
        assert!(
            wide.message.len() < MAX_CLIENT_MESSAGE_BYTES + 40,
            "{}",
            wide.message.len()
        );
        assert!(
            shown.message.ends_with("more characters)"),
            "{}",
            &shown.message[1990..]
        );
        assert_eq!(shown.code, ErrorCode::InvalidArgument);
        assert_eq!(QuarryError::invalid("short").for_client().message, "short");
    }

    #[test]
    fn quarry_errors_survive_datafusion_wrapping() {
        let inner = QuarryError::unavailable("no executors");
        let wrapped = DataFusionError::from(inner).context("running stage 1");
        assert_eq!(classify(&wrapped), ErrorCode::Unavailable);
        assert_eq!(describe(&wrapped), "running stage 1: no executors");
    }
}
