//! What can go wrong starting and stopping an executor, and the one mapping of it to the
//! error codes clients and the coordinator see. Failures of the tasks themselves are
//! DataFusion's errors, classified in `quarry_common::error`.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use quarry_common::{ErrorCode, QuarryError};

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot read the executor's listening address: {0}")]
    Listener(#[source] std::io::Error),

    #[error("cannot listen for HTTP (--http) on {address}: {source}")]
    HttpListener {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot create {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot start the task runtime: {0}")]
    TaskRuntime(#[source] std::io::Error),

    #[error("cannot set up the executor: {0}")]
    Setup(#[from] DataFusionError),

    #[error("the executor's server failed: {0}")]
    Server(#[from] tonic::transport::Error),

    #[error("the executor's server task failed: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
}

impl From<ExecutorError> for QuarryError {
    fn from(e: ExecutorError) -> Self {
        match e {
            ExecutorError::Directory { path, source } => {
                QuarryError::io(format_args!("cannot create {}", path.display()), &source)
            }
            // The operator named a directory that is not usable: theirs to fix.
            ExecutorError::DataDir { .. } => QuarryError::invalid(e.to_string()),
            ExecutorError::Setup(df) => QuarryError::from(df),
            // The machine refused (ports, threads): not a bug, not the caller's fault.
            ExecutorError::Listener(_)
            | ExecutorError::HttpListener { .. }
            | ExecutorError::TaskRuntime(_)
            | ExecutorError::Server(_) => QuarryError::unavailable(e.to_string()),
            ExecutorError::ServerTask(_) => QuarryError::new(ErrorCode::Internal, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_code_once() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let dir: QuarryError = ExecutorError::Directory {
            path: PathBuf::from("/spill"),
            source: full,
        }
        .into();
        assert_eq!(dir.code, ErrorCode::ResourceExhausted);
        assert!(dir.message.contains("/spill"), "{}", dir.message);
        let data: QuarryError = ExecutorError::DataDir {
            path: PathBuf::from("/data"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
        .into();
        assert_eq!(data.code, ErrorCode::InvalidArgument);
        let listener: QuarryError =
            ExecutorError::Listener(std::io::Error::from(std::io::ErrorKind::AddrInUse)).into();
        assert_eq!(listener.code, ErrorCode::Unavailable);
    }
}
