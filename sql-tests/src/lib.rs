//! Quarry's behaviour suite: sqllogictest files (`slt/*.slt`) run against a real
//! in-process cluster — a coordinator and executors talking Flight over loopback, with
//! the catalog in sled in a temporary directory.
//!
//! Every file starts from an empty catalog and the fixture files of [`fixtures`]; in the
//! files, `$ROOT` is the fixture directory a local source can point at, and `$OUTSIDE`
//! a directory next to it that sources must not reach.
//!
//! Each file runs twice: straight into the engine, and through the Flight SQL port with
//! a real Flight SQL client ([`flight_db`]); results, column types and errors must be the
//! same both ways.
//!
//! Regenerate expected results with `QUARRY_SLT_COMPLETE=1` (then read the diff).

pub mod doors;
pub mod fixtures;
pub mod flight_db;
pub mod fuzz;
pub mod processes;
pub mod soak;
pub mod storm;
pub mod tpch;
pub mod vitals;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use futures::TryStreamExt;
use quarry_common::QuarryError;
use quarry_coordinator::local_cluster::{LocalCluster, LocalClusterConfig};
use quarry_coordinator::service::{QueryService, SessionHandle, in_process_session};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

/// A cluster with fixture data for one test file.
pub struct SqlTestCluster {
    pub cluster: LocalCluster,
    pub root: PathBuf,
    pub outside: PathBuf,
    _dir: tempfile::TempDir,
}

impl SqlTestCluster {
    pub async fn start(executors: usize) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (root, outside) = fixtures::write(&dir.path().join("data"))?;
        let config = LocalClusterConfig::new(dir.path().join("quarry"), executors);
        let cluster = LocalCluster::start(config).await?;
        Ok(SqlTestCluster {
            cluster,
            root,
            outside,
            _dir: dir,
        })
    }

    /// The engine as frontends hold it.
    pub fn service(&self) -> Arc<dyn QueryService> {
        self.cluster.coordinator.service()
    }

    /// A session of `user`.
    pub fn session(&self, user: &str) -> SessionHandle {
        in_process_session(&self.service(), user)
    }

    /// Run one `.slt` file, or rewrite its expected results when asked to.
    pub async fn run_file(
        &self,
        path: &Path,
        mode: Mode,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match mode {
            Mode::InProcess => {
                let service = self.service();
                let session = self.session("slt");
                let make = move || {
                    let db = QuarryDb {
                        service: Arc::clone(&service),
                        session: session.clone(),
                    };
                    async move { Ok::<_, DbError>(db) }
                };
                self.run_with(sqllogictest::Runner::new(make), path).await
            }
            Mode::FlightSql => {
                let address = self.cluster.coordinator.flight_addr.to_string();
                let make = move || {
                    let address = address.clone();
                    async move { flight_db::FlightDb::connect(&address).await }
                };
                self.run_with(sqllogictest::Runner::new(make), path).await
            }
        }
    }

    async fn run_with<D, M>(
        &self,
        mut runner: sqllogictest::Runner<D, M>,
        path: &Path,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        D: AsyncDB<ColumnType = DefaultColumnType, Error = DbError>,
        M: sqllogictest::MakeConnection<Conn = D>,
    {
        runner.set_var("ROOT".to_string(), self.root.display().to_string());
        runner.set_var("OUTSIDE".to_string(), self.outside.display().to_string());
        // Column types are part of the expected result (`query IT`), checked too.
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if std::env::var_os("QUARRY_SLT_COMPLETE").is_some() {
            runner
                .update_test_file(
                    path,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await?;
        } else {
            runner.run_file_async(path).await?;
        }
        Ok(())
    }
}

/// How a `.slt` file reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Straight into the engine's `QueryService`, in this process.
    InProcess,
    /// Through the coordinator's Flight SQL port, with a Flight SQL client.
    FlightSql,
}

/// Every `.slt` file under `dir`, at any depth, sorted.
pub fn slt_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "slt") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Run `sql` in `session` and collect its result.
pub async fn query(
    service: &Arc<dyn QueryService>,
    session: &SessionHandle,
    sql: &str,
) -> Result<Vec<RecordBatch>, QuarryError> {
    let job = service.submit(session, sql, None).await?;
    let batches: Vec<RecordBatch> = job.results(0, None).try_collect().await?;
    job.finished().await?;
    Ok(batches)
}

#[derive(Debug)]
pub struct DbError(pub QuarryError);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl std::error::Error for DbError {}

/// A connection: one session of the cluster's engine, through its `QueryService`.
pub struct QuarryDb {
    service: Arc<dyn QueryService>,
    session: SessionHandle,
}

pub(crate) fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating()
        || matches!(
            data_type,
            DataType::Decimal128(..) | DataType::Decimal256(..)
        )
    {
        DefaultColumnType::FloatingPoint
    } else if matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

/// Rows as text: NULL for nulls, (empty) for empty strings, multi-line values (plans)
/// on one line.
pub(crate) fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, QuarryError> {
    let cells = tpch::cells(batches).map_err(|e| QuarryError::internal(e.to_string()))?;
    Ok(cells
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| {
                    let text = cell.split_whitespace().collect::<Vec<_>>().join(" ");
                    if text.is_empty() {
                        "(empty)".to_string()
                    } else {
                        text
                    }
                })
                .collect()
        })
        .collect())
}

#[async_trait::async_trait]
impl AsyncDB for QuarryDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let job = self
            .service
            .submit(&self.session, sql, None)
            .await
            .map_err(DbError)?;
        let batches: Vec<RecordBatch> =
            job.results(0, None).try_collect().await.map_err(DbError)?;
        job.finished().await.map_err(DbError)?;
        let types = job
            .schema()
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches).map_err(DbError)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quarry"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}
