//! Dynamic filters across stages: a join's finished build side narrows the Parquet scans
//! of its probe side.
//!
//! DataFusion builds such filters inside one process (a hash join's build side updates
//! a predicate its probe-side scan reads while it runs). Across stages that shared state
//! cannot travel: the build side runs as other tasks, often on other executors, and a
//! serialized plan carries a predicate's value, not the predicate. So the stage planner
//! finds the same opportunity between stages, and the scheduler carries the value:
//!
//! 1. For every hash join whose probe rows outside the build keys' range can never be
//!    emitted, the build side's key columns are traced down to the output columns of the
//!    stage that produces them, and the probe side's key columns down to a Parquet scan
//!    (through projections, filters, repartitions, inner and semi joins, and the group
//!    keys of aggregates, into earlier stages where the probe side is read from one).
//! 2. The build stage's tasks measure those columns' smallest and largest values as
//!    they write their output (`quarry_common::column_bounds`).
//! 3. Before the stage with the scan is laid out, `key >= min AND key <= max` joins the
//!    scan's predicate, so row groups and pages outside the range are never read.
//!
//! A broadcast join's probe scan usually runs in the join's own stage, which waits for
//! the build side anyway: its filter is free. A scan in a stage that would run beside the
//! build stage (a partitioned join's probe side) waits for it only when the build side is
//! estimated at most an eighth of the scan's rows; otherwise the filter is not used,
//! since waiting would cost more than pruning could save. A filter changes which rows
//! are read, never the answer: rows outside the range cannot join.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::{JoinType, NullEquality, ScalarValue};
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::conjunction;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal, lit};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, PhysicalExpr, StatisticsArgs, StatisticsContext, replace_children_if_necessary,
};
use quarry_common::column_bounds::Range;
use quarry_common::shuffle_reader::ShuffleReaderExec;

use super::decisions::DynamicFilter;
use super::stages::StagePlan;

/// A scan waits for a build stage that would otherwise run beside it only when the build
/// side is estimated at most this fraction of the scan's rows.
const WAIT_WHEN_BUILD_AT_MOST: usize = 8;

/// Where an output column of a plan comes from.
enum Origin {
    /// A column of a Parquet scan of this stage, at `path` from the walk's start.
    Scan { path: Vec<usize>, column: usize },
    /// A column of the output of an earlier stage.
    Stage { stage: u32, column: usize },
}

/// Follow output column `column` of `plan` down through nodes that pass it on unchanged
/// and keep every row whose value it is (filtering the node's input by the column keeps
/// the rows of the node's output that pass the same filter).
fn trace(plan: &Arc<dyn ExecutionPlan>, mut column: usize) -> Option<Origin> {
    let mut node = Arc::clone(plan);
    let mut path = Vec::new();
    loop {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            return Some(Origin::Stage {
                stage: reader.stage_id(),
                column,
            });
        }
        if let Some(source) = node.downcast_ref::<DataSourceExec>() {
            source.downcast_to_file_source::<ParquetSource>()?;
            return Some(Origin::Scan { path, column });
        }
        let (child, child_column) = step(&node, column)?;
        path.push(child);
        column = child_column;
        let next = Arc::clone(node.children()[child]);
        node = next;
    }
}

/// The child and its column that output column `column` of `node` is.
fn step(node: &Arc<dyn ExecutionPlan>, column: usize) -> Option<(usize, usize)> {
    if node.fetch().is_some() {
        // A limit keeps the first rows: filtering below it would change which.
        return None;
    }
    let passes_through = node.downcast_ref::<RepartitionExec>().is_some()
        || node.downcast_ref::<CoalescePartitionsExec>().is_some()
        || node.downcast_ref::<SortExec>().is_some()
        || node.downcast_ref::<SortPreservingMergeExec>().is_some()
        || node.downcast_ref::<CooperativeExec>().is_some();
    if passes_through {
        return Some((0, column));
    }
    if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        return Some((0, expr.downcast_ref::<Column>()?.index()));
    }
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        return Some((
            0,
            match filter.projection() {
                Some(projection) => *projection.get(column)?,
                None => column,
            },
        ));
    }
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        // A group key: the groups left after filtering the input are the groups whose key
        // passes the filter.
        let group_by = aggregate.group_expr();
        if !group_by.is_single() {
            return None;
        }
        let (expr, _) = group_by.expr().get(column)?;
        return Some((0, expr.downcast_ref::<Column>()?.index()));
    }
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        let column = match &join.projection {
            Some(projection) => *projection.get(column)?,
            None => column,
        };
        let left = join.left().schema().fields().len();
        return match join.join_type() {
            JoinType::Inner if column < left => Some((0, column)),
            JoinType::Inner => Some((1, column - left)),
            JoinType::LeftSemi => Some((0, column)),
            JoinType::RightSemi => Some((1, column)),
            _ => None,
        };
    }
    None
}

/// Join types whose output never holds a probe row that matched nothing.
fn drops_unmatched_probe_rows(join: &HashJoinExec) -> bool {
    matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    ) && join.null_equality() == NullEquality::NullEqualsNothing
        && !join.null_aware
}

/// The dynamic filters worth using in a stage plan.
pub(crate) fn find(stages: &StagePlan) -> Vec<DynamicFilter> {
    let mut found: Vec<DynamicFilter> = Vec::new();
    for stage in &stages.stages {
        joins_below(&stage.plan, &mut Vec::new(), &mut |join, path| {
            add_filters_of(join, (stage.id, path), stages, &mut found)
        });
    }
    // The root runs on the coordinator and holds no scan: a join there can only narrow
    // scans of the stages it reads.
    joins_below(&stages.root, &mut Vec::new(), &mut |join, _| {
        add_filters_of(join, (0, &[]), stages, &mut found)
    });
    found
        .into_iter()
        .filter(|f| worth_waiting(f, stages))
        .collect()
}

/// Calls `visit` with every hash join under `plan` whose unmatched probe rows are
/// dropped, and its path from `plan`.
fn joins_below(
    plan: &Arc<dyn ExecutionPlan>,
    path: &mut Vec<usize>,
    visit: &mut dyn FnMut(&HashJoinExec, &[usize]),
) {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && drops_unmatched_probe_rows(join)
    {
        visit(join, path);
    }
    for (i, child) in plan.children().into_iter().enumerate() {
        path.push(i);
        joins_below(child, path, visit);
        path.pop();
    }
}

/// Add the filters `join` offers to `found`: its keys grouped by the build stage and the
/// scan they reach. `at` is the join's stage and its path there.
fn add_filters_of(
    join: &HashJoinExec,
    at: (u32, &[usize]),
    stages: &StagePlan,
    found: &mut Vec<DynamicFilter>,
) {
    for (build_key, probe_key) in join.on() {
        let (Some(build_key), Some(probe_key)) = (
            build_key.downcast_ref::<Column>(),
            probe_key.downcast_ref::<Column>(),
        ) else {
            continue;
        };
        let Some(Origin::Stage {
            stage: build_stage,
            column: build_column,
        }) = trace(join.left(), build_key.index())
        else {
            continue;
        };
        let Some((probe_stage, scan_path, scan_column, name)) =
            probe_scan(join, at, probe_key.index(), stages)
        else {
            continue;
        };
        match found.iter_mut().find(|f| {
            f.build_stage == build_stage && f.probe_stage == probe_stage && f.scan_path == scan_path
        }) {
            Some(filter) if !filter.scan_columns.contains(&scan_column) => {
                filter.build_columns.push(build_column as u32);
                filter.scan_columns.push(scan_column);
                filter.names.push(name);
            }
            Some(_) => {}
            None => found.push(DynamicFilter {
                build_stage,
                build_columns: vec![build_column as u32],
                probe_stage,
                scan_path,
                scan_columns: vec![scan_column],
                names: vec![name],
            }),
        }
    }
}

/// The Parquet scan (stage, path, column, name) a probe key of `join` (at `at`) comes
/// from: below the join in its own stage, or in a stage the probe side reads.
fn probe_scan(
    join: &HashJoinExec,
    (join_stage, join_path): (u32, &[usize]),
    column: usize,
    stages: &StagePlan,
) -> Option<(u32, Vec<usize>, usize, String)> {
    // A path below the join is a path in its stage once the join's own is put before it.
    let mut stage = join_stage;
    let mut origin = match trace(join.right(), column)? {
        Origin::Scan { path, column } => Origin::Scan {
            path: [join_path, &[1], &path].concat(),
            column,
        },
        other => other,
    };
    loop {
        match origin {
            Origin::Stage { stage: id, column } => {
                stage = id;
                origin = trace(&stages.stage(id)?.plan, column)?;
            }
            Origin::Scan { path, column } => {
                let scan = node_at(&stages.stage(stage)?.plan, &path)?;
                let name = scan.schema().field(column).name().clone();
                return Some((stage, path, column, name));
            }
        }
    }
}

pub(crate) fn node_at(
    plan: &Arc<dyn ExecutionPlan>,
    path: &[usize],
) -> Option<Arc<dyn ExecutionPlan>> {
    let mut node = Arc::clone(plan);
    for &i in path {
        let next = Arc::clone(*node.children().get(i)?);
        node = next;
    }
    Some(node)
}

/// Stages `stage` reads, directly or through others.
fn upstream(stages: &StagePlan, stage: u32) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![stage];
    while let Some(id) = todo.pop() {
        for input in stages.stage(id).map(|s| s.inputs()).unwrap_or_default() {
            if seen.insert(input) {
                todo.push(input);
            }
        }
    }
    seen
}

/// Whether the probe stage may wait for the build stage: it does already, or the build
/// side is small next to the scan (and waiting makes no cycle).
fn worth_waiting(filter: &DynamicFilter, stages: &StagePlan) -> bool {
    if upstream(stages, filter.probe_stage).contains(&filter.build_stage) {
        return true;
    }
    if upstream(stages, filter.build_stage).contains(&filter.probe_stage) {
        return false;
    }
    stages
        .stage(filter.probe_stage)
        .and_then(|s| node_at(&s.plan, &filter.scan_path))
        .is_some_and(|scan| small_next_to(stages, filter.build_stage, &scan))
}

/// Whether the output of `build_stage` is estimated at most 1/[`WAIT_WHEN_BUILD_AT_MOST`]
/// of the rows of `probe` (both estimates known).
pub(crate) fn small_next_to(
    stages: &StagePlan,
    build_stage: u32,
    probe: &Arc<dyn ExecutionPlan>,
) -> bool {
    let rows = |plan: &Arc<dyn ExecutionPlan>| {
        StatisticsContext::new()
            .compute(plan.as_ref(), &StatisticsArgs::new())
            .ok()
            .and_then(|s| s.num_rows.get_value().copied())
    };
    let build = stages.stage(build_stage).and_then(|s| rows(&s.plan));
    matches!((build, rows(probe)), (Some(b), Some(p)) if b.saturating_mul(WAIT_WHEN_BUILD_AT_MOST) <= p)
}

/// `plan` (a probe stage's plan) with the scan at `filter.scan_path` narrowed to
/// `ranges` (one per scan column). A range that cannot be written as a predicate on the
/// scan's column is left out.
pub(crate) fn narrow(
    plan: &Arc<dyn ExecutionPlan>,
    filter: &DynamicFilter,
    ranges: &[Range],
) -> Result<Arc<dyn ExecutionPlan>> {
    replace_at(plan, &filter.scan_path, &|scan| {
        let Some(source) = scan.downcast_ref::<DataSourceExec>() else {
            return Ok(None);
        };
        let schema = scan.schema();
        let mut conditions: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        for (&column, range) in filter.scan_columns.iter().zip(ranges) {
            let Some(field) = schema.fields().get(column) else {
                continue;
            };
            let Range::Within(min, max) = range else {
                // The build side has no key: no probe row can match.
                conditions.push(lit(false));
                continue;
            };
            let (Ok(min), Ok(max)) = (
                min.cast_to(field.data_type()),
                max.cast_to(field.data_type()),
            ) else {
                continue;
            };
            let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), column));
            conditions.push(between(key, min, max));
        }
        if conditions.is_empty() {
            return Ok(None);
        }
        let pushed = source
            .data_source()
            .try_pushdown_filters(vec![conjunction(conditions)], &ConfigOptions::default())?;
        Ok(pushed.updated_node.map(|data_source| {
            Arc::new(source.clone().with_data_source(data_source)) as Arc<dyn ExecutionPlan>
        }))
    })
}

fn between(
    key: Arc<dyn PhysicalExpr>,
    min: ScalarValue,
    max: ScalarValue,
) -> Arc<dyn PhysicalExpr> {
    let low: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::clone(&key),
        Operator::GtEq,
        Arc::new(Literal::new(min)),
    ));
    let high: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        key,
        Operator::LtEq,
        Arc::new(Literal::new(max)),
    ));
    Arc::new(BinaryExpr::new(low, Operator::And, high))
}

pub(crate) type Replace<'a> =
    dyn Fn(&Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> + 'a;

/// `plan` with the node at `path` replaced by what `replace` makes of it (unchanged when
/// it makes nothing or the path leads nowhere).
pub(crate) fn replace_at(
    plan: &Arc<dyn ExecutionPlan>,
    path: &[usize],
    replace: &Replace<'_>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some((&first, rest)) = path.split_first() else {
        return Ok(replace(plan)?.unwrap_or_else(|| Arc::clone(plan)));
    };
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let Some(child) = children.get(first) else {
        return Ok(Arc::clone(plan));
    };
    let new_child = replace_at(child, rest, replace)?;
    if Arc::ptr_eq(&new_child, child) {
        return Ok(Arc::clone(plan));
    }
    let mut children = children;
    children[first] = new_child;
    replace_children_if_necessary(Arc::clone(plan), children)
}
