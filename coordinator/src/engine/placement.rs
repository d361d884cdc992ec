//! Where a planned query runs: on the coordinator (no file scans, small materializations,
//! or a small input — see `planner::small_plans`), whole on one executor (a medium input),
//! or as stages over the executors, and why; and the [`Outcome`] that runs it there.
//!
//! A medium plan runs whole on one executor because its stages would cost more than they
//! gain: every stage waits for all of the one before it, and every hop between them
//! writes, fetches and decodes its rows again (~3 ms a hop on a loaded machine). TPC-H Q16
//! at SF1 (49 MB of Parquet) took 2.3× DataFusion's time as five stages. On one executor its
//! partitions stream through each other in one process, as they do in DataFusion.

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use quarry_common::QuarryError;

use super::query_settings::{InProcessSettings, object_stores_of, settings_to_ship};
use super::{
    DistributedQuery, Engine, Outcome, QuarryOptions, SMALL_MATERIALIZATIONS_BYTES, quarry_options,
};
use crate::planner::distributed::{StageOptions, plan_distributed};
use crate::planner::small_plans::InputEstimate;
use crate::planner::stages::{StagePlan, plan_one_stage, reads_only_small_files_under};
use crate::scheduler::analyze::human_bytes;

/// Where a plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Site {
    /// In-process on the coordinator's query runtime.
    Coordinator,
    /// As one task on one executor, running every partition of the plan.
    OneExecutor,
    /// As stages of tasks spread over the executors.
    Executors,
}

/// Where a plan runs, and the reason EXPLAIN gives.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub(super) site: Site,
    pub(super) reason: String,
}

impl Placement {
    fn coordinator(reason: impl Into<String>) -> Placement {
        Placement {
            site: Site::Coordinator,
            reason: format!("runs on the coordinator: {}", reason.into()),
        }
    }

    fn one_executor(reason: impl Into<String>) -> Placement {
        Placement {
            site: Site::OneExecutor,
            reason: format!("runs on one executor: {}", reason.into()),
        }
    }

    fn executors(reason: impl Into<String>) -> Placement {
        Placement {
            site: Site::Executors,
            reason: format!("runs on the executors: {}", reason.into()),
        }
    }

    pub(super) fn local(&self) -> bool {
        self.site == Site::Coordinator
    }
}

/// A query's physical plan and where it runs.
pub(super) struct PlacedPlan {
    pub(super) state: SessionState,
    pub(super) physical: Arc<dyn ExecutionPlan>,
    pub(super) placement: Placement,
}

impl Engine {
    /// Where `physical` runs under the query's settings.
    pub(super) fn placement(
        &self,
        options: &QuarryOptions,
        physical: &Arc<dyn ExecutionPlan>,
    ) -> Placement {
        let estimate = InputEstimate::of(physical);
        if estimate.scans == 0 && !estimate.executor_only {
            return Placement::coordinator("it reads no files");
        }
        let limits = format!(
            "quarry.local_max_rows = {}, quarry.local_max_bytes = {}",
            options.local_max_rows,
            human_bytes(options.local_max_bytes)
        );
        if estimate.writes {
            return Placement::executors("it writes a table");
        }
        if estimate.executor_only {
            return Placement::executors("it reads a source only executors run");
        }
        if !options.local_execution {
            return Placement::executors(format!(
                "quarry.local_execution is off (input: {})",
                describe(&estimate)
            ));
        }
        if self.datasets.reflection_store().is_some_and(|store| {
            reads_only_small_files_under(physical, store, SMALL_MATERIALIZATIONS_BYTES)
        }) {
            return Placement::coordinator(format!(
                "it reads only small materializations ({})",
                describe(&estimate)
            ));
        }
        if estimate.is_small(options.local_max_rows, options.local_max_bytes) {
            return Placement::coordinator(format!(
                "its input is small: {} (at most {limits})",
                describe(&estimate)
            ));
        }
        let one = format!(
            "quarry.one_executor_max_bytes = {}",
            human_bytes(options.one_executor_max_bytes)
        );
        if estimate.fits_one_executor(options.one_executor_max_bytes) {
            Placement::one_executor(format!(
                "its input is {} (over {limits}; at most {one})",
                describe(&estimate)
            ))
        } else if estimate.executor_files {
            Placement::executors(format!(
                "its input is {} (over {limits}), some of it in executors' data directories",
                describe(&estimate)
            ))
        } else {
            Placement::executors(format!(
                "its input is {} (over {limits} and {one})",
                describe(&estimate)
            ))
        }
    }

    /// Partitions to plan for a site: one on the coordinator, one per slot of the largest
    /// executor on one executor, `spread` (a slot of every executor the query may use)
    /// over the executors.
    fn partitions_for(&self, site: Site, spread: usize) -> usize {
        match site {
            Site::Coordinator => 1,
            Site::OneExecutor => self
                .scheduler
                .cluster()
                .active()
                .iter()
                .map(|e| e.slots as usize)
                .max()
                .unwrap_or(1)
                .clamp(1, spread.max(1)),
            Site::Executors => spread,
        }
    }

    /// Plan `plan` and decide where it runs. It is planned as one partition first: most
    /// plans a client waits on are small, and one thread reads and joins a few thousand
    /// rows faster than threads repartitioning them. A plan that turns out to be for the
    /// executors is planned again with the partitions of its site. That first planning
    /// cost a TPC-H query at SF1 5-8 ms, so a plan the executors ran last time is planned
    /// with the partitions it had then at once (see [`PlacementHints`]); should its input
    /// have changed size since, it is planned again for its new site.
    pub(super) async fn place(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
    ) -> Result<PlacedPlan, QuarryError> {
        let options = quarry_options(state.config());
        let shape = PlacementHints::shape(plan);
        let spread = state.config().target_partitions();
        let may_run_here = spread > 1 && options.local_execution;
        let target = match self.placement_hints.target(shape) {
            Some(target) => target,
            None if may_run_here => {
                let placed = self
                    .place_in(state, plan, &options, (Site::Coordinator, 1))
                    .await?;
                if placed.placement.local() {
                    return Ok(placed);
                }
                let site = placed.placement.site;
                (site, self.partitions_for(site, spread))
            }
            None => (Site::Executors, spread),
        };
        let placed = self.place_in(state, plan, &options, target).await?;
        let site = placed.placement.site;
        if site == Site::Coordinator && !may_run_here {
            return Ok(placed);
        }
        let wanted = (site, self.partitions_for(site, spread));
        self.placement_hints
            .remember(shape, (site != Site::Coordinator).then_some(wanted));
        if wanted == target {
            return Ok(placed);
        }
        // Its input changed size since the last run: planned again for its site (which
        // depends on its files, not on its partitions).
        self.place_in(state, plan, &options, wanted).await
    }

    /// `plan` planned for a site with so many partitions, and where that runs. A plan for
    /// one executor gets back what runs in one process (see `InProcessSettings`).
    async fn place_in(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        options: &QuarryOptions,
        (site, partitions): (Site, usize),
    ) -> Result<PlacedPlan, QuarryError> {
        let mut state = state.clone();
        if state.config().target_partitions() != partitions {
            state.config_mut().options_mut().execution.target_partitions = partitions;
            // Its own names for common subexpressions, so a plan made again for another
            // site names them as a plan made once does (EXPLAIN stays the same).
            state.execution_props_mut().alias_generator =
                Arc::new(datafusion::common::alias::AliasGenerator::new());
        }
        if site == Site::OneExecutor
            && let Some(settings) = state.config().get_extension::<InProcessSettings>()
        {
            settings.apply(state.config_mut().options_mut());
        }
        let physical = self.physical_plan(&state, plan).await?;
        let placement = self.placement(options, &physical);
        Ok(PlacedPlan {
            state,
            physical,
            placement,
        })
    }

    /// Run a physical plan where [`Engine::placement`] says.
    pub(super) fn plan_physical(
        &self,
        state: &SessionState,
        physical: Arc<dyn ExecutionPlan>,
    ) -> Result<Outcome, QuarryError> {
        let placement = self.placement(&quarry_options(state.config()), &physical);
        self.plan_placed(PlacedPlan {
            state: state.clone(),
            physical,
            placement,
        })
    }

    pub(super) fn plan_placed(&self, placed: PlacedPlan) -> Result<Outcome, QuarryError> {
        let PlacedPlan {
            state,
            physical,
            placement,
        } = placed;
        if placement.local() {
            return Ok(Outcome::Local(physical, state.task_ctx()));
        }
        let options = quarry_options(state.config());
        // Refuse bad durations before the query takes any resources.
        options.query_timeout()?;
        options.stall_timeout()?;
        let object_stores = object_stores_of(&physical, &self.datasets);
        let stages = stages_of(placement.site, physical, &state)?;
        Ok(Outcome::Distributed(Box::new(DistributedQuery {
            stages,
            settings: settings_to_ship(state.config_options()),
            object_stores,
            options,
            state,
            ticket: None,
        })))
    }
}

/// The stages of a plan run at `site` (not the coordinator): one stage of one task on one
/// executor, or the cut of the stage planner.
pub(super) fn stages_of(
    site: Site,
    physical: Arc<dyn ExecutionPlan>,
    state: &SessionState,
) -> Result<StagePlan, QuarryError> {
    Ok(match site {
        Site::OneExecutor => plan_one_stage(physical)?,
        Site::Coordinator | Site::Executors => plan_distributed(physical, stage_options(state))?,
    })
}

/// What the stage planner adds for a query planned in `state`.
pub(super) fn stage_options(state: &SessionState) -> StageOptions {
    let options = quarry_options(state.config());
    let optimizer = &state.config_options().optimizer;
    StageOptions {
        dynamic_filters: options.dynamic_filters,
        // With a limit of 0 (broadcasts turned off) no join could switch.
        adaptive_joins: (options.adaptive_joins
            && optimizer.hash_join_single_partition_threshold_rows > 0
            && optimizer.hash_join_single_partition_threshold > 0)
            .then_some((
                optimizer.hash_join_single_partition_threshold_rows as u64,
                optimizer.hash_join_single_partition_threshold as u64,
            )),
    }
}

/// "600572 rows (from file metadata) in 2 files, 17.6 MB".
fn describe(estimate: &InputEstimate) -> String {
    format!(
        "{} rows ({}) in {} file{}, {}",
        estimate.rows,
        if estimate.rows_exact {
            "from file metadata"
        } else {
            "estimated from file sizes"
        },
        estimate.files,
        if estimate.files == 1 { "" } else { "s" },
        human_bytes(estimate.bytes)
    )
}

/// Plans the executors ran, by the shape of their logical plan, with the site and the
/// partitions they were planned for: a hint only, since placement is decided again from
/// each planning's own estimate.
#[derive(Debug, Default)]
pub(super) struct PlacementHints {
    shapes: std::sync::Mutex<std::collections::HashMap<u64, (Site, usize)>>,
}

/// The most shapes remembered; past that the hints start again.
const MAX_HINTS: usize = 10_000;

impl PlacementHints {
    /// A hash of the plan (its tables by name, not their files).
    fn shape(plan: &LogicalPlan) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        plan.hash(&mut hasher);
        hasher.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (Site, usize)>> {
        match self.shapes.lock() {
            Ok(shapes) => shapes,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Where and with how many partitions the executors last ran this shape.
    fn target(&self, shape: u64) -> Option<(Site, usize)> {
        self.lock().get(&shape).copied()
    }

    /// The executors ran it there with so many partitions, or (None) the coordinator did.
    fn remember(&self, shape: u64, target: Option<(Site, usize)>) {
        let mut shapes = self.lock();
        let Some(target) = target else {
            shapes.remove(&shape);
            return;
        };
        if shapes.len() >= MAX_HINTS {
            shapes.clear();
        }
        shapes.insert(shape, target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_lasts_until_a_plan_runs_here() {
        let hints = PlacementHints::default();
        assert_eq!(hints.target(7), None);
        hints.remember(7, Some((Site::Executors, 4)));
        assert_eq!(hints.target(7), Some((Site::Executors, 4)));
        hints.remember(7, Some((Site::OneExecutor, 2)));
        assert_eq!(hints.target(7), Some((Site::OneExecutor, 2)));
        hints.remember(7, None);
        assert_eq!(hints.target(7), None);
        for shape in 0..MAX_HINTS as u64 + 1 {
            hints.remember(shape, Some((Site::Executors, 4)));
        }
        assert!(hints.lock().len() <= MAX_HINTS);
    }
}
