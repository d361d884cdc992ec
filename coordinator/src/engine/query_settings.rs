//! The settings every query starts from, and what of a query's settings and storage
//! credentials ships to the executors that run its stages.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use quarry_common::protocol::{ObjectStoreSpec, Setting};

use crate::datasets::Datasets;

use super::QuarryOptions;

/// The settings every Quarry query starts from.
pub(crate) fn base_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(
            quarry_catalog::CATALOG_NAME,
            quarry_catalog::DEFAULT_SCHEMA,
        )
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_option_extension(QuarryOptions::default());
    let options = config.options_mut();
    // Partitions of a scan run as separate tasks on separate executors: they must not
    // share a work queue in one process.
    options.execution.enable_file_stream_work_stealing = false;
    // Scalar subqueries and dynamic filters share state between operators at run time;
    // across stages and processes that state would not arrive.
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
    // Broadcast a join's build side up to 64 MB / 4M rows (DataFusion's defaults, 1 MB /
    // 128K rows, suit one process). Across executors the other choice hashes both sides
    // through the exchange: at TPC-H SF10, Q9 shuffled all of lineitem (2.9 GB) to avoid
    // sending 35 MB of orders to each task, and took 12 s instead of 5 s.
    options.optimizer.hash_join_single_partition_threshold = 64 * 1024 * 1024;
    options.optimizer.hash_join_single_partition_threshold_rows = 4_000_000;
    if let Err(e) = options.set(
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        "false",
    ) {
        tracing::warn!("cannot turn off dynamic filters: {e}");
    }
    // Except a TopK's: it lives in one task with the scan it narrows (the sort of each
    // partition runs in the task that scans it), and the plan codec keeps the two sharing
    // one filter, so row groups past the current top rows are skipped. Joins' filters
    // cross stages instead (planner::dynamic_filters).
    options.optimizer.enable_topk_dynamic_filter_pushdown = true;
    config
}

/// DataFusion settings that [`base_config`] turns off because the state they share at run
/// time cannot cross stages or processes, as a plan run whole in one process may have them
/// back: joins' and aggregates' dynamic filters, and a scan's partitions taking each
/// other's files when they run out.
const IN_PROCESS: [(&str, &str); 3] = [
    (
        "datafusion.optimizer.enable_join_dynamic_filter_pushdown",
        "true",
    ),
    (
        "datafusion.optimizer.enable_aggregate_dynamic_filter_pushdown",
        "true",
    ),
    (
        "datafusion.execution.enable_file_stream_work_stealing",
        "true",
    ),
];

/// The [`IN_PROCESS`] settings a query's session did not set itself (a config extension).
#[derive(Debug, Default)]
pub(crate) struct InProcessSettings(Vec<(&'static str, &'static str)>);

impl InProcessSettings {
    /// Those of `explicit` (a session's own settings, by lowercase key) leave theirs alone.
    pub(crate) fn unless_set(explicit: &BTreeMap<String, String>) -> InProcessSettings {
        let umbrella = explicit.contains_key("datafusion.optimizer.enable_dynamic_filter_pushdown");
        InProcessSettings(
            IN_PROCESS
                .into_iter()
                .filter(|(key, _)| {
                    let set_by_session =
                        explicit.contains_key(*key) || (umbrella && key.contains("dynamic_filter"));
                    !set_by_session
                })
                .collect(),
        )
    }

    /// Turn them on in `options`.
    pub(crate) fn apply(&self, options: &mut ConfigOptions) {
        for (key, value) in &self.0 {
            if let Err(e) = options.set(key, value) {
                tracing::warn!("cannot set {key}: {e}");
            }
        }
    }
}

/// The DataFusion settings that differ from the defaults, for the executors.
/// An executor sets them in order over DataFusion's defaults. Setting
/// `enable_dynamic_filter_pushdown` sets every kind of dynamic filter, so it comes first
/// and each kind's own value is sent after it, even where it is the default.
pub(super) fn settings_to_ship(options: &ConfigOptions) -> Vec<Setting> {
    const ALL_FILTERS: &str = "datafusion.optimizer.enable_dynamic_filter_pushdown";
    const KINDS: [&str; 3] = [
        "datafusion.optimizer.enable_join_dynamic_filter_pushdown",
        "datafusion.optimizer.enable_topk_dynamic_filter_pushdown",
        "datafusion.optimizer.enable_aggregate_dynamic_filter_pushdown",
    ];
    let defaults: BTreeMap<String, Option<String>> = ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    let mut settings: Vec<Setting> = options
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .filter(|e| defaults.get(&e.key) != Some(&e.value) || KINDS.contains(&e.key.as_str()))
        .filter_map(|e| e.value.map(|value| Setting { key: e.key, value }))
        .collect();
    // Stable: the rest keep their order.
    settings.sort_by_key(|s| s.key != ALL_FILTERS);
    settings
}

/// Object stores (beyond the local filesystem) the plan's scans read.
pub(super) fn object_stores_of(
    plan: &Arc<dyn ExecutionPlan>,
    datasets: &Datasets,
) -> Vec<ObjectStoreSpec> {
    let mut specs: Vec<ObjectStoreSpec> = Vec::new();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        let store_url = if let Some(source) = node.downcast_ref::<DataSourceExec>()
            && let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>()
        {
            Some(scan.object_store_url.as_str().to_string())
        } else {
            node.downcast_ref::<quarry_common::table_write::FileWriteExec>()
                .and_then(|write| url::Url::parse(&write.target().base_url).ok())
                .map(|url| url[..url::Position::BeforePath].to_string())
        };
        if let Some(spec) = store_url.and_then(|url| datasets.store_spec(&url)) {
            // Credentials stay here: executors fetch them by reference.
            let reference = quarry_common::object_stores::reference(&spec);
            if !specs.contains(&reference) {
                specs.push(reference);
            }
        }
        stack.extend(node.children().into_iter().cloned());
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(explicit: &[(&str, &str)]) -> ConfigOptions {
        let explicit: BTreeMap<String, String> = explicit
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut options = base_config().options().as_ref().clone();
        for (key, value) in &explicit {
            options.set(key, value).expect("setting");
        }
        InProcessSettings::unless_set(&explicit).apply(&mut options);
        options
    }

    /// The executor's side: DataFusion's defaults, then each shipped setting in order.
    fn shipped(options: &ConfigOptions) -> ConfigOptions {
        let mut executor = ConfigOptions::default();
        for setting in settings_to_ship(options) {
            executor.set(&setting.key, &setting.value).expect("setting");
        }
        executor
    }

    #[test]
    fn executors_get_each_kind_of_dynamic_filter_as_the_coordinator_planned_it() {
        let base = base_config().options().as_ref().clone();
        let executor = shipped(&base);
        assert!(!executor.optimizer.enable_join_dynamic_filter_pushdown);
        assert!(!executor.optimizer.enable_aggregate_dynamic_filter_pushdown);
        assert!(executor.optimizer.enable_topk_dynamic_filter_pushdown);
        assert!(!executor.execution.enable_file_stream_work_stealing);
        let executor = shipped(&applied(&[]));
        assert!(executor.optimizer.enable_join_dynamic_filter_pushdown);
        assert!(executor.optimizer.enable_aggregate_dynamic_filter_pushdown);
        assert!(executor.optimizer.enable_topk_dynamic_filter_pushdown);
        assert!(executor.execution.enable_file_stream_work_stealing);
    }

    #[test]
    fn a_plan_in_one_process_gets_what_stages_cannot_share_unless_the_session_said_otherwise() {
        let base = base_config();
        assert!(!base.options().optimizer.enable_join_dynamic_filter_pushdown);
        assert!(!base.options().execution.enable_file_stream_work_stealing);
        let options = applied(&[]);
        assert!(options.optimizer.enable_join_dynamic_filter_pushdown);
        assert!(options.optimizer.enable_aggregate_dynamic_filter_pushdown);
        assert!(options.execution.enable_file_stream_work_stealing);

        let options = applied(&[(
            "datafusion.optimizer.enable_join_dynamic_filter_pushdown",
            "false",
        )]);
        assert!(!options.optimizer.enable_join_dynamic_filter_pushdown);
        assert!(options.optimizer.enable_aggregate_dynamic_filter_pushdown);

        let options = applied(&[(
            "datafusion.optimizer.enable_dynamic_filter_pushdown",
            "false",
        )]);
        assert!(!options.optimizer.enable_join_dynamic_filter_pushdown);
        assert!(!options.optimizer.enable_aggregate_dynamic_filter_pushdown);
        assert!(!options.optimizer.enable_topk_dynamic_filter_pushdown);
        assert!(options.execution.enable_file_stream_work_stealing);
    }
}
