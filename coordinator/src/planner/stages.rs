//! The stage planner: cuts a DataFusion physical plan into a DAG of stages where data
//! moves between partitions, so each stage can run as independent tasks on executors.
//!
//! ```text
//!   SortPreservingMergeExec            root stage (coordinator): merge(reader(s2))
//!     SortExec                         stage 2: sort(final agg(reader(s1)))  × P tasks
//!       AggregateExec(final)
//!         RepartitionExec(hash)  ──cut─►  stage 1: partial agg(scan)  × P tasks,
//!           AggregateExec(partial)                  output hashed into P pieces
//!             DataSourceExec
//! ```
//!
//! Cuts happen at hash `RepartitionExec` (the producer hashes its output;
//! consumer partition p reads piece p of every producer task), and under
//! `CoalescePartitionsExec` and `SortPreservingMergeExec` (consumer partition t reads the
//! whole output of producer task t; the merge itself stays in the consumer). The build
//! side of a broadcast (`CollectLeft`) hash join sits under a coalesce, so every task of
//! the join stage reads all of it. Whatever remains above the last cut is the root stage,
//! which runs on the coordinator and streams to the client; scans never stay in it.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{
    HashJoinExec, HashJoinExecBuilder, NestedLoopJoinExec, PartitionMode,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, replace_children_if_necessary,
};
use quarry_common::shuffle_reader::ShuffleReaderExec;

use super::decisions::{AdaptiveJoin, DynamicFilter};

/// One stage: a plan whose every partition is one task.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: u32,
    /// Leaves are file scans or readers of earlier stages.
    pub plan: Arc<dyn ExecutionPlan>,
    /// How each task's output is split; None = one piece per task.
    pub output: Option<Partitioning>,
    /// Partitions each task runs at once, each a slot's worth of work: 1 for a stage cut
    /// at every exchange; all of the plan's for a plan run whole on one executor.
    pub slots_per_task: u32,
}

impl Stage {
    pub fn task_count(&self) -> usize {
        self.plan.output_partitioning().partition_count()
    }

    /// Pieces each task writes.
    pub fn output_pieces(&self) -> usize {
        self.output
            .as_ref()
            .map(|p| p.partition_count())
            .unwrap_or(1)
    }

    /// The stages this one reads.
    pub fn inputs(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        collect_reader_stages(&self.plan, &mut ids);
        ids
    }
}

/// The stage DAG of a query; stages are in dependency order (inputs first).
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub stages: Vec<Stage>,
    /// Runs on the coordinator; its readers read the last stages.
    pub root: Arc<dyn ExecutionPlan>,
    /// Scans narrowed at run time by the output of other stages.
    pub dynamic_filters: Vec<DynamicFilter>,
    /// Joins whose strategy is chosen once their build stage has run.
    pub adaptive_joins: Vec<AdaptiveJoin>,
}

impl StagePlan {
    pub fn stage(&self, id: u32) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub fn task_count(&self) -> usize {
        self.stages.iter().map(Stage::task_count).sum()
    }

    /// The stages `stage` waits for beyond those it reads: the build stages of the
    /// dynamic filters on its scans and of the joins it may move into.
    pub fn waits_for(&self, stage: u32) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .dynamic_filters
            .iter()
            .filter(|f| f.probe_stage == stage)
            .map(|f| f.build_stage)
            .chain(
                self.adaptive_joins
                    .iter()
                    .filter(|j| j.probe_stage == stage)
                    .map(|j| j.build_stage),
            )
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Does the plan read files? Only such plans are worth sending to executors.
pub(crate) fn scans_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>()
        && source
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .is_some()
    {
        return true;
    }
    // The test source that never yields runs where scans run.
    if plan
        .downcast_ref::<quarry_common::stall::StallExec>()
        .is_some()
    {
        return true;
    }
    plan.children().into_iter().any(scans_files)
}

/// Does `plan` scan only files under `folder` (a store URL with a path), at most
/// `max_bytes` of them, and write nothing? Such a plan (a query answered from small
/// materializations) is cheaper on the coordinator than as stages on executors.
pub(crate) fn reads_only_small_files_under(
    plan: &Arc<dyn ExecutionPlan>,
    folder: &url::Url,
    max_bytes: u64,
) -> bool {
    let store = &folder[..url::Position::BeforePath];
    let prefix = folder.path().trim_start_matches('/');
    let mut bytes = 0u64;
    let mut scans = 0usize;
    let mut ok = true;
    let _ = plan.apply(|node| {
        if let Some(source) = node.downcast_ref::<DataSourceExec>()
            && let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>()
        {
            scans += 1;
            if scan.object_store_url.as_str().trim_end_matches('/') != store.trim_end_matches('/') {
                ok = false;
            }
            for file in scan.file_groups.iter().flat_map(|g| g.files()) {
                ok &= file.object_meta.location.as_ref().starts_with(prefix);
                bytes = bytes.saturating_add(file.object_meta.size);
            }
        } else if node.children().is_empty() && node.downcast_ref::<DataSourceExec>().is_none() {
            // Leaves other than file scans (the stall test source) run on executors.
            ok &= node
                .downcast_ref::<quarry_common::stall::StallExec>()
                .is_none();
        }
        if node
            .downcast_ref::<quarry_common::table_write::FileWriteExec>()
            .is_some()
        {
            ok = false;
        }
        Ok(if ok {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        })
    });
    ok && scans > 0 && bytes <= max_bytes
}

#[derive(Default)]
struct StagePlanner {
    stages: Vec<Stage>,
}

impl StagePlanner {
    fn add_stage(&mut self, plan: Arc<dyn ExecutionPlan>, output: Option<Partitioning>) -> u32 {
        let id = self.stages.len() as u32 + 1;
        self.stages.push(Stage {
            id,
            plan,
            output,
            slots_per_task: 1,
        });
        id
    }

    /// Cut below every exchange of `plan`, bottom-up.
    fn cut(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let children = plan
            .children()
            .into_iter()
            .map(|child| self.cut(Arc::clone(child)))
            .collect::<Result<Vec<_>>>()?;
        let plan = replace_children_if_necessary(plan, children)?;

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            let partitioning = repartition.partitioning().clone();
            // DataFusion spreads a scan of fewer partitions than the target round-robin,
            // so its parent runs on all cores. Across executors that spread is a stage of
            // its own for a few small batches; the parent reads its input directly.
            if matches!(partitioning, Partitioning::RoundRobinBatch(_)) {
                return Ok(Arc::clone(repartition.input()));
            }
            if matches!(partitioning, Partitioning::Hash(_, _)) {
                let input = Arc::clone(repartition.input());
                let count = partitioning.partition_count();
                let stage = self.add_stage(input, Some(partitioning));
                return Ok(Arc::new(ShuffleReaderExec::unresolved(
                    stage,
                    plan.schema(),
                    count,
                )));
            }
        }
        if plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<SortPreservingMergeExec>().is_some()
        {
            let input = Arc::clone(plan.children()[0]);
            let reader = self.read_whole(input);
            return replace_children_if_necessary(plan, vec![reader]);
        }
        Ok(plan)
    }

    /// A stage of `plan` whose task t becomes partition t of the returned reader.
    fn read_whole(&mut self, plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let schema = plan.schema();
        let count = plan.output_partitioning().partition_count();
        let stage = self.add_stage(plan, None);
        Arc::new(ShuffleReaderExec::unresolved(stage, schema, count))
    }
}

/// Whether a join emits build-side rows only once every probe partition has finished
/// (unmatched rows of an outer join, the rows of a semi or anti join). In one process
/// the partitions share that bookkeeping; split across tasks they would not.
fn emits_build_rows_at_end(join_type: &JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
    )
}

/// Broadcast joins whose build side is emitted at the end (outer, semi and anti joins)
/// cannot split their probe side over tasks: each task would emit the build rows it alone
/// did not match. Such hash joins become partitioned joins instead (both sides hashed on
/// the join keys, so each task owns its keys); a null-aware anti join (`NOT IN`), which
/// must see every probe row, and a nested-loop join read their whole probe side in one
/// task (the probe side is merged first, a cut).
fn keep_build_side_whole(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let merged = plan.transform_up(|node| {
        let (probe, hash_join) = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            if *join.partition_mode() != PartitionMode::CollectLeft
                || !emits_build_rows_at_end(join.join_type())
            {
                return Ok(Transformed::no(node));
            }
            (Arc::clone(join.right()), Some(join))
        } else if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
            if !emits_build_rows_at_end(join.join_type()) {
                return Ok(Transformed::no(node));
            }
            (Arc::clone(join.right()), None)
        } else {
            return Ok(Transformed::no(node));
        };
        let partitions = probe.output_partitioning().partition_count();
        if partitions <= 1 {
            return Ok(Transformed::no(node));
        }
        if let Some(join) = hash_join.filter(|j| !j.null_aware) {
            return Ok(Transformed::yes(partitioned(join, partitions)?));
        }
        let left = Arc::clone(node.children()[0]);
        let merged: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(probe));
        Ok(Transformed::yes(replace_children_if_necessary(
            node,
            vec![left, merged],
        )?))
    })?;
    Ok(merged.data)
}

/// `join` (a broadcast join) as a partitioned join over `partitions` hash partitions.
fn partitioned(join: &HashJoinExec, partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    // The build side was merged for the broadcast; hash its partitions instead.
    let build = match join.left().downcast_ref::<CoalescePartitionsExec>() {
        Some(merge) => Arc::clone(merge.input()),
        None => Arc::clone(join.left()),
    };
    let (build_keys, probe_keys): (Vec<_>, Vec<_>) = join
        .on()
        .iter()
        .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
        .unzip();
    let build: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        build,
        Partitioning::Hash(build_keys, partitions),
    )?);
    let probe: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        Arc::clone(join.right()),
        Partitioning::Hash(probe_keys, partitions),
    )?);
    HashJoinExecBuilder::from(join)
        .with_partition_mode(PartitionMode::Partitioned)
        .with_new_children(vec![build, probe])?
        .reset_state()
        .build_exec()
}

/// Cut `plan` into stages. The root keeps no file scans, and yields one partition.
/// Nothing is left to run time (see `planner::distributed`).
pub(crate) fn plan_stages(plan: Arc<dyn ExecutionPlan>) -> Result<StagePlan> {
    let plan = keep_build_side_whole(plan)?;
    let mut planner = StagePlanner::default();
    // Merge partitions at the very top, so everything below the merge (final
    // aggregations, projections) runs on the executors, not on the coordinator.
    let plan: Arc<dyn ExecutionPlan> = if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    };
    let mut root = planner.cut(plan)?;
    if scans_files(&root) {
        // Scans below no exchange (e.g. a single file group): run that part as a stage,
        // below the nodes that only the coordinator runs.
        root = read_below_coordinator_nodes(&mut planner, root)?;
    }
    if root.output_partitioning().partition_count() > 1 {
        root = Arc::new(CoalescePartitionsExec::new(root));
    }
    Ok(StagePlan {
        stages: planner.stages,
        root,
        dynamic_filters: Vec::new(),
        adaptive_joins: Vec::new(),
    })
}

/// The whole of `plan` as one stage of one task, which runs every partition of it in one
/// process (in-process repartitions, broadcasts shared by all partitions), as DataFusion
/// runs a plan; the root reads its one output. For a plan whose input one executor reads
/// faster than its stages would move it (see `engine::placement`).
pub(crate) fn plan_one_stage(plan: Arc<dyn ExecutionPlan>) -> Result<StagePlan> {
    let partitions = plan.output_partitioning().partition_count();
    let plan: Arc<dyn ExecutionPlan> = if partitions > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    };
    let mut planner = StagePlanner::default();
    let root = planner.read_whole(plan);
    for stage in &mut planner.stages {
        stage.slots_per_task = u32::try_from(partitions).unwrap_or(u32::MAX).max(1);
    }
    Ok(StagePlan {
        stages: planner.stages,
        root,
        dynamic_filters: Vec::new(),
        adaptive_joins: Vec::new(),
    })
}

/// Nodes that never go to executors: the commit of a write, and the count of rows a
/// COPY wrote (they gather every task's answer; the commit holds the table's lock).
fn runs_on_coordinator(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<crate::datasets::delta::DeltaCommitExec>()
        .is_some()
        || plan
            .downcast_ref::<quarry_common::table_write::WrittenRowsExec>()
            .is_some()
}

fn read_below_coordinator_nodes(
    planner: &mut StagePlanner,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !runs_on_coordinator(&plan) {
        return Ok(planner.read_whole(plan));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| {
            let read = read_below_coordinator_nodes(planner, Arc::clone(child))?;
            Ok(if read.output_partitioning().partition_count() > 1 {
                Arc::new(CoalescePartitionsExec::new(read)) as Arc<dyn ExecutionPlan>
            } else {
                read
            })
        })
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

fn collect_reader_stages(plan: &Arc<dyn ExecutionPlan>, ids: &mut Vec<u32>) {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        if !ids.contains(&reader.stage_id()) {
            ids.push(reader.stage_id());
        }
        return;
    }
    for child in plan.children() {
        collect_reader_stages(child, ids);
    }
}

/// The stage DAG as text, for EXPLAIN.
pub(crate) fn display_stages(stages: &StagePlan) -> String {
    let mut out = String::from("Stage root (coordinator, 1 task)\n");
    indent_plan(&mut out, &stages.root);
    for stage in stages.stages.iter().rev() {
        let output = match &stage.output {
            Some(p) => format!("{p}"),
            None => "single piece per task".to_string(),
        };
        out.push_str(&format!(
            "Stage {} (executors, {} tasks, output: {output})\n",
            stage.id,
            stage.task_count()
        ));
        indent_plan(&mut out, &stage.plan);
    }
    for filter in &stages.dynamic_filters {
        out.push_str(&format!("Dynamic filter: {}\n", filter.describe()));
    }
    for join in &stages.adaptive_joins {
        out.push_str(&format!("Join chosen at run time: {}\n", join.describe()));
    }
    out
}

fn indent_plan(out: &mut String, plan: &Arc<dyn ExecutionPlan>) {
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}
