//! Client sessions: who is asking, the default schema, `SET` settings and prepared
//! statements. Sessions are keyed by bearer token or session id; no cookies are needed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::common::{ScalarValue, TableReference};
use datafusion::prelude::SessionConfig;
use quarry_catalog::CATALOG_NAME;
use quarry_common::QuarryError;

extensions_options! {
    /// `quarry.reflections.*`: which reflections queries may use.
    pub struct ReflectionOptions {
        /// Use reflections at all.
        pub enabled: bool, default = true
        /// Use only materializations whose data is at most this old ('0s': only those
        /// whose inputs are unchanged); '' = any within its grace period.
        pub max_staleness: String, default = String::new()
        /// Reflections never to use (names, comma-separated).
        pub exclude: String, default = String::new()
        /// Consider only these reflections (names, comma-separated); '' = all.
        pub choose: String, default = String::new()
    }
}

impl ReflectionOptions {
    pub(crate) fn names(list: &str) -> Vec<String> {
        list.split(',')
            .map(|n| n.trim().trim_matches('\'').to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect()
    }

    pub(crate) fn max_staleness(&self) -> Result<Option<Duration>, QuarryError> {
        let value = self.max_staleness.trim().trim_matches('\'');
        if value.is_empty() {
            return Ok(None);
        }
        parse_duration("quarry.reflections.max_staleness", value).map(Some)
    }
}

extensions_options! {
    /// `quarry.results_cache.*`: answering a repeated query from its earlier result.
    pub struct ResultsCacheOptions {
        /// Serve a repeated deterministic query from the results cache while its inputs
        /// are unchanged, and keep results for that.
        pub enabled: bool, default = true
    }
}

extensions_options! {
    /// Quarry's own settings, changed with `SET quarry.<name> = <value>`.
    pub struct QuarryOptions {
        /// Run a query's tasks on at most this many executors; 0 uses all of them.
        pub max_executors: usize, default = 0
        /// How many times a task is tried before its query fails.
        pub task_max_attempts: usize, default = 3
        /// Longest a query may run once admitted ('10 min', '30s'; '0' = no limit).
        pub query_timeout: String, default = "0".to_string()
        /// Fail a query whose running tasks all make no progress this long ('0' = never).
        pub stall_timeout: String, default = "5 min".to_string()
        /// Stop a recursive query (WITH RECURSIVE) after this many iterations.
        pub max_recursive_iterations: usize, default = 10_000
        /// Reflections: `quarry.reflections.enabled`, `.max_staleness`, `.exclude`, `.choose`.
        pub reflections: ReflectionOptions, default = ReflectionOptions::default()
        /// Run plans whose whole input is small on the coordinator; false sends every plan
        /// that reads files to the executors.
        pub local_execution: bool, default = true
        /// A plan reading at most this many rows (from file metadata) runs on the
        /// coordinator.
        pub local_max_rows: u64, default = 100_000
        /// ...and at most this many bytes of files.
        pub local_max_bytes: u64, default = 64 * 1024 * 1024
        /// A plan too big for the coordinator that reads at most this many bytes of files
        /// runs whole on one executor, a partition per slot there, with no stage hops;
        /// 0 spreads every such plan over the executors as stages.
        pub one_executor_max_bytes: u64, default = 128 * 1024 * 1024
        /// Narrow a join's probe-side scans to the range of its build side's keys once the
        /// build side has run (row groups and pages outside it are skipped).
        pub dynamic_filters: bool, default = true
        /// Let a partitioned join whose build side turns out small (within the optimizer's
        /// broadcast thresholds) become a broadcast join once that side has run.
        pub adaptive_joins: bool, default = true
        /// The results cache: `quarry.results_cache.enabled`.
        pub results_cache: ResultsCacheOptions, default = ResultsCacheOptions::default()
    }
}

impl QuarryOptions {
    pub(crate) fn query_timeout(&self) -> Result<Duration, QuarryError> {
        parse_duration("quarry.query_timeout", &self.query_timeout)
    }

    pub(crate) fn stall_timeout(&self) -> Result<Duration, QuarryError> {
        parse_duration("quarry.stall_timeout", &self.stall_timeout)
    }
}

/// A duration setting: `10 min`, `1h 30m`, `500ms`, or a number of seconds.
pub fn parse_duration(name: &str, value: &str) -> Result<Duration, QuarryError> {
    let value = value.trim().trim_matches('\'');
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Ok(Duration::from_secs_f64(seconds));
    }
    humantime::parse_duration(value).map_err(|e| {
        QuarryError::invalid(format!(
            "{name} = '{value}' is not a duration ({e}); write it like '10 min', '30s' or '1h 30m'"
        ))
    })
}

impl ConfigExtension for QuarryOptions {
    const PREFIX: &'static str = "quarry";
}

/// Quarry's settings of a config (defaults when unset).
pub(crate) fn quarry_options(config: &SessionConfig) -> QuarryOptions {
    config
        .options()
        .extensions
        .get::<QuarryOptions>()
        .cloned()
        .unwrap_or_default()
}

/// A statement prepared by a client, with the parameters it last bound.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    pub sql: String,
    pub dataset_schema: SchemaRef,
    pub parameter_schema: SchemaRef,
    pub parameters: Option<Vec<ScalarValue>>,
}

#[derive(Debug)]
struct SessionState {
    default_schema: String,
    settings: BTreeMap<String, String>,
    prepared: HashMap<String, PreparedStatement>,
}

#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub user: String,
    state: Mutex<SessionState>,
}

impl Session {
    /// `[schema, ]name` in this session, checking the catalog part.
    pub(crate) fn dataset_name(
        &self,
        reference: &TableReference,
    ) -> Result<(String, String), QuarryError> {
        match reference {
            TableReference::Bare { table } => Ok((self.default_schema(), table.to_string())),
            TableReference::Partial { schema, table } => {
                Ok((schema.to_string(), table.to_string()))
            }
            TableReference::Full {
                catalog,
                schema,
                table,
            } => {
                if catalog.as_ref() != CATALOG_NAME {
                    return Err(QuarryError::not_found(format!(
                        "catalog '{catalog}' does not exist; Quarry has one catalog, '{CATALOG_NAME}'"
                    )));
                }
                Ok((schema.to_string(), table.to_string()))
            }
        }
    }

    pub fn new(id: impl Into<String>, user: impl Into<String>, default_schema: &str) -> Arc<Self> {
        Arc::new(Session {
            id: id.into(),
            user: user.into(),
            state: Mutex::new(SessionState {
                default_schema: default_schema.to_string(),
                settings: BTreeMap::new(),
                prepared: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn default_schema(&self) -> String {
        self.lock().default_schema.clone()
    }

    pub fn set_default_schema(&self, schema: &str) {
        self.lock().default_schema = schema.to_string();
    }

    pub fn settings(&self) -> BTreeMap<String, String> {
        self.lock().settings.clone()
    }

    /// Change a setting after checking that `base` accepts it.
    pub fn set(&self, base: &SessionConfig, key: &str, value: &str) -> Result<(), QuarryError> {
        let key = key.to_ascii_lowercase();
        quarry_common::settings::check(&key, value)?;
        let mut probe = base.clone();
        // Any refusal of the value is the client's mistake (DataFusion reports some, such
        // as an unparsable number, as external errors).
        probe
            .options_mut()
            .set(&key, value)
            .map_err(|e| QuarryError::invalid(quarry_common::error::describe(&e)))?;
        // Durations are checked now rather than when a query first reads them.
        let options = quarry_options(&probe);
        options.query_timeout()?;
        options.stall_timeout()?;
        self.lock().settings.insert(key, value.to_string());
        Ok(())
    }

    pub fn reset(&self, key: &str) {
        self.lock().settings.remove(&key.to_ascii_lowercase());
    }

    /// `base` with this session's schema and settings applied.
    pub fn apply(&self, mut config: SessionConfig) -> Result<SessionConfig, QuarryError> {
        let state = self.lock();
        config.options_mut().catalog.default_schema = state.default_schema.clone();
        for (key, value) in &state.settings {
            config.options_mut().set(key, value)?;
        }
        Ok(config)
    }

    pub fn add_prepared(&self, statement: PreparedStatement) -> String {
        let handle = uuid::Uuid::new_v4().simple().to_string();
        self.lock().prepared.insert(handle.clone(), statement);
        handle
    }

    pub fn prepared(&self, handle: &str) -> Option<PreparedStatement> {
        self.lock().prepared.get(handle).cloned()
    }

    pub fn bind(&self, handle: &str, parameters: Vec<ScalarValue>) -> Result<(), QuarryError> {
        match self.lock().prepared.get_mut(handle) {
            Some(p) => {
                p.parameters = Some(parameters);
                Ok(())
            }
            None => Err(QuarryError::not_found(format!(
                "prepared statement {handle} does not exist in this session"
            ))),
        }
    }

    pub fn close_prepared(&self, handle: &str) {
        self.lock().prepared.remove(handle);
    }
}

/// Live sessions by key (a bearer token or a session id). A session unused for
/// [`SESSION_IDLE_LIMIT`] is forgotten (moka's time-to-idle), and at most
/// [`MAX_SESSIONS`] are kept (the least recently used go first).
#[derive(Debug)]
pub(crate) struct Sessions {
    sessions: moka::sync::Cache<String, Arc<Session>>,
}

/// Sessions unused this long are forgotten.
pub(crate) const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(12 * 60 * 60);
const MAX_SESSIONS: u64 = 100_000;

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            sessions: moka::sync::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(SESSION_IDLE_LIMIT)
                .build(),
        }
    }
}

impl Sessions {
    /// The session under `key`, created for `user` when absent.
    pub(crate) fn get_or_create(
        &self,
        key: &str,
        user: &str,
        default_schema: &str,
    ) -> Arc<Session> {
        self.sessions
            .get_with(key.to_string(), || Session::new(key, user, default_schema))
    }

    pub(crate) fn remove(&self, key: &str) -> Option<Arc<Session>> {
        self.sessions.remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() -> Result<(), QuarryError> {
        assert_eq!(parse_duration("t", "10 min")?, Duration::from_secs(600));
        assert_eq!(parse_duration("t", "'1h 30m'")?, Duration::from_secs(5400));
        assert_eq!(parse_duration("t", "1500ms")?, Duration::from_millis(1500));
        assert_eq!(parse_duration("t", "90")?, Duration::from_secs(90));
        assert_eq!(parse_duration("t", "0")?, Duration::ZERO);
        let error = parse_duration("quarry.query_timeout", "soon").expect_err("not a duration");
        assert!(
            error.message.contains("quarry.query_timeout"),
            "{}",
            error.message
        );
        assert!(parse_duration("t", "-5").is_err());
        Ok(())
    }
}
