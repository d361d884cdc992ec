//! Reflection records as catalog operations: the dataset a reflection statement names
//! (for a user with ALTER on it), creating a record after checking its definition against
//! the dataset's columns, and changing one. Refresh jobs are the engine's
//! (`engine/reflections/`).

use quarry_catalog::{CatalogError, Privilege, ReflectionRecord, Stored};
use quarry_common::{ErrorCode, QuarryError};

use super::CatalogOps;
use crate::access::source_of;
use crate::datasets::schema_codec::encode_schema;
use crate::engine::Session;
use crate::engine::ddl::reference_of;
use crate::error::CoordinatorError;
use crate::reflections::{self as reflection};
use crate::sql::reflections::ReflectionDefinition;

impl CatalogOps {
    /// The dataset of an `ALTER TABLE|VIEW` on reflections, for a user with ALTER on it.
    pub(crate) fn altered_dataset(
        &self,
        session: &Session,
        parts: &[String],
    ) -> Result<(String, String), CoordinatorError> {
        let (schema, name) = session.dataset_name(&reference_of(parts)?)?;
        let record = self
            .datasets
            .catalog()
            .get_dataset(&schema, &name)?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{name} does not exist")))?;
        self.access.for_user(&session.user).require_dataset(
            Privilege::Alter,
            &schema,
            &name,
            source_of(&record.record),
        )?;
        Ok((schema, name))
    }

    /// A reflection by name, for a user with ALTER on its dataset.
    pub(crate) fn named_reflection(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<ReflectionRecord, CoordinatorError> {
        Ok(self.named_stored(session, name)?.record)
    }

    pub(crate) fn named_stored(
        &self,
        session: &Session,
        name: &str,
    ) -> Result<Stored<ReflectionRecord>, CoordinatorError> {
        let stored = self
            .datasets
            .catalog()
            .get_reflection(name)?
            .ok_or_else(|| QuarryError::not_found(format!("reflection {name} does not exist")))?;
        let record = &stored.record;
        self.altered_dataset(session, &[record.schema.clone(), record.dataset.clone()])?;
        Ok(stored)
    }

    pub(crate) async fn create_reflection(
        &self,
        schema: &str,
        dataset: &str,
        definition: ReflectionDefinition,
    ) -> Result<String, CoordinatorError> {
        let provider = self
            .datasets
            .provider(schema, dataset)
            .await?
            .ok_or_else(|| QuarryError::not_found(format!("{schema}.{dataset} does not exist")))?;
        let columns = provider.schema();
        reflection::validate(
            &definition.kind,
            &definition.partition_by,
            &definition.localsort_by,
            &columns,
        )?;
        let (refresh_every_ms, grace_ms) = self.effective_policy(schema, dataset)?;
        let record = ReflectionRecord {
            name: definition.name.clone(),
            schema: schema.to_string(),
            dataset: dataset.to_string(),
            kind: definition.kind,
            partition_by: definition.partition_by,
            localsort_by: definition.localsort_by,
            enabled: true,
            dataset_columns: encode_schema(&columns)?,
            refresh_every_ms,
            grace_ms,
            materialization: None,
            last_error: None,
        };
        match self.datasets.catalog().create_reflection(record) {
            Ok(_) => Ok(definition.name),
            Err(CatalogError::AlreadyExists { .. }) => Err(QuarryError::new(
                ErrorCode::AlreadyExists,
                format!("a reflection named {} already exists", definition.name),
            )
            .into()),
            Err(e) => Err(CoordinatorError::from(e)),
        }
    }

    pub(crate) fn reflection_on(
        &self,
        name: &str,
        schema: &str,
        dataset: &str,
    ) -> Result<Stored<ReflectionRecord>, CoordinatorError> {
        let found = self.datasets.catalog().get_reflection(name)?;
        Ok(found
            .filter(|r| r.record.schema == schema && r.record.dataset == dataset)
            .ok_or_else(|| {
                QuarryError::not_found(format!("{schema}.{dataset} has no reflection {name}"))
            })?)
    }

    /// Change a reflection's record, retrying when another change won.
    pub(crate) fn update_reflection(
        &self,
        name: &str,
        mut change: impl FnMut(&mut ReflectionRecord),
    ) -> Result<Option<ReflectionRecord>, CoordinatorError> {
        let catalog = self.datasets.catalog();
        loop {
            let Some(stored) = catalog.get_reflection(name)? else {
                return Ok(None);
            };
            let mut record = stored.record.clone();
            change(&mut record);
            match catalog.update_reflection(record.clone(), stored.version) {
                Ok(_) => return Ok(Some(record)),
                Err(CatalogError::Conflict { .. }) => continue,
                Err(CatalogError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(CoordinatorError::from(e)),
            }
        }
    }
}
