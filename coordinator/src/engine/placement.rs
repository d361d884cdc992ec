//! Where a planned query runs: on the coordinator (no file scans, small materializations,
//! or a small input — see `planner::small_plans`) or as stages on the executors, and why;
//! and the [`Outcome`] that runs it there.

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use quarry_common::QuarryError;

use super::query_settings::{object_stores_of, settings_to_ship};
use super::{
    DistributedQuery, Engine, Outcome, QuarryOptions, SMALL_MATERIALIZATIONS_BYTES, quarry_options,
};
use crate::planner::distributed::{StageOptions, plan_distributed};
use crate::planner::small_plans::InputEstimate;
use crate::planner::stages::reads_only_small_files_under;
use crate::scheduler::analyze::human_bytes;

/// Where a plan runs, and the reason EXPLAIN gives.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub(super) local: bool,
    pub(super) reason: String,
}

impl Placement {
    fn coordinator(reason: impl Into<String>) -> Placement {
        Placement {
            local: true,
            reason: format!("runs on the coordinator: {}", reason.into()),
        }
    }

    fn executors(reason: impl Into<String>) -> Placement {
        Placement {
            local: false,
            reason: format!("runs on the executors: {}", reason.into()),
        }
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
            Placement::coordinator(format!(
                "its input is small: {} (at most {limits})",
                describe(&estimate)
            ))
        } else {
            Placement::executors(format!(
                "its input is {} (over {limits})",
                describe(&estimate)
            ))
        }
    }

    /// Plan `plan` and decide where it runs. It is planned as one partition first: most
    /// plans a client waits on are small, and one thread reads and joins a few thousand
    /// rows faster than threads repartitioning them. A plan that turns out to be for the
    /// executors is planned again with a partition per task slot. That first planning
    /// cost a TPC-H query at SF1 5-8 ms, so a plan the executors ran last time is planned
    /// for them at once (see [`PlacementHints`]); should its input have become small, it
    /// is planned again as one partition.
    pub(super) async fn place(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
    ) -> Result<PlacedPlan, QuarryError> {
        let options = quarry_options(state.config());
        let shape = PlacementHints::shape(plan);
        let may_run_here = state.config().target_partitions() > 1 && options.local_execution;
        if may_run_here && !self.placement_hints.ran_on_executors(shape) {
            let placed = self.place_as_one_partition(state, plan, &options).await?;
            if placed.placement.local {
                return Ok(placed);
            }
        }
        let physical = self.physical_plan(state, plan).await?;
        let placement = self.placement(&options, &physical);
        self.placement_hints.remember(shape, !placement.local);
        if placement.local && may_run_here {
            // Its input shrank since the executors ran it: one partition, as above.
            return self.place_as_one_partition(state, plan, &options).await;
        }
        Ok(PlacedPlan {
            state: state.clone(),
            physical,
            placement,
        })
    }

    /// `plan` planned as one partition, and where that runs.
    async fn place_as_one_partition(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        options: &QuarryOptions,
    ) -> Result<PlacedPlan, QuarryError> {
        let mut single = state.clone();
        single
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = 1;
        // Its own names for common subexpressions, so a plan made again for the
        // executors names them as a plan made once does (EXPLAIN stays the same).
        single.execution_props_mut().alias_generator =
            Arc::new(datafusion::common::alias::AliasGenerator::new());
        let physical = self.physical_plan(&single, plan).await?;
        let placement = self.placement(options, &physical);
        Ok(PlacedPlan {
            state: single,
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
        if placement.local {
            return Ok(Outcome::Local(physical, state.task_ctx()));
        }
        let options = quarry_options(state.config());
        // Refuse bad durations before the query takes any resources.
        options.query_timeout()?;
        options.stall_timeout()?;
        let object_stores = object_stores_of(&physical, &self.datasets);
        let stages = plan_distributed(physical, stage_options(&state))?;
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

/// Plans the executors ran, by the shape of their logical plan: a hint only, since
/// placement is decided again from each planning's own estimate.
#[derive(Debug, Default)]
pub(super) struct PlacementHints {
    shapes: std::sync::Mutex<std::collections::HashSet<u64>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        match self.shapes.lock() {
            Ok(shapes) => shapes,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn ran_on_executors(&self, shape: u64) -> bool {
        self.lock().contains(&shape)
    }

    fn remember(&self, shape: u64, on_executors: bool) {
        let mut shapes = self.lock();
        if !on_executors {
            shapes.remove(&shape);
            return;
        }
        if shapes.len() >= MAX_HINTS {
            shapes.clear();
        }
        shapes.insert(shape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_lasts_until_a_plan_runs_here() {
        let hints = PlacementHints::default();
        assert!(!hints.ran_on_executors(7));
        hints.remember(7, true);
        assert!(hints.ran_on_executors(7));
        hints.remember(7, false);
        assert!(!hints.ran_on_executors(7));
        for shape in 0..MAX_HINTS as u64 + 1 {
            hints.remember(shape, true);
        }
        assert!(hints.lock().len() <= MAX_HINTS);
    }
}
