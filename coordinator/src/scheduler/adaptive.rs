//! Joins chosen at run time (see `planner::adaptive_joins`): once a join's build stage
//! has run, its real rows and bytes decide between a broadcast join, which reads the
//! probe stage's input itself, and the partitioned join that was planned.

use std::sync::Arc;

use quarry_common::QuarryError;

use crate::planner::adaptive_joins;
use crate::planner::stages::Stage;

use super::analyze::human_bytes;
use super::run::QueryRun;

impl QueryRun {
    /// Decide the joins whose build stage `finished` just ran. A join that becomes a
    /// broadcast join takes its probe stage's plan into its own stage; that stage never
    /// runs, and the stages waiting for it wait for its inputs instead.
    pub(super) fn choose_joins(
        &self,
        finished: u32,
        waiting: &mut Vec<(u32, Vec<u32>)>,
    ) -> Result<(), QuarryError> {
        for join in self
            .plan
            .adaptive_joins
            .iter()
            .filter(|j| j.build_stage == finished)
        {
            let Some((rows, bytes)) = self
                .lock()
                .profiles
                .get(&finished)
                .map(|profile| (profile.output_rows(), profile.output_bytes()))
            else {
                continue;
            };
            let size = format!(
                "stage {finished} wrote {rows} rows, {}; the broadcast limit is {} rows, {}",
                human_bytes(bytes),
                join.max_rows,
                human_bytes(join.max_bytes)
            );
            let probe_waits = waiting.iter().any(|(id, _)| *id == join.probe_stage);
            if !join.broadcasts(rows, bytes) || !probe_waits {
                self.note(join.join_stage, format!("join: stays partitioned ({size})"));
                continue;
            }
            let joined = self.stage(join.join_stage)?;
            let (probe, filters) = self.narrowed(&self.stage(join.probe_stage)?)?;
            let Some(plan) =
                adaptive_joins::broadcast(join, &joined.plan, Arc::clone(&probe.plan))?
            else {
                continue;
            };
            let broadcast = Stage {
                id: joined.id,
                plan,
                output: joined.output.clone(),
                slots_per_task: joined.slots_per_task,
            };
            {
                let mut state = self.lock();
                state.total = (state.total + broadcast.task_count())
                    .saturating_sub(joined.task_count() + probe.task_count());
                state.replaced.insert(broadcast.id, broadcast);
                let notes = state.notes.entry(join.join_stage).or_default();
                notes.push(format!(
                    "join: broadcast ({size}); stage {} runs here instead of through the exchange",
                    join.probe_stage
                ));
                notes.extend(filters);
            }
            let probe_inputs = waiting
                .iter()
                .position(|(id, _)| *id == join.probe_stage)
                .map(|i| waiting.remove(i).1)
                .unwrap_or_default();
            for (id, inputs) in waiting.iter_mut() {
                if let Some(i) = inputs.iter().position(|s| *s == join.probe_stage) {
                    inputs.remove(i);
                    if *id == join.join_stage {
                        inputs.extend(probe_inputs.iter().copied());
                    }
                }
            }
        }
        Ok(())
    }

    fn note(&self, stage: u32, note: String) {
        self.lock().notes.entry(stage).or_default().push(note);
    }
}
