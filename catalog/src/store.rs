//! The key-value contract the catalog is written against, and its sled implementation.
//!
//! Everything above this file speaks in typed records; everything below it is bytes. Keeping
//! the contract this small lets the same conformance tests run against any backend.

use std::path::Path;

use crate::error::CatalogError;

/// The keyspaces of the catalog. Each is one sled tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyspace {
    Sources,
    Schemas,
    Datasets,
    Jobs,
    Users,
    Tokens,
    Meta,
    Roles,
    Grants,
    /// Job ids by submission time, so the newest jobs are read without the rest.
    JobsByTime,
    /// Reflections (materializations of datasets), by name.
    Reflections,
    /// Refresh policies of reflections, by `source:<name>` or `dataset:<schema>.<name>`.
    ReflectionPolicies,
}

impl Keyspace {
    pub const ALL: [Keyspace; 12] = [
        Keyspace::Sources,
        Keyspace::Schemas,
        Keyspace::Datasets,
        Keyspace::Jobs,
        Keyspace::Users,
        Keyspace::Tokens,
        Keyspace::Meta,
        Keyspace::Roles,
        Keyspace::Grants,
        Keyspace::JobsByTime,
        Keyspace::Reflections,
        Keyspace::ReflectionPolicies,
    ];

    /// Whether a write here can change what a query reads or may read: everything but
    /// the records of jobs and login tokens, which are written all the time.
    pub fn shapes_queries(self) -> bool {
        !matches!(
            self,
            Keyspace::Jobs | Keyspace::JobsByTime | Keyspace::Tokens
        )
    }

    pub fn tree_name(self) -> &'static str {
        match self {
            Keyspace::Sources => "sources",
            Keyspace::Schemas => "schemas",
            Keyspace::Datasets => "datasets",
            Keyspace::Jobs => "jobs",
            Keyspace::Users => "users",
            Keyspace::Tokens => "tokens",
            Keyspace::Meta => "meta",
            Keyspace::Roles => "roles",
            Keyspace::Grants => "grants",
            Keyspace::JobsByTime => "jobs_by_time",
            Keyspace::Reflections => "reflections",
            Keyspace::ReflectionPolicies => "reflection_policies",
        }
    }
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What a compare-and-swap found when the expected value did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasMismatch {
    pub current: Option<Vec<u8>>,
}

/// A durable, ordered key-value store with atomic compare-and-swap.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, CatalogError>;

    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, space: Keyspace, prefix: &[u8]) -> Result<Entries, CatalogError>;

    /// Replace the value at `key` with `new` (None deletes) if its current value equals
    /// `expected` (None means absent). When `durable` is set the change is on disk before
    /// this returns.
    fn compare_and_swap(
        &self,
        space: Keyspace,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
        durable: bool,
    ) -> Result<Result<(), CasMismatch>, CatalogError>;

    /// Unconditional write; durable only when asked.
    fn put(
        &self,
        space: Keyspace,
        key: &[u8],
        value: Vec<u8>,
        durable: bool,
    ) -> Result<(), CatalogError>;

    fn remove(&self, space: Keyspace, key: &[u8], durable: bool) -> Result<(), CatalogError>;

    /// Up to `limit` entries in key order, or in reverse key order.
    fn scan_ordered(
        &self,
        space: Keyspace,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries, CatalogError>;

    /// Make every write so far durable.
    fn flush(&self) -> Result<(), CatalogError>;

    /// Every entry of `spaces` as of one moment: no write lands while it is read.
    fn snapshot(&self, spaces: &[Keyspace]) -> Result<Vec<(Keyspace, Entries)>, CatalogError>;

    /// How many writes to keyspaces that [shape queries](Keyspace::shapes_queries) have
    /// landed since the store was opened. It grows after each such write is visible, so
    /// a reader that saw the same count before and after reading saw no such write.
    fn changes(&self) -> u64;
}

/// Called with the time each durable write took (flush to disk included), once set: the
/// coordinator's `/metrics` histogram of catalog write latency.
static DURABLE_WRITE_OBSERVER: std::sync::OnceLock<fn(std::time::Duration)> =
    std::sync::OnceLock::new();

/// Have `observer` see the time of every durable catalog write from now on (once per
/// process; a second call is ignored).
pub fn observe_durable_writes(observer: fn(std::time::Duration)) {
    let _ = DURABLE_WRITE_OBSERVER.set(observer);
}

/// The most memory sled's page cache holds. Its default, a gigabyte, fills with the pages
/// of job records a busy coordinator writes (a mixed load grew the coordinator by 35 MiB a
/// minute); the catalog's hot set is far smaller, and reads past the cache hit the OS's
/// page cache.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Reports a durable write's time to the observer when dropped.
struct WriteTimer(std::time::Instant);

impl WriteTimer {
    fn start() -> Self {
        WriteTimer(std::time::Instant::now())
    }
}

impl Drop for WriteTimer {
    fn drop(&mut self) {
        if let Some(observer) = DURABLE_WRITE_OBSERVER.get() {
            observer(self.0.elapsed());
        }
    }
}

/// The production store: one sled database, one tree per keyspace.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    /// Writes hold it shared, a snapshot exclusively, so a backup sees every keyspace at
    /// one moment. sled's own transactions would serve too, but they must name every tree
    /// up front and retry on conflict; a snapshot is rare and takes milliseconds.
    writes: std::sync::Arc<std::sync::RwLock<()>>,
    /// See [`KvStore::changes`].
    changes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|e| CatalogError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        // sled releases its lock file only when the last of its threads lets go of a
        // closed database, a moment after the drop: a reopen in the same process (a
        // restart, a test) waits for that, briefly. Another live process keeps it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_BYTES)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => {
                    return Ok(SledStore {
                        db,
                        writes: Default::default(),
                        changes: Default::default(),
                    });
                }
                // sled reports a held lock only as an `Other` I/O error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    return Err(CatalogError::Io {
                        path: dir.display().to_string(),
                        source: std::io::Error::other(
                            "the catalog is in use by another Quarry process",
                        ),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn tree(&self, space: Keyspace) -> Result<sled::Tree, CatalogError> {
        Ok(self.db.open_tree(space.tree_name())?)
    }

    /// Held while a write runs; a poisoned lock only means a panic elsewhere, and the
    /// store itself is still consistent.
    fn write_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.writes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Run one write on a keyspace's tree under the write guard (a backup's snapshot
    /// waits for it).
    fn guarded<T>(
        &self,
        space: Keyspace,
        write: impl FnOnce(&sled::Tree) -> sled::Result<T>,
    ) -> Result<T, CatalogError> {
        let _write = self.write_guard();
        let written = write(&self.tree(space)?)?;
        if space.shapes_queries() {
            // After the write, so a count read before it cannot vouch for it.
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(written)
    }

    fn sync(&self, durable: bool) -> Result<(), CatalogError> {
        if durable {
            self.db.flush()?;
        }
        Ok(())
    }
}

impl KvStore for SledStore {
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, CatalogError> {
        Ok(self.tree(space)?.get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, space: Keyspace, prefix: &[u8]) -> Result<Entries, CatalogError> {
        self.tree(space)?
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn compare_and_swap(
        &self,
        space: Keyspace,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
        durable: bool,
    ) -> Result<Result<(), CasMismatch>, CatalogError> {
        let _timer = durable.then(WriteTimer::start);
        let outcome = self.guarded(space, |tree| tree.compare_and_swap(key, expected, new))?;
        match outcome {
            Ok(()) => {
                self.sync(durable)?;
                Ok(Ok(()))
            }
            Err(err) => Ok(Err(CasMismatch {
                current: err.current.map(|v| v.to_vec()),
            })),
        }
    }

    fn put(
        &self,
        space: Keyspace,
        key: &[u8],
        value: Vec<u8>,
        durable: bool,
    ) -> Result<(), CatalogError> {
        let _timer = durable.then(WriteTimer::start);
        self.guarded(space, |tree| tree.insert(key, value))?;
        self.sync(durable)
    }

    fn remove(&self, space: Keyspace, key: &[u8], durable: bool) -> Result<(), CatalogError> {
        let _timer = durable.then(WriteTimer::start);
        self.guarded(space, |tree| tree.remove(key))?;
        self.sync(durable)
    }

    fn scan_ordered(
        &self,
        space: Keyspace,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries, CatalogError> {
        let tree = self.tree(space)?;
        let pair = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<_, CatalogError> {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        };
        if reverse {
            tree.iter().rev().take(limit).map(pair).collect()
        } else {
            tree.iter().take(limit).map(pair).collect()
        }
    }

    fn flush(&self) -> Result<(), CatalogError> {
        self.db.flush()?;
        Ok(())
    }

    fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn snapshot(&self, spaces: &[Keyspace]) -> Result<Vec<(Keyspace, Entries)>, CatalogError> {
        let _only_reader = self.writes.write().unwrap_or_else(|e| e.into_inner());
        spaces
            .iter()
            .map(|space| Ok((*space, self.scan_prefix(*space, b"")?)))
            .collect()
    }
}
