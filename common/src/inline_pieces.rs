//! Small task outputs sent back with the task's result: each piece an Arrow IPC stream,
//! read by the stage's reader from its location instead of fetched from the executor.
//! The coordinator asks for them from the stages it reads itself, so a query's last hop
//! (often a few rows) costs no `do_get`.

use std::io::Cursor;
use std::panic::AssertUnwindSafe;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};

/// The batches of each output piece of a task, while their size stays within a limit.
#[derive(Debug)]
pub struct InlinePieces {
    limit: u64,
    bytes: u64,
    /// None once the output grew past the limit.
    pieces: Option<Vec<Vec<RecordBatch>>>,
}

impl InlinePieces {
    /// Collects `pieces` pieces up to `limit` bytes in all (0: collects nothing).
    pub fn new(pieces: usize, limit: u64) -> Self {
        InlinePieces {
            limit,
            bytes: 0,
            pieces: (limit > 0).then(|| vec![Vec::new(); pieces]),
        }
    }

    /// A batch written to `piece`.
    pub fn push(&mut self, piece: usize, batch: &RecordBatch) {
        let Some(pieces) = self.pieces.as_mut() else {
            return;
        };
        self.bytes = self
            .bytes
            .saturating_add(batch.get_array_memory_size() as u64);
        match pieces.get_mut(piece) {
            Some(batches) if self.bytes <= self.limit => batches.push(batch.clone()),
            _ => self.pieces = None,
        }
    }

    /// Every piece as an IPC stream, or nothing when the output was too big.
    pub fn finish(self, schema: &SchemaRef) -> Result<Vec<Bytes>> {
        let Some(pieces) = self.pieces else {
            return Ok(Vec::new());
        };
        pieces
            .iter()
            .map(|batches| encode(schema, batches))
            .collect()
    }
}

/// `batches` as one Arrow IPC stream.
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Bytes> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(Bytes::from(writer.into_inner()?))
}

/// The batches of an IPC stream. Bytes that are not one fail the read, never the process.
pub fn decode(bytes: &Bytes) -> Result<Vec<RecordBatch>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        StreamReader::try_new(Cursor::new(bytes.as_ref()), None)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(DataFusionError::from)
    }))
    .unwrap_or_else(|_| {
        Err(DataFusionError::Execution(
            "an inline exchange piece is malformed".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .expect("batch")
    }

    #[test]
    fn pieces_within_the_limit_come_back_whole_and_larger_outputs_not_at_all() {
        let schema = batch(&[]).schema();
        let mut small = InlinePieces::new(2, 10_000);
        small.push(1, &batch(&[1, 2, 3]));
        small.push(1, &batch(&[4]));
        let pieces = small.finish(&schema).expect("encoded");
        assert_eq!(pieces.len(), 2);
        assert!(decode(&pieces[0]).expect("empty piece").is_empty());
        let rows: Vec<i64> = decode(&pieces[1])
            .expect("piece")
            .iter()
            .flat_map(|b| {
                let column = b.column(0).as_any().downcast_ref::<Int64Array>();
                column.map(|c| c.values().to_vec()).unwrap_or_default()
            })
            .collect();
        assert_eq!(rows, [1, 2, 3, 4]);

        let mut big = InlinePieces::new(1, 100);
        big.push(0, &batch(&(0..1000).collect::<Vec<_>>()));
        assert!(big.finish(&schema).expect("nothing").is_empty());
        let none = InlinePieces::new(1, 0);
        assert!(none.finish(&schema).expect("nothing").is_empty());
    }

    #[test]
    fn bytes_that_are_not_a_stream_fail_the_read() {
        assert!(decode(&Bytes::from_static(b"not arrow")).is_err());
        assert!(decode(&Bytes::new()).is_err());
    }
}
