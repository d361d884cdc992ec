//! Sources: creating, changing and dropping them, and which ones a user may read from.

use quarry_catalog::{CatalogError, Privilege, SecurableKind, SourceConfig, SourceRecord, Stored};

use crate::access::UserAccess;
use crate::datasets::sources::{self};
use crate::error::CoordinatorError;

use super::*;

impl CatalogOps {
    /// The sources `actor` may read from (all of them for admins).
    pub(crate) fn readable_sources(
        &self,
        actor: &UserAccess,
    ) -> Result<Vec<Stored<SourceRecord>>, CoordinatorError> {
        let mut sources = self.datasets.catalog().list_sources()?;
        sources.retain(|s| actor.on_source(Privilege::Select, &s.record.name));
        Ok(sources)
    }

    pub(crate) async fn create_source(
        &self,
        actor: &UserAccess,
        name: &str,
        config: SourceConfig,
        mode: CreateMode,
    ) -> Result<Stored<SourceRecord>, CoordinatorError> {
        actor.require_admin("create or replace sources")?;
        let catalog = self.datasets.catalog();
        let existing = catalog.get_source(name)?;
        if let (Some(existing), CreateMode::IfNotExists) = (&existing, mode) {
            return Ok(existing.clone());
        }
        if existing.is_some() && mode == CreateMode::Create {
            return Err(CoordinatorError::from(CatalogError::AlreadyExists {
                kind: quarry_catalog::ObjectKind::Source,
                name: name.to_string(),
            }));
        }
        let record = self.checked_record(name, &config).await?;
        self.write(move |ops| {
            let catalog = ops.datasets.catalog();
            Ok(match existing {
                Some(current) => catalog.update_source(record, current.version),
                None => catalog.create_source(record),
            }?)
        })
        .await
    }

    pub(crate) async fn update_source(
        &self,
        actor: &UserAccess,
        name: &str,
        config: SourceConfig,
        expected_version: u64,
    ) -> Result<Stored<SourceRecord>, CoordinatorError> {
        actor.require_admin("change sources")?;
        let record = self.checked_record(name, &config).await?;
        self.write(move |ops| {
            Ok(ops
                .datasets
                .catalog()
                .update_source(record, expected_version)?)
        })
        .await
    }

    pub(crate) fn drop_source(
        &self,
        actor: &UserAccess,
        name: &str,
        if_exists: bool,
        expected_version: Option<u64>,
    ) -> Result<bool, CoordinatorError> {
        actor.require_admin("drop sources")?;
        match self
            .datasets
            .catalog()
            .delete_source(name, expected_version)
        {
            Ok(()) => {
                self.forget_grants_on(SecurableKind::Source, name)?;
                self.datasets
                    .catalog()
                    .delete_reflection_policy(quarry_catalog::PolicyOn::Source(name))?;
                Ok(true)
            }
            Err(CatalogError::NotFound { .. }) if if_exists => Ok(false),
            Err(e) => Err(CoordinatorError::from(e)),
        }
    }

    /// A source's record once its settings are checked (the directory or bucket is
    /// there), with an S3 bucket's store registered for reading.
    async fn checked_record(
        &self,
        name: &str,
        config: &SourceConfig,
    ) -> Result<SourceRecord, CoordinatorError> {
        let config = sources::validate_source(name, config).await?;
        if let SourceConfig::S3(s3) = &config {
            self.datasets
                .register_store(&sources::s3_store_spec(name, s3))?;
        }
        Ok(SourceRecord {
            name: name.to_string(),
            config,
        })
    }
}
