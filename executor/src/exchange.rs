//! The exchange store: task outputs kept until their query is released.
//!
//! A task's output is a list of pieces (one per output partition). Pieces stay in memory
//! while the store is under its memory budget; past it, a piece is written to local disk
//! as an LZ4-compressed Arrow IPC stream, and later batches of that piece go straight to
//! the file. Consumers read one piece of one task attempt, over Flight from other
//! executors or directly when they run here. Releasing a query drops its pieces and
//! deletes its files.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arrow::datatypes::SchemaRef;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use quarry_common::protocol::ExchangeTicket;
use quarry_common::shuffle_reader::LocalExchange;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskKey {
    query_id: String,
    stage_id: u32,
    partition: u32,
    attempt: u32,
}

impl TaskKey {
    fn of(ticket: &ExchangeTicket) -> Self {
        TaskKey {
            query_id: ticket.query_id.clone(),
            stage_id: ticket.stage_id,
            partition: ticket.partition,
            attempt: ticket.attempt,
        }
    }
}

/// A finished piece.
#[derive(Debug)]
enum Piece {
    Memory(Vec<RecordBatch>),
    File(PathBuf),
}

#[derive(Debug)]
struct TaskOutput {
    pieces: Vec<Piece>,
    memory_bytes: u64,
}

#[derive(Debug)]
pub struct ExchangeStore {
    executor_id: String,
    dir: PathBuf,
    memory_budget: u64,
    outputs: RwLock<HashMap<TaskKey, Arc<TaskOutput>>>,
    /// Bytes of pieces held in memory (finished and being written).
    memory: AtomicU64,
    files: AtomicU32,
    next_file: AtomicU64,
    /// Queries released lately: an output of theirs that finishes after the release (its
    /// task was cancelled while writing it) is dropped instead of kept forever.
    released: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a released query's late outputs are still recognised.
const RELEASED_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

fn io_error(path: &Path, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("exchange file {}: {e}", path.display()))
}

impl ExchangeStore {
    pub fn new(executor_id: String, dir: PathBuf, memory_budget: u64) -> Self {
        // Files of a previous run of this executor are of no use to anyone.
        let _ = std::fs::remove_dir_all(&dir);
        ExchangeStore {
            executor_id,
            dir,
            memory_budget,
            outputs: RwLock::new(HashMap::new()),
            memory: AtomicU64::new(0),
            files: AtomicU32::new(0),
            next_file: AtomicU64::new(0),
            released: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Start writing one task attempt's output of `pieces` pieces.
    pub fn writer(self: &Arc<Self>, schema: SchemaRef, pieces: usize) -> OutputWriter {
        OutputWriter {
            store: Arc::clone(self),
            schema,
            pieces: (0..pieces).map(|_| PieceWriter::default()).collect(),
        }
    }

    fn is_released(&self, query_id: &str) -> bool {
        self.released
            .lock()
            .map(|r| r.contains_key(query_id))
            .unwrap_or(false)
    }

    fn insert(&self, key: TaskKey, output: TaskOutput) {
        // Checked under the outputs' lock, which a release holds while it marks the
        // query: a release between the check and the insert would miss this output,
        // and nothing would ever free it.
        let Ok(mut outputs) = self.outputs.write() else {
            self.forget(&output);
            return;
        };
        if self.is_released(&key.query_id) {
            drop(outputs);
            self.forget(&output);
            return;
        }
        if let Some(old) = outputs.insert(key, Arc::new(output)) {
            drop(outputs);
            self.forget(&old);
        }
    }

    fn forget(&self, output: &TaskOutput) {
        self.memory
            .fetch_sub(output.memory_bytes, Ordering::Relaxed);
        for piece in &output.pieces {
            if let Piece::File(path) = piece
                && std::fs::remove_file(path).is_ok()
            {
                self.files.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Drop everything a query left here; returns how many task outputs went.
    pub fn release(&self, query_id: &str) -> usize {
        let removed: Vec<Arc<TaskOutput>> = match self.outputs.write() {
            Ok(mut outputs) => {
                // Marked under the outputs' lock (see `insert`).
                if let Ok(mut released) = self.released.lock() {
                    released.retain(|_, at| at.elapsed() < RELEASED_MEMORY);
                    released.insert(query_id.to_string(), std::time::Instant::now());
                }
                let keys: Vec<TaskKey> = outputs
                    .keys()
                    .filter(|k| k.query_id == query_id)
                    .cloned()
                    .collect();
                keys.iter().filter_map(|k| outputs.remove(k)).collect()
            }
            Err(_) => return 0,
        };
        for output in &removed {
            self.forget(output);
        }
        removed.len()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> usize {
        self.outputs.read().map(|o| o.len()).unwrap_or(0)
    }

    /// Exchange files on disk now.
    pub fn files(&self) -> u32 {
        self.files.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more fit in memory; counts them if so.
    fn reserve(&self, bytes: u64) -> bool {
        let mut current = self.memory.load(Ordering::Relaxed);
        loop {
            if current + bytes > self.memory_budget {
                return false;
            }
            match self.memory.compare_exchange(
                current,
                current + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    fn new_file(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(self.dir.join(format!("piece-{n}.arrows")))
    }

    /// The batches of one piece, if this executor holds it.
    pub fn read_piece(
        &self,
        ticket: &ExchangeTicket,
    ) -> Option<BoxStream<'static, Result<RecordBatch>>> {
        let output = self
            .outputs
            .read()
            .ok()?
            .get(&TaskKey::of(ticket))
            .cloned()?;
        let index = ticket.output_partition as usize;
        Some(match output.pieces.get(index) {
            None => futures::stream::empty().boxed(),
            Some(Piece::Memory(batches)) => {
                futures::stream::iter(batches.clone().into_iter().map(Ok)).boxed()
            }
            Some(Piece::File(path)) => read_file(path.clone()),
        })
    }
}

/// Batches of an exchange file, read without blocking the runtime.
fn read_file(path: PathBuf) -> BoxStream<'static, Result<RecordBatch>> {
    futures::stream::once(async move {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| io_error(&path, e))?;
        Ok::<_, DataFusionError>(futures::stream::iter(
            reader.map(move |b| b.map_err(DataFusionError::from)),
        ))
    })
    .try_flatten()
    .boxed()
}

#[derive(Default)]
struct PieceWriter {
    batches: Vec<RecordBatch>,
    bytes: u64,
    file: Option<(PathBuf, StreamWriter<BufWriter<File>>)>,
    rows: u64,
    written_bytes: u64,
}

/// The bytes of a batch's values, without the spare capacity of its buffers (a batch of
/// 50 rows cut from a larger one holds far more memory than data). Reported as the task's
/// output size, which decides joins at run time.
fn data_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|column| column.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

/// Collects one task attempt's output, spilling pieces to disk past the memory budget.
pub struct OutputWriter {
    store: Arc<ExchangeStore>,
    schema: SchemaRef,
    pieces: Vec<PieceWriter>,
}

impl OutputWriter {
    pub fn push(&mut self, piece: usize, batch: RecordBatch) -> Result<()> {
        let batch = crate::compact::compact_views(batch)?;
        let bytes = batch.get_array_memory_size() as u64;
        let store = Arc::clone(&self.store);
        let schema = Arc::clone(&self.schema);
        let writer = self
            .pieces
            .get_mut(piece)
            .ok_or_else(|| DataFusionError::Internal(format!("no output piece {piece}")))?;
        writer.rows += batch.num_rows() as u64;
        writer.written_bytes += data_bytes(&batch);
        if writer.file.is_none() && store.reserve(bytes) {
            writer.bytes += bytes;
            writer.batches.push(batch);
            return Ok(());
        }
        if writer.file.is_none() {
            // Over budget: this piece moves to disk, with what it buffered so far.
            let path = store.new_file()?;
            let file = File::create(&path).map_err(|e| io_error(&path, e))?;
            let options = IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::LZ4_FRAME))
                .map_err(|e| io_error(&path, e))?;
            let mut ipc =
                StreamWriter::try_new_with_options(BufWriter::new(file), &schema, options)
                    .map_err(|e| io_error(&path, e))?;
            for buffered in writer.batches.drain(..) {
                ipc.write(&buffered).map_err(|e| io_error(&path, e))?;
            }
            store.memory.fetch_sub(writer.bytes, Ordering::Relaxed);
            writer.bytes = 0;
            writer.file = Some((path, ipc));
        }
        if let Some((path, ipc)) = writer.file.as_mut() {
            ipc.write(&batch).map_err(|e| io_error(path, e))?;
        }
        Ok(())
    }

    /// Rows and bytes of each piece so far.
    pub fn stats(&self) -> (Vec<u64>, Vec<u64>) {
        (
            self.pieces.iter().map(|p| p.rows).collect(),
            self.pieces.iter().map(|p| p.written_bytes).collect(),
        )
    }

    /// Make the output readable under `ticket`'s task attempt.
    pub fn finish(
        mut self,
        query_id: &str,
        stage_id: u32,
        partition: u32,
        attempt: u32,
    ) -> Result<()> {
        let mut pieces = Vec::with_capacity(self.pieces.len());
        let mut memory_bytes = 0;
        for writer in self.pieces.drain(..) {
            match writer.file {
                Some((path, mut ipc)) => {
                    ipc.finish().map_err(|e| io_error(&path, e))?;
                    pieces.push(Piece::File(path));
                }
                None => {
                    memory_bytes += writer.bytes;
                    pieces.push(Piece::Memory(writer.batches));
                }
            }
        }
        let key = TaskKey {
            query_id: query_id.to_string(),
            stage_id,
            partition,
            attempt,
        };
        self.store.insert(
            key,
            TaskOutput {
                pieces,
                memory_bytes,
            },
        );
        Ok(())
    }
}

impl Drop for OutputWriter {
    /// An output that never finished (the task failed or was cancelled) frees its memory
    /// and files.
    fn drop(&mut self) {
        for writer in self.pieces.drain(..) {
            self.store.memory.fetch_sub(writer.bytes, Ordering::Relaxed);
            if let Some((path, _)) = writer.file
                && std::fs::remove_file(&path).is_ok()
            {
                self.store.files.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl LocalExchange for ExchangeStore {
    fn executor_id(&self) -> &str {
        &self.executor_id
    }

    fn read(
        &self,
        ticket: &ExchangeTicket,
    ) -> Option<Result<BoxStream<'static, Result<RecordBatch>>>> {
        self.read_piece(ticket).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))])
            .expect("batch")
    }

    fn ticket(piece: u32) -> ExchangeTicket {
        ExchangeTicket {
            query_id: "q".to_string(),
            stage_id: 1,
            partition: 0,
            attempt: 0,
            output_partition: piece,
        }
    }

    #[tokio::test]
    async fn pieces_spill_past_the_budget_and_go_on_release() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let one = batch(10_000).get_array_memory_size() as u64;
        let store = Arc::new(ExchangeStore::new(
            "e".into(),
            dir.path().join("x"),
            one * 2,
        ));
        let mut writer = store.writer(batch(1).schema(), 2);
        for _ in 0..2 {
            writer.push(0, batch(10_000))?;
        }
        // The budget is full: the second piece goes to disk.
        for _ in 0..3 {
            writer.push(1, batch(10_000))?;
        }
        writer.finish("q", 1, 0, 0)?;
        assert_eq!(store.files(), 1);
        assert_eq!(store.memory_bytes(), one * 2);
        for piece in [0u32, 1] {
            let rows: usize = store
                .read_piece(&ticket(piece))
                .expect("held")
                .try_collect::<Vec<_>>()
                .await?
                .iter()
                .map(|b| b.num_rows())
                .sum();
            assert_eq!(rows, if piece == 0 { 20_000 } else { 30_000 });
        }
        assert_eq!(store.release("q"), 1);
        assert_eq!(store.files(), 0);
        assert_eq!(store.memory_bytes(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("x"))
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
        Ok(())
    }

    /// A task cancelled while it wrote its output may finish it after its query was
    /// released: the late output is dropped, not kept forever.
    #[test]
    fn an_output_finished_after_its_query_was_released_is_dropped() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let store = Arc::new(ExchangeStore::new(
            "e".into(),
            dir.path().join("x"),
            1 << 30,
        ));
        let mut writer = store.writer(batch(1).schema(), 1);
        writer.push(0, batch(100))?;
        assert_eq!(store.release("q"), 0);
        writer.finish("q", 1, 0, 0)?;
        assert_eq!(store.entries(), 0);
        assert_eq!(store.memory_bytes(), 0);
        // Other queries keep theirs.
        let mut writer = store.writer(batch(1).schema(), 1);
        writer.push(0, batch(100))?;
        writer.finish("other", 1, 0, 0)?;
        assert_eq!(store.entries(), 1);
        Ok(())
    }

    #[test]
    fn an_unfinished_output_frees_what_it_took() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let store = Arc::new(ExchangeStore::new("e".into(), dir.path().join("x"), 1));
        let mut writer = store.writer(batch(1).schema(), 1);
        writer.push(0, batch(100))?;
        assert_eq!(store.files(), 1);
        drop(writer);
        assert_eq!(store.files(), 0);
        assert_eq!(store.entries(), 0);
        Ok(())
    }
}
