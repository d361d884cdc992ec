//! Job history: one record per job, and a time index so listings and pruning read the
//! newest keys without reading every record. History, not acknowledged writes: records are
//! flushed in the background.

use crate::catalog::{Catalog, KEY_SEPARATOR, encode, envelope};
use crate::error::CatalogError;
use crate::records::JobRecord;
use crate::store::Keyspace;

impl Catalog {
    pub fn put_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        let stored = envelope(job.clone(), 1, job.submitted_ms);
        self.store.put(
            Keyspace::Jobs,
            job.id.as_bytes(),
            encode(&job.id, &stored)?,
            false,
        )?;
        self.store.put(
            Keyspace::JobsByTime,
            &job_time_key(job.submitted_ms, &job.id),
            job.id.as_bytes().to_vec(),
            false,
        )
    }

    /// The newest jobs (in `state` when given), newest first, reading only those.
    pub fn recent_jobs(
        &self,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, CatalogError> {
        self.recent_jobs_where(limit, |job| {
            state.is_none_or(|s| job.state.eq_ignore_ascii_case(s))
        })
    }

    /// The newest `limit` jobs `keep` accepts, newest first, reading the time index in
    /// growing windows and only the records it names.
    pub fn recent_jobs_where(
        &self,
        limit: usize,
        keep: impl Fn(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, CatalogError> {
        let mut jobs = Vec::new();
        let mut scanned = 0;
        // Read the index in growing windows until enough matching jobs were found.
        let mut window = limit.clamp(16, 1024);
        loop {
            let ids = self
                .store
                .scan_ordered(Keyspace::JobsByTime, true, window)?;
            let exhausted = ids.len() < window;
            for (_, id) in ids.iter().skip(scanned) {
                let id = String::from_utf8_lossy(id);
                if let Some(job) = self.get_job(&id)?
                    && keep(&job)
                {
                    jobs.push(job);
                    if jobs.len() >= limit {
                        return Ok(jobs);
                    }
                }
            }
            scanned = ids.len();
            if exhausted {
                return Ok(jobs);
            }
            window = window.saturating_mul(4);
        }
    }

    /// Jobs, newest first.
    pub fn list_jobs(&self) -> Result<Vec<JobRecord>, CatalogError> {
        let mut jobs: Vec<JobRecord> = self
            .list::<JobRecord>(Keyspace::Jobs, b"")?
            .into_iter()
            .map(|s| s.record)
            .collect();
        jobs.sort_by(|a, b| (b.submitted_ms, &b.id).cmp(&(a.submitted_ms, &a.id)));
        Ok(jobs)
    }

    pub fn get_job(&self, id: &str) -> Result<Option<JobRecord>, CatalogError> {
        Ok(self
            .get::<JobRecord>(Keyspace::Jobs, id.as_bytes())?
            .map(|s| s.record))
    }

    /// Keep only the newest `keep` jobs; returns how many were removed. Reads the time
    /// index's keys, never the records.
    pub fn prune_jobs(&self, keep: usize) -> Result<usize, CatalogError> {
        self.index_unindexed_jobs()?;
        let newest = self
            .store
            .scan_ordered(Keyspace::JobsByTime, true, keep.saturating_add(1))?;
        let Some((boundary, _)) = newest.get(keep) else {
            return Ok(0);
        };
        let old: Vec<(Vec<u8>, Vec<u8>)> = self
            .store
            .scan_ordered(Keyspace::JobsByTime, false, usize::MAX)?
            .into_iter()
            .take_while(|(key, _)| key <= boundary)
            .collect();
        for (key, id) in &old {
            self.store.remove(Keyspace::Jobs, id, false)?;
            self.store.remove(Keyspace::JobsByTime, key, false)?;
        }
        Ok(old.len())
    }

    /// Job records written before the time index existed get their index entries.
    fn index_unindexed_jobs(&self) -> Result<(), CatalogError> {
        let indexed = !self
            .store
            .scan_ordered(Keyspace::JobsByTime, false, 1)?
            .is_empty();
        let any_jobs = !self
            .store
            .scan_ordered(Keyspace::Jobs, false, 1)?
            .is_empty();
        if indexed || !any_jobs {
            return Ok(());
        }
        for job in self.list_jobs()? {
            self.store.put(
                Keyspace::JobsByTime,
                &job_time_key(job.submitted_ms, &job.id),
                job.id.as_bytes().to_vec(),
                false,
            )?;
        }
        Ok(())
    }
}

/// Sorts by submission time, then id.
fn job_time_key(submitted_ms: u64, id: &str) -> Vec<u8> {
    format!("{submitted_ms:020}{KEY_SEPARATOR}{id}").into_bytes()
}
