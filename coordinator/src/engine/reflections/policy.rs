//! Refresh policies: `ALTER TABLE|VIEW ds SET REFLECTION REFRESH ...` sets one on a dataset,
//! `ALTER SOURCE s SET REFLECTION REFRESH ...` one on a source, the default of its datasets.
//! A reflection takes its dataset's policy, else its source's, else Quarry's defaults
//! (hourly, 3 hours' grace), when it is created and whenever a policy above it changes.

use arrow::array::RecordBatch;
use quarry_catalog::{PolicyOn, ReflectionPolicy, Refresh};
use quarry_common::QuarryError;

use crate::access::source_of;
use crate::engine::{Engine, Session, message_batch};
use crate::error::catalog_error;
use crate::reflections::{DEFAULT_GRACE_MS, DEFAULT_REFRESH_MS};

enum Target {
    Source(String),
    Dataset(String, String),
}

impl Target {
    fn on(&self) -> PolicyOn<'_> {
        match self {
            Target::Source(name) => PolicyOn::Source(name),
            Target::Dataset(schema, name) => PolicyOn::Dataset(schema, name),
        }
    }
}

impl Engine {
    pub(super) fn set_policy(
        &self,
        session: &Session,
        target: &[String],
        on_source: bool,
        every: Option<String>,
        grace: Option<String>,
    ) -> Result<RecordBatch, QuarryError> {
        let every = every
            .map(|e| crate::engine::parse_duration("REFRESH EVERY", &e))
            .transpose()?
            .map(|d| d.as_millis() as u64);
        let grace = grace
            .map(|g| crate::engine::parse_duration("GRACE", &g))
            .transpose()?
            .map(|d| d.as_millis() as u64);
        let catalog = self.datasets.catalog();
        let (on, datasets, what) = if on_source {
            let [source] = target else {
                return Err(QuarryError::invalid("a source's name has one part"));
            };
            self.access_for(session)
                .require_admin("set the reflection policy of a source")?;
            catalog
                .get_source(source)
                .map_err(catalog_error)?
                .ok_or_else(|| QuarryError::not_found(format!("source {source} does not exist")))?;
            // Its datasets (those with a policy of their own keep what they set).
            let datasets = catalog
                .list_datasets(None)
                .map_err(catalog_error)?
                .into_iter()
                .map(|d| d.record)
                .filter(|d| source_of(d) == Some(source.as_str()))
                .map(|d| (d.schema, d.name))
                .collect();
            (
                Target::Source(source.clone()),
                datasets,
                format!("source {source}"),
            )
        } else {
            let (schema, name) = self.altered_dataset(session, target)?;
            let what = format!("{schema}.{name}");
            (
                Target::Dataset(schema.clone(), name.clone()),
                vec![(schema, name)],
                what,
            )
        };
        let mut policy = catalog
            .reflection_policy(on.on())
            .map_err(catalog_error)?
            .unwrap_or_default();
        policy.refresh = Some(every.map_or(Refresh::Never, Refresh::EveryMs));
        if grace.is_some() {
            policy.grace_ms = grace;
        }
        catalog
            .set_reflection_policy(on.on(), policy)
            .map_err(catalog_error)?;
        let mut changed = 0;
        for (schema, dataset) in datasets {
            let (every, grace) = self.effective_policy(&schema, &dataset)?;
            for stored in self.catalog.reflections_of(&schema, &dataset)? {
                self.update_reflection(&stored.record.name, |r| {
                    r.refresh_every_ms = every;
                    r.grace_ms = grace;
                })?;
                changed += 1;
            }
        }
        message_batch(
            "result",
            &[format!(
                "Reflection policy of {what} set ({changed} reflections)"
            )],
        )
    }

    /// How often a reflection on the dataset is refreshed (None: only when asked) and its
    /// grace period: the dataset's policy, else its source's, else the defaults.
    pub(super) fn effective_policy(
        &self,
        schema: &str,
        dataset: &str,
    ) -> Result<(Option<u64>, u64), QuarryError> {
        let catalog = self.datasets.catalog();
        let own = catalog
            .reflection_policy(PolicyOn::Dataset(schema, dataset))
            .map_err(catalog_error)?
            .unwrap_or_default();
        let source = catalog
            .get_dataset(schema, dataset)
            .map_err(catalog_error)?
            .and_then(|d| source_of(&d.record).map(str::to_string));
        let inherited = match source {
            Some(source) => catalog
                .reflection_policy(PolicyOn::Source(&source))
                .map_err(catalog_error)?
                .unwrap_or_default(),
            None => ReflectionPolicy::default(),
        };
        let every = own
            .refresh
            .or(inherited.refresh)
            .map_or(Some(DEFAULT_REFRESH_MS), Refresh::every_ms);
        let grace = own
            .grace_ms
            .or(inherited.grace_ms)
            .unwrap_or(DEFAULT_GRACE_MS);
        Ok((every, grace))
    }
}
