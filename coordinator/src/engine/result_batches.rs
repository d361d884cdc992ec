//! Results made on the coordinator: EXPLAIN's plan text, and the message rows catalog
//! statements answer.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quarry_common::QuarryError;

use crate::error::CoordinatorError;

/// EXPLAIN's result shape: what each row describes, and the text.
pub(super) fn plan_text_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]))
}

pub(super) fn plan_text_batch(rows: Vec<(String, String)>) -> Result<RecordBatch, QuarryError> {
    let (types, plans): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    RecordBatch::try_new(
        plan_text_schema(),
        vec![
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(plans)),
        ],
    )
    .map_err(CoordinatorError::batch("a plan"))
    .map_err(QuarryError::from)
}

/// One text column, one row per message: the result of catalog statements.
pub(crate) fn message_batch(column: &str, messages: &[String]) -> Result<RecordBatch, QuarryError> {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let array: ArrayRef = Arc::new(StringArray::from(messages.to_vec()));
    RecordBatch::try_new(schema, vec![array])
        .map_err(CoordinatorError::batch("a result"))
        .map_err(QuarryError::from)
}
