//! Reflections: definitions of materializations of a dataset (raw: some of its columns;
//! aggregation: measures grouped by dimensions) and the materialization that currently
//! serves each. Names are unique across the catalog, so `WAIT FOR REFLECTION name` needs
//! no dataset.

use crate::catalog::{Catalog, validate_name};
use crate::error::{CatalogError, ObjectKind};
use crate::records::Stored;
use crate::reflection_records::{ReflectionPolicy, ReflectionRecord};
use crate::store::Keyspace;

/// The key of a policy: on a source, or on a dataset.
pub enum PolicyOn<'a> {
    Source(&'a str),
    Dataset(&'a str, &'a str),
}

impl PolicyOn<'_> {
    fn key(&self) -> String {
        match self {
            PolicyOn::Source(name) => format!("source:{name}"),
            PolicyOn::Dataset(schema, name) => format!("dataset:{schema}.{name}"),
        }
    }
}

impl Catalog {
    pub fn reflection_policy(
        &self,
        on: PolicyOn,
    ) -> Result<Option<ReflectionPolicy>, CatalogError> {
        Ok(self
            .get::<ReflectionPolicy>(Keyspace::ReflectionPolicies, on.key().as_bytes())?
            .map(|s| s.record))
    }

    /// Set a policy, replacing what was set on the same object.
    pub fn set_reflection_policy(
        &self,
        on: PolicyOn,
        policy: ReflectionPolicy,
    ) -> Result<(), CatalogError> {
        let key = on.key();
        loop {
            let result =
                match self.get::<ReflectionPolicy>(Keyspace::ReflectionPolicies, key.as_bytes())? {
                    Some(stored) => self
                        .update(
                            Keyspace::ReflectionPolicies,
                            ObjectKind::Reflection,
                            &key,
                            policy.clone(),
                            stored.version,
                        )
                        .map(|_| ()),
                    None => self
                        .create(
                            Keyspace::ReflectionPolicies,
                            ObjectKind::Reflection,
                            &key,
                            policy.clone(),
                        )
                        .map(|_| ()),
                };
            match result {
                // Another change won: read it and try again.
                Err(CatalogError::Conflict { .. } | CatalogError::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Forget a policy (its dataset or source is gone); nothing when none was set.
    pub fn delete_reflection_policy(&self, on: PolicyOn) -> Result<(), CatalogError> {
        match self.delete::<ReflectionPolicy>(
            Keyspace::ReflectionPolicies,
            ObjectKind::Reflection,
            &on.key(),
            None,
        ) {
            Err(CatalogError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    pub fn list_reflections(&self) -> Result<Vec<Stored<ReflectionRecord>>, CatalogError> {
        self.list(Keyspace::Reflections, b"")
    }

    pub fn get_reflection(
        &self,
        name: &str,
    ) -> Result<Option<Stored<ReflectionRecord>>, CatalogError> {
        self.get(Keyspace::Reflections, name.as_bytes())
    }

    pub fn create_reflection(
        &self,
        record: ReflectionRecord,
    ) -> Result<Stored<ReflectionRecord>, CatalogError> {
        validate_name(ObjectKind::Reflection, &record.name)?;
        let key = record.name.clone();
        self.create(Keyspace::Reflections, ObjectKind::Reflection, &key, record)
    }

    pub fn update_reflection(
        &self,
        record: ReflectionRecord,
        expected_version: u64,
    ) -> Result<Stored<ReflectionRecord>, CatalogError> {
        let key = record.name.clone();
        self.update(
            Keyspace::Reflections,
            ObjectKind::Reflection,
            &key,
            record,
            expected_version,
        )
    }

    pub fn delete_reflection(
        &self,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<(), CatalogError> {
        self.delete::<ReflectionRecord>(
            Keyspace::Reflections,
            ObjectKind::Reflection,
            name,
            expected_version,
        )
    }
}
