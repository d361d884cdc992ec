//! Compacting string and binary view columns before a batch leaves its task.
//!
//! Operators that pick rows (`take` in joins and repartitioning) return view arrays that
//! still point into the whole buffers of their source: a join's output batch of a few
//! thousand rows can carry the entire build side's strings. In one process that costs
//! nothing; written as Arrow IPC and sent to another executor, every batch would ship
//! those buffers again. Such columns are rewritten to hold only the bytes they use.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::error::Result;

/// `batch` with its sparse view columns compacted (unchanged when none is sparse).
pub fn compact_views(batch: RecordBatch) -> Result<RecordBatch> {
    let compacted: Vec<Option<ArrayRef>> = batch.columns().iter().map(compacted).collect();
    if compacted.iter().all(Option::is_none) {
        return Ok(batch);
    }
    let columns = compacted
        .into_iter()
        .zip(batch.columns())
        .map(|(new, old)| new.unwrap_or_else(|| Arc::clone(old)))
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The column compacted, or None when it is not a sparse view column.
fn compacted(column: &ArrayRef) -> Option<ArrayRef> {
    if !is_sparse_view(column) {
        return None;
    }
    match column.data_type() {
        DataType::Utf8View => Some(Arc::new(column.as_string_view().gc())),
        DataType::BinaryView => Some(Arc::new(column.as_binary_view().gc())),
        _ => None,
    }
}

/// A view column whose data buffers hold more bytes than its values use.
fn is_sparse_view(column: &ArrayRef) -> bool {
    let (held, used) = match column.data_type() {
        DataType::Utf8View => {
            let a = column.as_string_view();
            (buffers_len(a.data_buffers()), a.total_buffer_bytes_used())
        }
        DataType::BinaryView => {
            let a = column.as_binary_view();
            (buffers_len(a.data_buffers()), a.total_buffer_bytes_used())
        }
        _ => return false,
    };
    // Copying what is used costs less than encoding and sending what is held.
    held > used + used / 4
}

fn buffers_len(buffers: &[arrow::buffer::Buffer]) -> usize {
    buffers.iter().map(|b| b.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringViewArray, UInt32Array};
    use arrow::compute::take;
    use arrow::datatypes::{Field, Schema};

    fn names(n: usize) -> StringViewArray {
        (0..n).map(|i| Some(format!("Supplier#{i:012}"))).collect()
    }

    #[test]
    fn a_few_rows_taken_from_a_large_column_keep_only_their_bytes() -> Result<()> {
        let all = names(10_000);
        let picked = take(&all, &UInt32Array::from(vec![1u32, 5000, 9999]), None)?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![picked])?;
        let before = batch.get_array_memory_size();
        let compacted = compact_views(batch.clone())?;
        assert!(compacted.get_array_memory_size() * 100 < before);
        assert_eq!(compacted, batch);
        Ok(())
    }

    #[test]
    fn dense_columns_are_left_as_they_are() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(names(1000)) as ArrayRef])?;
        let compacted = compact_views(batch.clone())?;
        assert!(Arc::ptr_eq(compacted.column(0), batch.column(0)));
        Ok(())
    }
}
