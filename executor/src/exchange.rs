//! The exchange store: task outputs kept until their query is released.
//!
//! A task's output is a list of output partitions, each a list of batches. Consumers read
//! one output partition of one task attempt, over Flight from other executors or directly
//! when they run here.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use futures::StreamExt;
use futures::stream::BoxStream;
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

#[derive(Debug)]
struct TaskOutput {
    partitions: Vec<Vec<RecordBatch>>,
    bytes: u64,
}

#[derive(Debug)]
pub struct ExchangeStore {
    executor_id: String,
    outputs: RwLock<HashMap<TaskKey, TaskOutput>>,
    bytes: AtomicU64,
}

impl ExchangeStore {
    pub fn new(executor_id: String) -> Self {
        ExchangeStore {
            executor_id,
            outputs: RwLock::new(HashMap::new()),
            bytes: AtomicU64::new(0),
        }
    }

    /// Keep the output of one task attempt.
    pub fn put(
        &self,
        query_id: &str,
        stage_id: u32,
        partition: u32,
        attempt: u32,
        partitions: Vec<Vec<RecordBatch>>,
    ) {
        let bytes: u64 = partitions
            .iter()
            .flatten()
            .map(|b| b.get_array_memory_size() as u64)
            .sum();
        let key = TaskKey {
            query_id: query_id.to_string(),
            stage_id,
            partition,
            attempt,
        };
        if let Ok(mut outputs) = self.outputs.write() {
            if let Some(old) = outputs.insert(key, TaskOutput { partitions, bytes }) {
                self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
            }
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The batches of one output partition, if held here.
    pub fn get(&self, ticket: &ExchangeTicket) -> Option<Vec<RecordBatch>> {
        let outputs = self.outputs.read().ok()?;
        let output = outputs.get(&TaskKey::of(ticket))?;
        Some(
            output
                .partitions
                .get(ticket.output_partition as usize)
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// Drop everything a query left here; returns how many task outputs went.
    pub fn release(&self, query_id: &str) -> usize {
        let Ok(mut outputs) = self.outputs.write() else {
            return 0;
        };
        let before = outputs.len();
        outputs.retain(|key, output| {
            let keep = key.query_id != query_id;
            if !keep {
                self.bytes.fetch_sub(output.bytes, Ordering::Relaxed);
            }
            keep
        });
        before - outputs.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> usize {
        self.outputs.read().map(|o| o.len()).unwrap_or(0)
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
        let batches = self.get(ticket)?;
        Some(Ok(
            futures::stream::iter(batches.into_iter().map(Ok)).boxed()
        ))
    }
}
