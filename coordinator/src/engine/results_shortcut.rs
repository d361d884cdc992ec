//! Repeats served before planning: the results cache's shortcut.
//!
//! A hit through `results_cache.rs` plans the query first, because planning is how it
//! learns which files the query reads and whether its user may read them. For a dashboard
//! that repeats the same statement, that planning is most of the time a hit takes. A
//! shortcut remembers, for one SQL text asked by one user with one default schema,
//! settings and parameters, which cache entry answered it and where its inputs live: the
//! folders (or files) of its tables and the Delta logs of its managed tables. A repeat of
//! that text is served without parsing or planning when
//! - no write that can change a plan, an answer or a permission has reached the catalog
//!   (grants, roles, datasets, views, sources, reflections; see `Catalog::changes`) since
//!   the shortcut was made, and
//! - listing those folders again gives exactly the files, sizes, modification times,
//!   ETags and versions that were listed when it was made.
//!
//! A shortcut is made in two steps, so that no change can slip in between a listing and a
//! plan: the run that fills the cache leaves a *candidate* (its entry, its folders, the
//! catalog's count before it was planned). The next run of the same text lists the
//! folders, is planned as usual, and when that planning was served the candidate's entry,
//! lists them again. If both listings agree and the catalog did not change, the listing is
//! kept and later repeats skip planning. Anything else drops the shortcut; the query is
//! then planned, which decides as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::common::ScalarValue;

use quarry_catalog::AggregateShape;

use super::input_roots::{Root, listing};
use super::reflections::PlanningReports;
use super::results_cache::{CacheKey, CachedResult, asker_digest};
use crate::access::auth::hex;

/// The most shortcuts one coordinator keeps; the least recently used goes first.
const MAX_SHORTCUTS: usize = 4096;

#[derive(Debug, Clone)]
struct Shortcut {
    key: CacheKey,
    roots: Arc<[Root]>,
    /// `Catalog::changes` before the plan that made it.
    changes: u64,
    /// The job whose result the entry holds.
    job_id: String,
    /// The listing of `roots`, once confirmed.
    listing: Option<String>,
    /// The aggregates its planning noted for recommendations, noted again for each job
    /// it serves.
    aggregates: Vec<AggregateShape>,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    shortcuts: HashMap<String, Shortcut>,
    clock: u64,
}

/// The shortcuts of one coordinator's results cache.
#[derive(Debug, Default)]
pub(crate) struct Shortcuts {
    state: Mutex<State>,
}

impl Shortcuts {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn get(&self, text: &str) -> Option<Shortcut> {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let found = state.shortcuts.get_mut(text)?;
        found.last_used = clock;
        Some(found.clone())
    }

    fn remove(&self, text: &str) {
        self.lock().shortcuts.remove(text);
    }

    fn put(&self, text: String, mut shortcut: Shortcut) {
        let mut state = self.lock();
        if state.shortcuts.len() >= MAX_SHORTCUTS
            && !state.shortcuts.contains_key(&text)
            && let Some(oldest) = state
                .shortcuts
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            state.shortcuts.remove(&oldest);
        }
        state.clock += 1;
        shortcut.last_used = state.clock;
        state.shortcuts.insert(text, shortcut);
    }

    /// Keep `listing` for the candidate of `text`, if it is still the one `job_id` made.
    fn confirm(&self, text: &str, job_id: &str, listing: String) {
        let mut state = self.lock();
        if let Some(shortcut) = state.shortcuts.get_mut(text)
            && shortcut.job_id == job_id
        {
            shortcut.listing = Some(listing);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().shortcuts.len()
    }
}

/// What a statement's text found before it was parsed.
pub(super) enum Before {
    /// The rows of a confirmed shortcut.
    Hit(CachedResult),
    /// Plan it; then see [`super::Engine::after_planning`].
    Plan(Option<Pending>),
}

/// What planning a statement may leave or confirm.
pub(super) struct Pending {
    text: String,
    changes: u64,
    /// A candidate to confirm: its job and the listing taken before this planning.
    confirming: Option<(Shortcut, String)>,
}

/// The key of a statement's text for the asker of `session`.
fn text_key(session: &super::Session, sql: &str, parameters: Option<&[ScalarValue]>) -> String {
    let mut key = asker_digest(session);
    key.update(sql.as_bytes());
    key.update(format!("\0{parameters:?}").as_bytes());
    hex(key.finish().as_ref())
}

impl super::Engine {
    /// Before a statement is parsed: its rows, when a confirmed shortcut for its text
    /// still holds.
    pub(super) async fn before_planning(
        &self,
        session: &super::Session,
        sql: &str,
        parameters: Option<&[ScalarValue]>,
    ) -> Before {
        if !self.results.keeps_results() {
            return Before::Plan(None);
        }
        let text = text_key(session, sql, parameters);
        let catalog = self.datasets.catalog();
        let changes = catalog.changes();
        let shortcuts = &self.shortcuts;
        let pending = |confirming| {
            Before::Plan(Some(Pending {
                text: text.clone(),
                changes,
                confirming,
            }))
        };
        let Some(shortcut) = shortcuts.get(&text) else {
            return pending(None);
        };
        if shortcut.changes != changes {
            shortcuts.remove(&text);
            return pending(None);
        }
        let Ok(listed) = listing(self.datasets.runtime(), &shortcut.roots).await else {
            shortcuts.remove(&text);
            return pending(None);
        };
        match &shortcut.listing {
            None => pending(Some((shortcut, listed))),
            Some(kept) if *kept == listed && catalog.changes() == changes => {
                match self.results.get(&shortcut.key) {
                    Some(mut hit) => {
                        crate::metrics::results_cache_lookup(true);
                        PlanningReports::note_aggregates(shortcut.aggregates.clone());
                        hit.unplanned = true;
                        Before::Hit(hit)
                    }
                    None => {
                        shortcuts.remove(&text);
                        pending(None)
                    }
                }
            }
            Some(_) => {
                shortcuts.remove(&text);
                pending(None)
            }
        }
    }

    /// After a single statement was planned as `outcome` by `job_id`: confirm the
    /// candidate whose entry served it, or leave a candidate for the entry that holds or
    /// will hold its rows.
    pub(super) async fn after_planning(
        &self,
        pending: Pending,
        job_id: &str,
        outcome: &super::Outcome,
    ) {
        let (key, holder) = match outcome {
            super::Outcome::Caching(_, key) => (key, job_id),
            super::Outcome::Cached(hit, Some(key)) => (key, hit.job_id.as_str()),
            _ => return,
        };
        let shortcuts = &self.shortcuts;
        if let Some((candidate, before)) = pending.confirming
            && candidate.job_id == holder
            && candidate.key == *key
        {
            let again = listing(self.datasets.runtime(), &candidate.roots).await;
            if again.is_ok_and(|again| again == before)
                && self.datasets.catalog().changes() == pending.changes
            {
                shortcuts.confirm(&pending.text, holder, before);
            }
            return;
        }
        match key.roots() {
            Some(roots) => shortcuts.put(
                pending.text,
                Shortcut {
                    key: key.clone(),
                    roots,
                    changes: pending.changes,
                    job_id: holder.to_string(),
                    listing: None,
                    aggregates: PlanningReports::noted_aggregates(),
                    last_used: 0,
                },
            ),
            None => shortcuts.remove(&pending.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortcut(job: &str) -> Shortcut {
        Shortcut {
            key: CacheKey::for_tests("p", "i"),
            roots: Arc::from(Vec::new()),
            changes: 0,
            job_id: job.to_string(),
            listing: None,
            aggregates: Vec::new(),
            last_used: 0,
        }
    }

    #[test]
    fn a_candidate_is_confirmed_only_by_its_own_job() {
        let shortcuts = Shortcuts::default();
        shortcuts.put("t".to_string(), shortcut("j1"));
        shortcuts.confirm("t", "j2", "listing".to_string());
        assert_eq!(shortcuts.get("t").and_then(|s| s.listing), None);
        shortcuts.confirm("t", "j1", "listing".to_string());
        assert_eq!(
            shortcuts.get("t").and_then(|s| s.listing).as_deref(),
            Some("listing")
        );
    }

    #[test]
    fn the_least_recently_used_shortcut_goes_first() {
        let shortcuts = Shortcuts::default();
        for i in 0..MAX_SHORTCUTS {
            shortcuts.put(format!("t{i}"), shortcut("j"));
        }
        assert!(shortcuts.get("t0").is_some());
        shortcuts.put("new".to_string(), shortcut("j"));
        assert_eq!(shortcuts.len(), MAX_SHORTCUTS);
        assert!(shortcuts.get("t0").is_some());
        assert!(shortcuts.get("t1").is_none());
        assert!(shortcuts.get("new").is_some());
    }
}
