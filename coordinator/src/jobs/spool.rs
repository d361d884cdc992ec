//! A job's results on disk: batches are appended as they are produced and can be read
//! from any row offset, while the job is still running or long after it finished.
//!
//! Each batch is written as a self-contained Arrow IPC stream (schema, dictionaries,
//! batch), and an in-memory index keeps its offset, length and row count. The first
//! [`KEPT_IN_MEMORY`] bytes of a job's batches stay in memory instead: most results are
//! a few rows (a dashboard tile, `SELECT 1`), and writing, reopening and decoding a file
//! for them cost more than the query. Readers follow the writer: they wait for more
//! batches until the job finishes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use futures::Stream;
use quarry_common::QuarryError;
use tokio::sync::watch;

use crate::error::CoordinatorError;

/// Bytes of a job's results kept in memory rather than written to its file (at most
/// this much for each of the live jobs).
const KEPT_IN_MEMORY: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    len: u64,
    rows: u64,
    /// The batch itself, for the first results of a job; read from the file otherwise.
    kept: Option<RecordBatch>,
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    written: u64,
    /// Bytes of batches kept in memory.
    kept: usize,
    index: Vec<Entry>,
    rows: u64,
    schema: Option<SchemaRef>,
    /// None while running; the outcome once finished.
    outcome: Option<Result<(), QuarryError>>,
}

#[derive(Debug)]
pub(crate) struct ResultSpool {
    path: PathBuf,
    state: Mutex<State>,
    /// Bumped on every append and on finish, so readers can wait for news.
    version: watch::Sender<u64>,
}

impl ResultSpool {
    pub(crate) fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(ResultSpool {
            path,
            state: Mutex::new(State {
                file: None,
                written: 0,
                kept: 0,
                index: Vec::new(),
                rows: 0,
                schema: None,
                outcome: None,
            }),
            version: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Wait for the next append or finish.
    pub(crate) async fn changed(&self) {
        let mut version = self.version.subscribe();
        if self.lock().outcome.is_some() {
            return;
        }
        let _ = version.changed().await;
    }

    pub(crate) fn set_schema(&self, schema: SchemaRef) {
        self.lock().schema = Some(schema);
    }

    pub(crate) fn schema(&self) -> Option<SchemaRef> {
        self.lock().schema.clone()
    }

    pub(crate) fn rows(&self) -> u64 {
        self.lock().rows
    }

    pub(crate) fn outcome(&self) -> Option<Result<(), QuarryError>> {
        self.lock().outcome.clone()
    }

    pub(crate) fn append(&self, batch: &RecordBatch) -> Result<(), QuarryError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let size = batch.get_array_memory_size();
        {
            let mut state = self.lock();
            still_running(&state)?;
            if state.file.is_none() && state.kept + size <= KEPT_IN_MEMORY {
                state.kept += size;
                state.rows += batch.num_rows() as u64;
                state.index.push(Entry {
                    offset: 0,
                    len: 0,
                    rows: batch.num_rows() as u64,
                    kept: Some(batch.clone()),
                });
                drop(state);
                self.bump();
                return Ok(());
            }
        }
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())
                .map_err(|e| QuarryError::from(CoordinatorError::encode("results", e)))?;
            writer
                .write(batch)
                .and_then(|_| writer.finish())
                .map_err(|e| QuarryError::from(CoordinatorError::encode("results", e)))?;
        }
        let mut state = self.lock();
        still_running(&state)?;
        if state.file.is_none() {
            let file = File::create(&self.path).map_err(|e| {
                QuarryError::io(
                    format_args!("cannot write results to {}", self.path.display()),
                    &e,
                )
            })?;
            state.file = Some(file);
        }
        let offset = state.written;
        if let Some(file) = state.file.as_mut() {
            file.write_all(&bytes).map_err(|e| {
                QuarryError::io(
                    format_args!("cannot write results to {}", self.path.display()),
                    &e,
                )
            })?;
        }
        state.written += bytes.len() as u64;
        state.rows += batch.num_rows() as u64;
        state.index.push(Entry {
            offset,
            len: bytes.len() as u64,
            rows: batch.num_rows() as u64,
            kept: None,
        });
        drop(state);
        self.bump();
        Ok(())
    }

    pub(crate) fn finish(&self, outcome: Result<(), QuarryError>) {
        {
            let mut state = self.lock();
            if state.outcome.is_none() {
                state.outcome = Some(outcome);
            }
            state.file = None;
        }
        self.bump();
    }

    /// Delete the results; later reads fail.
    pub(crate) fn discard(&self) {
        let mut state = self.lock();
        state.index.clear();
        state.file = None;
        if state.outcome.is_none() {
            state.outcome = Some(Err(QuarryError::cancelled("results were discarded")));
        }
        let _ = std::fs::remove_file(&self.path);
        drop(state);
        self.bump();
    }

    fn read_entry(&self, entry: Entry) -> Result<RecordBatch, QuarryError> {
        let file = File::open(&self.path)
            .map_err(|e| QuarryError::not_found(format!("results are no longer available: {e}")))?;
        let mut bytes = vec![0u8; entry.len as usize];
        file.read_exact_at(&mut bytes, entry.offset)
            .map_err(|e| QuarryError::io("reading results", &e))?;
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| QuarryError::from(CoordinatorError::decode("results", e)))?;
        match reader.next() {
            Some(batch) => batch.map_err(|e| CoordinatorError::decode("results", e).into()),
            None => Err(CoordinatorError::decode("results", "an empty entry").into()),
        }
    }

    /// Rows `offset..offset+limit` (all from `offset` when limit is None), following the
    /// writer until the job finishes. A failed job ends the stream with its error.
    pub(crate) fn read(
        self: &Arc<Self>,
        offset: u64,
        limit: Option<u64>,
    ) -> impl Stream<Item = Result<RecordBatch, QuarryError>> + Send + 'static {
        let cursor = Cursor {
            spool: Arc::clone(self),
            version: self.version.subscribe(),
            next_entry: 0,
            row_at: 0,
            offset,
            remaining: limit.unwrap_or(u64::MAX),
            done: false,
        };
        futures::stream::unfold(cursor, |mut c| async move {
            loop {
                if c.done || c.remaining == 0 {
                    return None;
                }
                // Read the next entry and the outcome under one lock: finishing happens
                // after the last append, so "no entry and finished" means the end.
                let (entry, outcome) = {
                    let state = c.spool.lock();
                    (
                        state.index.get(c.next_entry).cloned(),
                        state.outcome.clone(),
                    )
                };
                if let Some(entry) = entry {
                    c.next_entry += 1;
                    let start = c.row_at;
                    c.row_at += entry.rows;
                    if c.row_at <= c.offset {
                        continue;
                    }
                    let read = match entry.kept {
                        Some(batch) => Ok(batch),
                        None => {
                            // File reads go to a blocking thread, not the worker polling this.
                            let spool = Arc::clone(&c.spool);
                            tokio::task::spawn_blocking(move || spool.read_entry(entry))
                                .await
                                .unwrap_or_else(|e| {
                                    Err(CoordinatorError::crashed("reading results", e).into())
                                })
                        }
                    };
                    return match read {
                        Ok(batch) => {
                            let skip = c.offset.saturating_sub(start) as usize;
                            let take = (batch.num_rows() - skip).min(c.remaining as usize);
                            c.remaining -= take as u64;
                            Some((Ok(batch.slice(skip, take)), c))
                        }
                        Err(e) => {
                            c.done = true;
                            Some((Err(e), c))
                        }
                    };
                }
                match outcome {
                    Some(Ok(())) => return None,
                    Some(Err(e)) => {
                        c.done = true;
                        return Some((Err(e), c));
                    }
                    None => {
                        if c.version.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        })
    }
}

/// Appends end when the job does.
fn still_running(state: &State) -> Result<(), QuarryError> {
    match state.outcome {
        Some(_) => {
            Err(CoordinatorError::invariant("results appended after the job finished").into())
        }
        None => Ok(()),
    }
}

/// A reader's position in a spool.
struct Cursor {
    spool: Arc<ResultSpool>,
    version: watch::Receiver<u64>,
    next_entry: usize,
    /// First row of `next_entry`.
    row_at: u64,
    offset: u64,
    remaining: u64,
    done: bool,
}

#[cfg(test)]
// Tests own the tasks they start.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
        )
        .expect("batch")
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[tokio::test]
    async fn pages_and_follows_the_writer() -> Result<(), QuarryError> {
        let dir = tempfile::tempdir().map_err(|e| QuarryError::io("temp dir", &e))?;
        let spool = ResultSpool::new(dir.path().join("job.arrows"));
        spool.append(&batch(0, 10))?;
        let reader = spool.read(5, Some(10));
        let writer = {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                spool.append(&batch(10, 10))?;
                spool.finish(Ok(()));
                Ok::<_, QuarryError>(())
            })
        };
        let got: Vec<RecordBatch> = reader.try_collect().await?;
        assert_eq!(values(&got), (5..15).collect::<Vec<i64>>());
        writer
            .await
            .map_err(|e| QuarryError::from(CoordinatorError::crashed("a test task", e)))??;
        let all: Vec<RecordBatch> = spool.read(0, None).try_collect().await?;
        assert_eq!(values(&all).len(), 20);
        let past_end: Vec<RecordBatch> = spool.read(100, Some(5)).try_collect().await?;
        assert!(past_end.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_job_ends_its_readers_with_the_error() -> Result<(), QuarryError> {
        let dir = tempfile::tempdir().map_err(|e| QuarryError::io("temp dir", &e))?;
        let spool = ResultSpool::new(dir.path().join("job.arrows"));
        spool.append(&batch(0, 3))?;
        spool.finish(Err(QuarryError::invalid("boom")));
        let result: Result<Vec<RecordBatch>, QuarryError> = spool.read(0, None).try_collect().await;
        assert_eq!(result.unwrap_err().message, "boom");
        Ok(())
    }
}
