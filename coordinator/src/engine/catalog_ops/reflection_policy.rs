//! Refresh policies: `ALTER TABLE|VIEW ds SET REFLECTION REFRESH ...` sets one on a dataset,
//! `ALTER SOURCE s SET REFLECTION REFRESH ...` one on a source, the default of its datasets.
//! A reflection takes its dataset's policy, else its source's, else Quarry's defaults
//! (hourly, 3 hours' grace), when it is created and whenever a policy above it changes.

use arrow::array::RecordBatch;
use quarry_catalog::{PolicyOn, ReflectionPolicy, Refresh};
use quarry_common::QuarryError;

use super::CatalogOps;
use crate::access::source_of;
use crate::engine::{Session, message_batch};
use crate::error::CoordinatorError;
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

impl CatalogOps {
    pub(crate) fn set_policy(
        &self,
        session: &Session,
        target: &[String],
        on_source: bool,
        every: Option<String>,
        grace: Option<String>,
    ) -> Result<RecordBatch, CoordinatorError> {
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
                return Err(QuarryError::invalid("a source's name has one part").into());
            };
            self.access
                .for_user(&session.user)
                .require_admin("set the reflection policy of a source")?;
            catalog
                .get_source(source)?
                .ok_or_else(|| QuarryError::not_found(format!("source {source} does not exist")))?;
            // Its datasets (those with a policy of their own keep what they set).
            let datasets = catalog
                .list_datasets(None)?
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
        let mut policy = catalog.reflection_policy(on.on())?.unwrap_or_default();
        policy.refresh = Some(every.map_or(Refresh::Never, Refresh::EveryMs));
        if grace.is_some() {
            policy.grace_ms = grace;
        }
        catalog.set_reflection_policy(on.on(), policy)?;
        let mut changed = 0;
        for (schema, dataset) in datasets {
            let (every, grace) = self.effective_policy(&schema, &dataset)?;
            for stored in self.reflections_of(&schema, &dataset)? {
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
        .map_err(CoordinatorError::from)
    }

    /// How often a reflection on the dataset is refreshed (None: only when asked) and its
    /// grace period: the dataset's policy, else its source's, else the defaults.
    pub(crate) fn effective_policy(
        &self,
        schema: &str,
        dataset: &str,
    ) -> Result<(Option<u64>, u64), CoordinatorError> {
        let catalog = self.datasets.catalog();
        let own = catalog
            .reflection_policy(PolicyOn::Dataset(schema, dataset))?
            .unwrap_or_default();
        let source = catalog
            .get_dataset(schema, dataset)?
            .and_then(|d| source_of(&d.record).map(str::to_string));
        let inherited = match source {
            Some(source) => catalog
                .reflection_policy(PolicyOn::Source(&source))?
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
