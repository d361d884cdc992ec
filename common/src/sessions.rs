//! DataFusion sessions copied from a template: DataFusion's functions, formats and rules
//! (and Quarry's sketch aggregates) are registered once per process, and each query
//! (coordinator) or task (executor) gets a copy with its own settings instead of
//! registering several hundred functions again.

use datafusion::config::TableOptions;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;

/// A builder for a copy of `template` with `config`, whose table options (CSV, Parquet,
/// JSON defaults) follow `config` as a freshly built session's would.
pub fn copy_with_config(template: &SessionState, config: SessionConfig) -> SessionStateBuilder {
    let table_options = TableOptions::default_from_session_config(config.options());
    SessionStateBuilder::new_from_existing(template.clone())
        .with_table_options(table_options)
        .with_config(config)
}
