//! Where a stage's tasks should run.
//!
//! - Files in executors' data directories (`cluster://` URLs) are scanned where they
//!   are: the scan's file groups are rebuilt so each task reads files one executor holds,
//!   and the task may run only there (or on another executor holding the same files).
//! - Object-store and shared-filesystem files may be read anywhere; each task prefers the
//!   executor that rendezvous hashing gives its first file, so repeated scans of the same
//!   file land on the same executor (its caches stay warm).
//! - Tasks that read only other stages' output run wherever a slot is free.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use quarry_common::QuarryError;

use crate::cluster::ExecutorInfo;
use crate::planner::stages::Stage;

use quarry_common::protocol::CLUSTER_FILES_URL;

/// Where one task may or should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Placement {
    Any,
    /// Best on this executor; anywhere else works too.
    Prefer(String),
    /// Only these executors can run it (they hold its files).
    Only(BTreeSet<String>),
}

impl Placement {
    pub(super) fn allows(&self, executor_id: &str) -> bool {
        match self {
            Placement::Only(holders) => holders.contains(executor_id),
            _ => true,
        }
    }

    pub(super) fn preferred(&self) -> Option<&str> {
        match self {
            Placement::Prefer(e) => Some(e),
            Placement::Only(holders) => holders.iter().next().map(String::as_str),
            Placement::Any => None,
        }
    }
}

/// A stage's plan as it will run, and where each of its tasks goes.
#[derive(Debug)]
pub(super) struct StageLayout {
    pub plan: Arc<dyn ExecutionPlan>,
    placements: Vec<Placement>,
    /// What was decided for it at run time (dynamic filters, join strategies), as
    /// EXPLAIN ANALYZE shows it.
    pub notes: Vec<String>,
}

impl StageLayout {
    pub(super) fn task_count(&self) -> usize {
        self.plan.output_partitioning().partition_count()
    }

    pub(super) fn placement(&self, partition: usize) -> Placement {
        self.placements
            .get(partition)
            .cloned()
            .unwrap_or(Placement::Any)
    }
}

/// Lay out a stage over the executors it may use.
pub(super) fn lay_out(
    stage: &Stage,
    executors: &[ExecutorInfo],
) -> Result<StageLayout, QuarryError> {
    let plan = regroup_cluster_scans(Arc::clone(&stage.plan), executors)?;
    let placements = (0..plan.output_partitioning().partition_count())
        .map(|p| placement_of(&plan, p, executors))
        .collect();
    Ok(StageLayout {
        plan,
        placements,
        notes: Vec::new(),
    })
}

fn is_cluster_scan(scan: &FileScanConfig) -> bool {
    scan.object_store_url.as_str() == CLUSTER_FILES_URL
}

/// Which executors hold each data-directory file.
fn holders(executors: &[ExecutorInfo]) -> BTreeMap<String, BTreeSet<String>> {
    let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for executor in executors {
        for file in executor.local_files.iter() {
            holders
                .entry(file.path.clone())
                .or_default()
                .insert(executor.executor_id.clone());
        }
    }
    holders
}

/// Rebuild the file groups of data-directory scans so that each group is read by one
/// executor holding all its files, spreading bytes evenly over the holders.
fn regroup_cluster_scans(
    plan: Arc<dyn ExecutionPlan>,
    executors: &[ExecutorInfo],
) -> Result<Arc<dyn ExecutionPlan>, QuarryError> {
    let holders = holders(executors);
    let slots: BTreeMap<&str, usize> = executors
        .iter()
        .map(|e| (e.executor_id.as_str(), e.slots.max(1) as usize))
        .collect();
    let rewritten = plan.transform_up(|node| {
        let Some(source) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        if !is_cluster_scan(scan) {
            return Ok(Transformed::no(node));
        }
        // Largest files first, each to the holder with the fewest bytes so far.
        let mut files: Vec<PartitionedFile> = scan
            .file_groups
            .iter()
            .flat_map(|g| g.files().iter().cloned())
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut assigned: BTreeMap<String, (u64, Vec<PartitionedFile>)> = BTreeMap::new();
        for file in files {
            let path = file.object_meta.location.to_string();
            let Some(candidates) = holders.get(&path) else {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "no active executor holds {path}"
                )));
            };
            let chosen = candidates
                .iter()
                .min_by_key(|e| assigned.get(*e).map(|(bytes, _)| *bytes).unwrap_or(0))
                .cloned()
                .unwrap_or_default();
            let entry = assigned.entry(chosen).or_default();
            entry.0 += file.object_meta.size;
            entry.1.push(file);
        }
        // Each executor's files in as many groups as it has slots.
        let mut groups = Vec::new();
        for (executor, (_, files)) in assigned {
            let n = slots
                .get(executor.as_str())
                .copied()
                .unwrap_or(1)
                .min(files.len())
                .max(1);
            let mut split: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
            for file in files {
                if let Some(smallest) = split.iter_mut().min_by_key(|(bytes, _)| *bytes) {
                    smallest.0 += file.object_meta.size;
                    smallest.1.push(file);
                }
            }
            groups.extend(split.into_iter().map(|(_, files)| FileGroup::new(files)));
        }
        if groups.is_empty() {
            groups.push(FileGroup::new(Vec::new()));
        }
        let config = FileScanConfigBuilder::from(scan.clone())
            .with_file_groups(groups)
            .build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(config) as _
        ))
    })?;
    Ok(rewritten.data)
}

/// The file scan group partition `p` of `plan` reads, following the partition down.
fn files_of_partition(plan: &Arc<dyn ExecutionPlan>, p: usize) -> Option<(bool, Vec<String>)> {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let scan = source.data_source().downcast_ref::<FileScanConfig>()?;
        let group = scan.file_groups.get(p)?;
        let files = group
            .files()
            .iter()
            .map(|f| f.object_meta.location.to_string())
            .collect();
        return Some((is_cluster_scan(scan), files));
    }
    if plan.downcast_ref::<UnionExec>().is_some() {
        let mut offset = 0;
        for child in plan.children() {
            let n = child.output_partitioning().partition_count();
            if p < offset + n {
                return files_of_partition(child, p - offset);
            }
            offset += n;
        }
        return None;
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::CollectLeft
    {
        return files_of_partition(join.right(), p);
    }
    let count = plan.output_partitioning().partition_count();
    plan.children()
        .into_iter()
        .filter(|c| c.output_partitioning().partition_count() == count)
        .find_map(|c| files_of_partition(c, p))
}

fn rendezvous<'a>(key: &str, executors: &'a [ExecutorInfo]) -> Option<&'a ExecutorInfo> {
    executors.iter().max_by_key(|e| {
        let mut hasher = DefaultHasher::new();
        e.executor_id.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    })
}

fn placement_of(plan: &Arc<dyn ExecutionPlan>, p: usize, executors: &[ExecutorInfo]) -> Placement {
    let Some((in_cluster, files)) = files_of_partition(plan, p) else {
        return Placement::Any;
    };
    if in_cluster {
        // Executors holding every file of the group.
        let holders = holders(executors);
        let mut common: Option<BTreeSet<String>> = None;
        for file in &files {
            let these = holders.get(file).cloned().unwrap_or_default();
            common = Some(match common {
                None => these,
                Some(c) => c.intersection(&these).cloned().collect(),
            });
        }
        return match common {
            Some(c) => Placement::Only(c),
            None => Placement::Any,
        };
    }
    match files.first().and_then(|f| rendezvous(f, executors)) {
        Some(e) => Placement::Prefer(e.executor_id.clone()),
        None => Placement::Any,
    }
}
