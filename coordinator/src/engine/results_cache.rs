//! The results cache: a deterministic query's rows, kept in memory and served again while
//! nothing it read has changed (Dremio's results cache; Trino and Spark users know it from
//! BI tools repeating a dashboard's queries).
//!
//! An entry is found by the query's **plan key**: who asked (user, default schema and
//! settings — two users never share an entry, whatever their grants) and the physical
//! plan as planned now. It is used only if the **input key** matches too: every file the
//! plan reads, with its size, modification time, ETag and version, as listed by this
//! planning. An INSERT (a new Delta file), a new file in a source folder, a reflection
//! refresh (new materialization files) all change the input key, so a repeat after them
//! misses and replaces the entry. Planning runs for every query, hits included, so a
//! REVOKE refuses the query before the cache is asked.
//!
//! A repeat of the same text by the same asker can skip even the planning: see
//! `results_shortcut.rs`.
//!
//! Never cached: plans with a function that is not immutable (`now()`, `random()`,
//! `uuid()`), plans reading anything but files (system tables, `information_schema`,
//! whose state no listing shows), writes, and results over the per-entry limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use ring::digest::{Context, SHA256};

use super::input_roots::{Root, roots_of};
use crate::access::auth::hex;

/// The largest result one entry keeps (Dremio's default is 20 MB as well).
pub(crate) const MAX_ENTRY_BYTES: usize = 20 * 1024 * 1024;

/// Where a query stands with the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    plan: String,
    inputs: String,
    /// Where a shortcut lists the query's inputs again (None: it cannot).
    roots: Option<Arc<[Root]>>,
}

impl CacheKey {
    pub(crate) fn roots(&self) -> Option<Arc<[Root]>> {
        self.roots.clone()
    }

    #[cfg(test)]
    pub(crate) fn for_tests(plan: &str, inputs: &str) -> CacheKey {
        CacheKey {
            plan: plan.to_string(),
            inputs: inputs.to_string(),
            roots: None,
        }
    }
}

/// A kept result.
#[derive(Debug, Clone)]
pub(crate) struct CachedResult {
    pub schema: SchemaRef,
    pub batches: Arc<Vec<RecordBatch>>,
    /// The job that produced it.
    pub job_id: String,
    pub rows: u64,
    /// Served by a shortcut, without planning.
    pub unplanned: bool,
}

#[derive(Debug)]
struct Entry {
    inputs: String,
    result: CachedResult,
    bytes: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

/// The cache of one coordinator: at most `capacity` bytes of results, least recently
/// used evicted first.
#[derive(Debug)]
pub(crate) struct ResultsCache {
    capacity: usize,
    state: Mutex<State>,
}

impl ResultsCache {
    pub(crate) fn new(capacity: usize) -> ResultsCache {
        ResultsCache {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether this coordinator keeps any results.
    pub(crate) fn keeps_results(&self) -> bool {
        self.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The most one entry may hold.
    pub(crate) fn entry_limit(&self) -> usize {
        MAX_ENTRY_BYTES.min(self.capacity)
    }

    /// The kept result for `key`, if its inputs are the same; an entry whose inputs
    /// changed is dropped.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<CachedResult> {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let entry = state.entries.get_mut(&key.plan)?;
        if entry.inputs == key.inputs {
            entry.last_used = clock;
            return Some(entry.result.clone());
        }
        if let Some(stale) = state.entries.remove(&key.plan) {
            state.bytes -= stale.bytes;
            crate::metrics::results_cache_changed(-1, -(stale.bytes as i64));
        }
        None
    }

    /// Is there a usable entry for `key` (for EXPLAIN; does not count as a use)?
    pub(crate) fn peek(&self, key: &CacheKey) -> Option<CachedResult> {
        let state = self.lock();
        state
            .entries
            .get(&key.plan)
            .filter(|e| e.inputs == key.inputs)
            .map(|e| e.result.clone())
    }

    /// Keep `result` for `key`, evicting the least recently used entries to make room.
    pub(crate) fn put(&self, key: CacheKey, result: CachedResult) {
        let bytes: usize = result
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            .max(1);
        if bytes > self.entry_limit() {
            return;
        }
        let mut state = self.lock();
        let before = (state.entries.len() as i64, state.bytes as i64);
        if let Some(old) = state.entries.remove(&key.plan) {
            state.bytes -= old.bytes;
        }
        while state.bytes + bytes > self.capacity {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.bytes -= evicted.bytes;
            }
        }
        state.clock += 1;
        let last_used = state.clock;
        state.bytes += bytes;
        state.entries.insert(
            key.plan,
            Entry {
                inputs: key.inputs,
                result,
                bytes,
                last_used,
            },
        );
        crate::metrics::results_cache_changed(
            state.entries.len() as i64 - before.0,
            state.bytes as i64 - before.1,
        );
    }

    /// Entries and bytes held.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        let state = self.lock();
        (state.entries.len(), state.bytes)
    }
}

/// The key of a query, or why it cannot be cached.
pub(crate) fn key_of(
    asker: Context,
    logical: &LogicalPlan,
    physical: &Arc<dyn ExecutionPlan>,
) -> Result<CacheKey, String> {
    if let Some(function) = non_deterministic_function(logical) {
        return Err(format!("it calls {function}(), whose value changes"));
    }
    let inputs = input_snapshot(physical)?;
    let mut plan = asker;
    plan.update(
        displayable(physical.as_ref())
            .indent(true)
            .to_string()
            .as_bytes(),
    );
    plan.update(format!("{}", physical.schema()).as_bytes());
    Ok(CacheKey {
        plan: hex(plan.finish().as_ref()),
        inputs,
        roots: roots_of(logical).map(Arc::from),
    })
}

/// A digest that has taken in who asks (user, default schema and settings): results
/// are never shared between askers.
pub(crate) fn asker_digest(session: &super::Session) -> Context {
    let mut digest = Context::new(&SHA256);
    for part in [session.user.as_str(), "\0", &session.default_schema(), "\0"] {
        digest.update(part.as_bytes());
    }
    for (name, value) in session.settings() {
        digest.update(format!("{name}={value}\0").as_bytes());
    }
    digest
}

/// The first function in `plan` (subqueries included) that may answer differently on
/// another run: DataFusion marks them volatile (`random()`) or stable (`now()`).
fn non_deterministic_function(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let volatility = match e {
                    Expr::ScalarFunction(f) => Some((f.func.name(), f.func.signature().volatility)),
                    Expr::AggregateFunction(f) => {
                        Some((f.func.name(), f.func.signature().volatility))
                    }
                    _ => None,
                };
                if let Some((name, volatility)) = volatility
                    && volatility != Volatility::Immutable
                {
                    found = Some(name.to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// A digest of every file the plan reads, as this planning listed them; refused when
/// the plan reads anything else.
fn input_snapshot(physical: &Arc<dyn ExecutionPlan>) -> Result<String, String> {
    let mut inputs = Context::new(&SHA256);
    let mut scans = 0usize;
    let mut refusal = None;
    let _ = physical.apply(|node| {
        if let Some(source) = node.downcast_ref::<DataSourceExec>()
            && let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>()
        {
            scans += 1;
            inputs.update(format!("{}\0", scan.object_store_url.as_str()).as_bytes());
            for file in scan.file_groups.iter().flat_map(|g| g.files()) {
                let meta = &file.object_meta;
                inputs.update(
                    format!(
                        "{}\0{}\0{}\0{:?}\0{:?}\0{:?}\n",
                        meta.location,
                        meta.size,
                        meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                        meta.e_tag,
                        meta.version,
                        file.range.as_ref().map(|r| (r.start, r.end)),
                    )
                    .as_bytes(),
                );
            }
        } else if node.children().is_empty()
            && node.downcast_ref::<EmptyExec>().is_none()
            && node.downcast_ref::<PlaceholderRowExec>().is_none()
        {
            refusal = Some(format!(
                "it reads {}, which has no snapshot to compare",
                node.name()
            ));
            return Ok(TreeNodeRecursion::Stop);
        } else if node
            .downcast_ref::<quarry_common::table_write::FileWriteExec>()
            .is_some()
        {
            refusal = Some("it writes".to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    if scans == 0 {
        return Err("it reads no files".to_string());
    }
    Ok(hex(inputs.finish().as_ref()))
}

impl super::Engine {
    /// A placed query's outcome: its rows from the results cache when they are there,
    /// else the run, kept for next time when it may be.
    pub(super) fn through_results_cache(
        &self,
        session: &super::Session,
        logical: &LogicalPlan,
        placed: super::placement::PlacedPlan,
    ) -> Result<super::Outcome, quarry_common::QuarryError> {
        match self.results_key(session, logical, &placed) {
            Ok(key) => {
                let hit = self.results.get(&key);
                crate::metrics::results_cache_lookup(hit.is_some());
                match hit {
                    Some(hit) => Ok(super::Outcome::Cached(hit, Some(key))),
                    None => Ok(super::Outcome::Caching(
                        Box::new(self.plan_placed(placed)?),
                        key,
                    )),
                }
            }
            Err(_) => self.plan_placed(placed),
        }
    }

    /// What EXPLAIN says of the results cache for this query.
    pub(super) fn explain_results_cache(
        &self,
        session: &super::Session,
        logical: &LogicalPlan,
        placed: &super::placement::PlacedPlan,
    ) -> String {
        match self.results_key(session, logical, placed) {
            Err(why) => format!("not cached: {why}"),
            Ok(key) => match self.results.peek(&key) {
                Some(hit) => format!(
                    "served from the results cache (the result of job {}, {} rows)",
                    hit.job_id, hit.rows
                ),
                None => "not in the results cache; its result will be kept".to_string(),
            },
        }
    }

    fn results_key(
        &self,
        session: &super::Session,
        logical: &LogicalPlan,
        placed: &super::placement::PlacedPlan,
    ) -> Result<CacheKey, String> {
        if !super::quarry_options(placed.state.config())
            .results_cache
            .enabled
        {
            return Err("quarry.results_cache.enabled is off".to_string());
        }
        if self.results.capacity == 0 {
            return Err("this coordinator keeps no results (--results-cache-size 0)".to_string());
        }
        key_of(asker_digest(session), logical, &placed.physical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn result(rows: usize) -> CachedResult {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1i64; rows]))],
        )
        .expect("batch");
        CachedResult {
            schema,
            batches: Arc::new(vec![batch]),
            job_id: "j".to_string(),
            rows: rows as u64,
            unplanned: false,
        }
    }

    fn key(plan: &str, inputs: &str) -> CacheKey {
        CacheKey::for_tests(plan, inputs)
    }

    #[test]
    fn changed_inputs_miss_and_drop_the_entry() {
        let cache = ResultsCache::new(1 << 20);
        cache.put(key("p", "i1"), result(10));
        assert!(cache.get(&key("p", "i1")).is_some());
        assert!(cache.get(&key("p", "i2")).is_none());
        assert_eq!(cache.usage().0, 0);
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let one = result(1000).batches[0].get_array_memory_size();
        let cache = ResultsCache::new(one * 2 + one / 2);
        cache.put(key("a", "i"), result(1000));
        cache.put(key("b", "i"), result(1000));
        assert!(cache.get(&key("a", "i")).is_some());
        cache.put(key("c", "i"), result(1000));
        assert!(cache.get(&key("a", "i")).is_some());
        assert!(cache.get(&key("b", "i")).is_none());
        assert!(cache.get(&key("c", "i")).is_some());
    }

    #[test]
    fn results_over_the_entry_limit_are_not_kept() {
        let cache = ResultsCache::new(100);
        cache.put(key("a", "i"), result(1000));
        assert_eq!(cache.usage(), (0, 0));
    }
}
