//! Mergeable distinct-count sketches, so that aggregation reflections can answer
//! `approx_distinct`:
//!
//! - `approx_set(x)` is an aggregate whose value is the HyperLogLog sketch of `x`, as bytes;
//! - `approx_set_merge(sketch)` is an aggregate that merges sketches into one;
//! - `approx_set_count(sketch)` is an aggregate that merges sketches and estimates how many
//!   distinct values they saw.
//!
//! Both wrap DataFusion's own `approx_distinct` groups accumulator rather than a sketch of
//! our own: its sketch is what `approx_distinct` itself merges between the two phases of
//! an aggregation, so `approx_set_count(approx_set(x))` over any grouping of the rows gives
//! exactly the estimate `approx_distinct(x)` gives over them.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err, not_impl_err};
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::approx_distinct::ApproxDistinct;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature,
    TypeSignature, Volatility,
};

/// The sketch aggregate's name.
pub const APPROX_SET: &str = "approx_set";
/// The merging aggregate's name.
pub const APPROX_SET_MERGE: &str = "approx_set_merge";
/// The estimating aggregate's name.
pub const APPROX_SET_COUNT: &str = "approx_set_count";

/// The column types whose sketches merge: those `approx_distinct` keeps a HyperLogLog for
/// (booleans and 8- and 16-bit integers it counts exactly with a bitmap instead).
pub fn sketchable(data_type: &DataType) -> bool {
    !matches!(
        data_type,
        DataType::Null
            | DataType::Boolean
            | DataType::Int8
            | DataType::UInt8
            | DataType::Int16
            | DataType::UInt16
    ) && !data_type.is_floating()
}

static SET: LazyLock<Arc<AggregateUDF>> =
    LazyLock::new(|| Arc::new(AggregateUDF::from(Sketch::new(false, false))));
static MERGE: LazyLock<Arc<AggregateUDF>> =
    LazyLock::new(|| Arc::new(AggregateUDF::from(Sketch::new(true, false))));
static COUNT: LazyLock<Arc<AggregateUDF>> =
    LazyLock::new(|| Arc::new(AggregateUDF::from(Sketch::new(true, true))));

/// `approx_set_count`, for plans that estimate from sketches.
pub fn approx_set_count() -> Arc<AggregateUDF> {
    Arc::clone(&COUNT)
}

/// `approx_set_merge`, for plans that merge sketches into sketches.
pub fn approx_set_merge() -> Arc<AggregateUDF> {
    Arc::clone(&MERGE)
}

/// Make both aggregates known to a session (planning on the coordinator, decoding plans
/// on executors).
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udaf(Arc::clone(&SET))?;
    registry.register_udaf(Arc::clone(&MERGE))?;
    registry.register_udaf(Arc::clone(&COUNT))?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Sketch {
    /// Its input is sketches (`approx_set_merge`, `approx_set_count`); else rows.
    merges: bool,
    /// Its value is the estimate (`approx_set_count`); else a sketch.
    estimates: bool,
    signature: Signature,
}

impl Sketch {
    fn new(merges: bool, estimates: bool) -> Self {
        let signature = if merges {
            Signature::one_of(
                vec![TypeSignature::Exact(vec![DataType::Binary])],
                Volatility::Immutable,
            )
        } else {
            Signature::any(1, Volatility::Immutable)
        };
        Sketch {
            merges,
            estimates,
            signature,
        }
    }

    /// DataFusion's HyperLogLog accumulator for these arguments.
    fn inner(&self, args: &AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        let input = args.expr_fields.first().map(|f| f.data_type().clone());
        match input {
            Some(t) if self.merges || sketchable(&t) => ApproxDistinct::new()
                .create_groups_accumulator(AccumulatorArgs {
                    return_field: Arc::new(Field::new(self.name(), DataType::UInt64, false)),
                    ..*args
                }),
            Some(t) => not_impl_err!("{APPROX_SET} of a {t} column is not supported"),
            None => internal_err!("{} takes one argument", self.name()),
        }
    }
}

impl AggregateUDFImpl for Sketch {
    fn name(&self) -> &str {
        match (self.merges, self.estimates) {
            (_, true) => APPROX_SET_COUNT,
            (true, false) => APPROX_SET_MERGE,
            (false, false) => APPROX_SET,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(if self.estimates {
            DataType::UInt64
        } else {
            DataType::Binary
        })
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(if self.estimates {
            ScalarValue::UInt64(Some(0))
        } else {
            ScalarValue::Binary(Some(Vec::new()))
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sketch]", args.name),
            DataType::Binary,
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let mut inner = self.inner(&args)?;
        // One group that exists even when no row comes.
        inner.merge_batch(&[empty_sketches()], &[], 1)?;
        Ok(Box::new(OneGroup {
            inner: std::sync::Mutex::new(inner),
            merges: self.merges,
            estimates: self.estimates,
            done: None,
        }))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups {
            inner: self.inner(&args)?,
            merges: self.merges,
            estimates: self.estimates,
        }))
    }
}

fn empty_sketches() -> ArrayRef {
    Arc::new(arrow::array::BinaryArray::from(Vec::<&[u8]>::new()))
}

/// The per-group accumulator: sketches rows (`approx_set`) or sketches (`approx_set_count`).
struct Groups {
    inner: Box<dyn GroupsAccumulator>,
    merges: bool,
    estimates: bool,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("merges", &self.merges)
            .finish()
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        if !self.merges {
            return self
                .inner
                .update_batch(values, group_indices, opt_filter, total_num_groups);
        }
        let values = kept(values, opt_filter)?;
        self.inner
            .merge_batch(&values, group_indices, total_num_groups)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        if !self.merges {
            return self.inner.convert_to_state(values, opt_filter);
        }
        // Sketches are their own state.
        kept(values, opt_filter)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        if self.estimates {
            self.inner.evaluate(emit_to)
        } else {
            first(self.inner.state(emit_to)?)
        }
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

/// Sketches with those a FILTER clause drops made NULL: they merge as nothing.
fn kept(values: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
    match (filter, values.first()) {
        (Some(keep), Some(sketches)) => {
            let drop = arrow::compute::not(keep)?;
            Ok(vec![arrow::compute::nullif(sketches, &drop)?])
        }
        _ => Ok(values.to_vec()),
    }
}

fn first(arrays: Vec<ArrayRef>) -> Result<ArrayRef> {
    match arrays.into_iter().next() {
        Some(array) => Ok(array),
        None => internal_err!("a sketch state without its column"),
    }
}

/// The accumulator of an aggregate without GROUP BY: the groups accumulator with one
/// group, so that sketches are kept and merged exactly as with GROUP BY.
struct OneGroup {
    /// A mutex only to make the accumulator `Sync`; `&mut self` reaches it unlocked.
    inner: std::sync::Mutex<Box<dyn GroupsAccumulator>>,
    merges: bool,
    estimates: bool,
    /// The group is emitted once; its state (the sketch) is kept for later calls.
    done: Option<ScalarValue>,
}

impl std::fmt::Debug for OneGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneGroup")
            .field("merges", &self.merges)
            .finish()
    }
}

impl OneGroup {
    fn inner(&mut self) -> &mut Box<dyn GroupsAccumulator> {
        self.inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn zeros(len: usize) -> Vec<usize> {
        vec![0; len]
    }

    fn sketch(&mut self) -> Result<ScalarValue> {
        if let Some(done) = &self.done {
            return Ok(done.clone());
        }
        let state = first(self.inner().state(EmitTo::All)?)?;
        let sketch = ScalarValue::try_from_array(&state, 0)?;
        // Later calls merge the emitted sketch back into a fresh group.
        self.inner().merge_batch(&[state], &Self::zeros(1), 1)?;
        self.done = Some(sketch.clone());
        Ok(sketch)
    }
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.done = None;
        let len = values.first().map_or(0, |v| v.len());
        let groups = Self::zeros(len);
        if self.merges {
            self.inner().merge_batch(values, &groups, 1)
        } else {
            self.inner().update_batch(values, &groups, None, 1)
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.done = None;
        let len = states.first().map_or(0, |v| v.len());
        self.inner().merge_batch(states, &Self::zeros(len), 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.sketch()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let sketch = self.sketch()?;
        if !self.estimates {
            return Ok(sketch);
        }
        // The estimate emits the group: merge the sketch back for later calls.
        let counts = self.inner().evaluate(EmitTo::All)?;
        self.inner()
            .merge_batch(&[sketch.to_array()?], &Self::zeros(1), 1)?;
        ScalarValue::try_from_array(&counts, 0)
    }

    fn size(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.size()) + self.done.as_ref().map_or(0, |d| d.size())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    async fn context() -> SessionContext {
        // Several partitions, so that sketches merge between the phases of an aggregate.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        let mut state = ctx.state();
        super::register(&mut state).expect("register");
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("small", DataType::Int64, true),
            Field::new("big", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batches: Vec<Vec<RecordBatch>> = (0..4)
            .map(|part| {
                let rows: Vec<i64> = (0..25_000).map(|i| i * 4 + part).collect();
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|i| i % 10))),
                        Arc::new(Int64Array::from_iter(
                            rows.iter().map(|i| (i % 7 != 0).then_some(i % 37)),
                        )),
                        Arc::new(Int64Array::from_iter_values(rows.iter().copied())),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|i| format!("s{}", i % 5000)),
                        )),
                    ],
                )
                .expect("batch");
                vec![batch]
            })
            .collect();
        let table = MemTable::try_new(schema, batches).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    async fn counts(ctx: &SessionContext, sql: &str) -> Vec<u64> {
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        let mut values: Vec<u64> = batches
            .iter()
            .flat_map(|b| {
                b.column(b.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .expect("counts")
                    .values()
                    .to_vec()
            })
            .collect();
        values.sort();
        values
    }

    #[tokio::test]
    async fn merged_sketches_estimate_what_approx_distinct_does() {
        let ctx = context().await;
        for column in ["small", "big", "s"] {
            // Over all rows, from sketches grouped finely, and from one sketch.
            let direct = counts(&ctx, &format!("SELECT approx_distinct({column}) FROM t")).await;
            let merged = counts(
                &ctx,
                &format!(
                    "SELECT approx_set_count(k) FROM (SELECT g, approx_set({column}) AS k FROM t GROUP BY g)"
                ),
            )
            .await;
            let remerged = counts(
                &ctx,
                &format!(
                    "SELECT approx_set_count(k) FROM (SELECT approx_set_merge(k) AS k FROM (SELECT g, approx_set({column}) AS k FROM t GROUP BY g) GROUP BY g % 2)"
                ),
            )
            .await;
            assert_eq!(direct, remerged, "{column} merged twice");
            let whole = counts(
                &ctx,
                &format!(
                    "SELECT approx_set_count(k) FROM (SELECT approx_set({column}) AS k FROM t)"
                ),
            )
            .await;
            assert_eq!(direct, merged, "{column}");
            assert_eq!(direct, whole, "{column}");
            assert!(direct[0] > 0);
            // Rolled up by a coarser key.
            let direct = counts(
                &ctx,
                &format!("SELECT g % 3, approx_distinct({column}) FROM t GROUP BY 1"),
            )
            .await;
            let merged = counts(
                &ctx,
                &format!(
                    "SELECT g % 3, approx_set_count(k) FROM (SELECT g, approx_set({column}) AS k FROM t GROUP BY g) GROUP BY 1"
                ),
            )
            .await;
            assert_eq!(direct, merged, "{column} by g % 3");
        }
        // No rows: 0, as approx_distinct gives.
        let empty = counts(
            &ctx,
            "SELECT approx_set_count(k) FROM (SELECT approx_set(big) AS k FROM t WHERE g > 100)",
        )
        .await;
        assert_eq!(empty, vec![0]);
    }

    #[tokio::test]
    async fn small_types_are_refused_clearly() {
        let ctx = context().await;
        let error = ctx
            .sql("SELECT approx_set(CAST(g AS SMALLINT)) FROM t")
            .await
            .expect("plan")
            .collect()
            .await
            .expect_err("int16");
        assert!(
            error.to_string().contains("approx_set of a Int16"),
            "{error}"
        );
    }
}
