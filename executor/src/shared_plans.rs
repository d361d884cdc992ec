//! One plan for the tasks of a stage that run on this executor at once.
//!
//! Each task runs one partition of its stage's plan. Decoded separately, every task
//! would build its own copy of what DataFusion builds once per plan and shares between
//! partitions: the hash table of a broadcast join's build side (fetching all of the build
//! stage's output again for each), a nested-loop join's buffered side, a TopK filter.
//! With two slots, a 1.5M-row broadcast build was fetched and hashed twice per executor.
//! Tasks of one stage attempt whose plan bytes are the same run partitions of one decoded
//! plan instead, as DataFusion's partitions do in one process (Spark shares a broadcast
//! per executor the same way). The plan is dropped when the last of them ends.
//!
//! Operator metrics of a shared plan add up the partitions of every task that ran it, so
//! only the last task to let go of it reports them; the others report none, and a
//! stage's sums stay true.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;

/// A stage attempt: query, stage, attempt.
type Key = (String, u32, u32);

#[derive(Debug)]
struct Shared {
    bytes: Arc<[u8]>,
    plan: Arc<dyn ExecutionPlan>,
    users: usize,
}

/// The stage plans tasks on this executor are running, by stage attempt.
#[derive(Debug, Default)]
pub struct SharedPlans {
    plans: Mutex<HashMap<Key, Shared>>,
}

impl SharedPlans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Shared>> {
        match self.plans.lock() {
            Ok(plans) => plans,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The plan of `key` another task of the same stage attempt is running, when its
    /// bytes are `bytes`; else the plan `decode` makes, shared from now on.
    pub fn acquire(
        self: &Arc<Self>,
        key: (&str, u32, u32),
        bytes: &[u8],
        decode: impl FnOnce() -> Result<Arc<dyn ExecutionPlan>>,
    ) -> Result<PlanLease> {
        let key = (key.0.to_string(), key.1, key.2);
        if let Some(plan) = join(&mut self.lock(), &key, bytes) {
            return Ok(self.lease(Some(key), plan));
        }
        // Decoded outside the lock: other stages' tasks do not wait for it.
        let plan = decode()?;
        let mut plans = self.lock();
        if let Some(theirs) = join(&mut plans, &key, bytes) {
            // Another task of the stage decoded it first.
            return Ok(self.lease(Some(key), theirs));
        }
        if plans.contains_key(&key) {
            // Other bytes under the same stage attempt: a plan of its own.
            return Ok(self.lease(None, plan));
        }
        plans.insert(
            key.clone(),
            Shared {
                bytes: Arc::from(bytes),
                plan: Arc::clone(&plan),
                users: 1,
            },
        );
        Ok(self.lease(Some(key), plan))
    }

    fn lease(self: &Arc<Self>, key: Option<Key>, plan: Arc<dyn ExecutionPlan>) -> PlanLease {
        PlanLease {
            plan,
            key,
            plans: Arc::clone(self),
        }
    }

    /// Let go of `key`; true when no task uses its plan any more.
    fn release(&self, key: &Key) -> bool {
        let mut plans = self.lock();
        let Some(shared) = plans.get_mut(key) else {
            return true;
        };
        shared.users = shared.users.saturating_sub(1);
        if shared.users == 0 {
            plans.remove(key);
            return true;
        }
        false
    }

    /// Stage plans held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().len()
    }
}

/// The plan of `key`, counting one more user, when its bytes are `bytes`.
fn join(
    plans: &mut HashMap<Key, Shared>,
    key: &Key,
    bytes: &[u8],
) -> Option<Arc<dyn ExecutionPlan>> {
    let shared = plans.get_mut(key).filter(|s| *s.bytes == *bytes)?;
    shared.users += 1;
    Some(Arc::clone(&shared.plan))
}

/// A task's use of a stage plan; dropping it lets go.
#[derive(Debug)]
pub struct PlanLease {
    pub plan: Arc<dyn ExecutionPlan>,
    /// None: a plan of its own (its bytes differ from the shared one's).
    key: Option<Key>,
    plans: Arc<SharedPlans>,
}

impl PlanLease {
    /// Let go of the plan; true when this task was the last to use it, and so reports
    /// its operators' metrics.
    pub fn finish(mut self) -> bool {
        match self.key.take() {
            Some(key) => self.plans.release(&key),
            None => true,
        }
    }
}

impl Drop for PlanLease {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.plans.release(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;

    fn plan() -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(EmptyExec::new(Arc::new(Schema::empty()))))
    }

    #[test]
    fn tasks_of_one_stage_attempt_share_a_plan_until_the_last_ends() {
        let plans = Arc::new(SharedPlans::default());
        let first = plans.acquire(("q", 1, 0), b"plan", plan).expect("first");
        let second = plans
            .acquire(("q", 1, 0), b"plan", || panic!("decoded again"))
            .expect("second");
        assert!(Arc::ptr_eq(&first.plan, &second.plan));
        // Another attempt, another stage or other bytes: a plan of their own.
        for (key, bytes) in [(("q", 1, 1), &b"plan"[..]), (("q", 2, 0), b"plan")] {
            let other = plans.acquire(key, bytes, plan).expect("other");
            assert!(!Arc::ptr_eq(&first.plan, &other.plan));
        }
        let differing = plans.acquire(("q", 1, 0), b"other", plan).expect("other");
        assert!(!Arc::ptr_eq(&first.plan, &differing.plan));
        assert!(differing.finish());
        assert!(!first.finish(), "the second task still runs it");
        assert!(second.finish(), "the last task reports the metrics");
        assert_eq!(plans.held(), 0);
    }

    #[test]
    fn a_dropped_lease_lets_go() {
        let plans = Arc::new(SharedPlans::default());
        let first = plans.acquire(("q", 1, 0), b"plan", plan).expect("first");
        drop(plans.acquire(("q", 1, 0), b"plan", plan).expect("second"));
        assert!(first.finish());
        assert_eq!(plans.held(), 0);
    }
}
