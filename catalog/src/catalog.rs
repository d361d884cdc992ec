//! The typed catalog: versioned records in keyspaces, every acknowledged write durable.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CatalogError, ObjectKind};
use crate::records::{
    DatasetDefinition, DatasetRecord, FORMAT_VERSION, SchemaRecord, SourceRecord, Stored,
};
use crate::store::{Keyspace, KvStore, SledStore};

/// The one catalog name clients see (Flight SQL GetCatalogs, `quarry.demo.orders`).
pub const CATALOG_NAME: &str = "quarry";

/// Schema of the built-in system tables.
pub const SYSTEM_SCHEMA: &str = "sys";

/// The schema every catalog has; it cannot be dropped.
pub const DEFAULT_SCHEMA: &str = "public";

/// Separates schema and name in dataset keys; it cannot appear in a name.
pub(crate) const KEY_SEPARATOR: char = '\u{1f}';

/// Milliseconds since the Unix epoch (0 on a clock before it): every timestamp Quarry stores.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Quarry's metadata: sources, schemas, datasets, users, tokens and jobs.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub(crate) store: Arc<dyn KvStore>,
}

impl Catalog {
    /// Open (or create) the catalog in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        Self::with_store(Arc::new(SledStore::open(dir)?))
    }

    pub fn with_store(store: Arc<dyn KvStore>) -> Result<Self, CatalogError> {
        let catalog = Catalog { store };
        if catalog.get_schema(DEFAULT_SCHEMA)?.is_none() {
            match catalog.create_schema(SchemaRecord {
                name: DEFAULT_SCHEMA.to_string(),
            }) {
                Ok(_) | Err(CatalogError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(catalog)
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// A count that grows with every write that can change a query's plan, answer or
    /// permission (see [`KvStore::changes`]); job records and logins leave it alone.
    pub fn changes(&self) -> u64 {
        self.store.changes()
    }

    // ---- sources ----

    pub fn list_sources(&self) -> Result<Vec<Stored<SourceRecord>>, CatalogError> {
        self.list(Keyspace::Sources, b"")
    }

    pub fn get_source(&self, name: &str) -> Result<Option<Stored<SourceRecord>>, CatalogError> {
        self.get(Keyspace::Sources, name.as_bytes())
    }

    pub fn create_source(
        &self,
        record: SourceRecord,
    ) -> Result<Stored<SourceRecord>, CatalogError> {
        validate_name(ObjectKind::Source, &record.name)?;
        let key = record.name.clone();
        self.create(Keyspace::Sources, ObjectKind::Source, &key, record)
    }

    pub fn update_source(
        &self,
        record: SourceRecord,
        expected_version: u64,
    ) -> Result<Stored<SourceRecord>, CatalogError> {
        let key = record.name.clone();
        self.update(
            Keyspace::Sources,
            ObjectKind::Source,
            &key,
            record,
            expected_version,
        )
    }

    /// Drop a source; refused while datasets still read from it.
    pub fn delete_source(
        &self,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<(), CatalogError> {
        let users: Vec<String> = self
            .list_datasets(None)?
            .into_iter()
            .filter(|d| match &d.record.definition {
                DatasetDefinition::Table(t) => t.source.as_deref() == Some(name),
                DatasetDefinition::View(_) => false,
            })
            .map(|d| format!("{}.{}", d.record.schema, d.record.name))
            .collect();
        if !users.is_empty() {
            return Err(CatalogError::InUse {
                kind: ObjectKind::Source,
                name: name.to_string(),
                users: users.join(", "),
            });
        }
        self.delete::<SourceRecord>(
            Keyspace::Sources,
            ObjectKind::Source,
            name,
            expected_version,
        )
    }

    // ---- schemas ----

    pub fn list_schemas(&self) -> Result<Vec<Stored<SchemaRecord>>, CatalogError> {
        self.list(Keyspace::Schemas, b"")
    }

    pub fn get_schema(&self, name: &str) -> Result<Option<Stored<SchemaRecord>>, CatalogError> {
        self.get(Keyspace::Schemas, name.as_bytes())
    }

    pub fn create_schema(
        &self,
        record: SchemaRecord,
    ) -> Result<Stored<SchemaRecord>, CatalogError> {
        validate_name(ObjectKind::Schema, &record.name)?;
        let key = record.name.clone();
        self.create(Keyspace::Schemas, ObjectKind::Schema, &key, record)
    }

    /// Drop a schema; refused while it holds datasets, or when it is no longer at
    /// `expected_version`.
    pub fn delete_schema(
        &self,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<(), CatalogError> {
        if name == DEFAULT_SCHEMA {
            return Err(CatalogError::InUse {
                kind: ObjectKind::Schema,
                name: name.to_string(),
                users: "the catalog (it is the default schema)".to_string(),
            });
        }
        let datasets = self.list_datasets(Some(name))?;
        if !datasets.is_empty() {
            let names: Vec<String> = datasets.into_iter().map(|d| d.record.name).collect();
            return Err(CatalogError::InUse {
                kind: ObjectKind::Schema,
                name: name.to_string(),
                users: names.join(", "),
            });
        }
        self.delete::<SchemaRecord>(
            Keyspace::Schemas,
            ObjectKind::Schema,
            name,
            expected_version,
        )
    }

    // ---- datasets ----

    /// Datasets of one schema, or of all schemas.
    pub fn list_datasets(
        &self,
        schema: Option<&str>,
    ) -> Result<Vec<Stored<DatasetRecord>>, CatalogError> {
        match schema {
            Some(s) => self.list(Keyspace::Datasets, dataset_prefix(s).as_bytes()),
            None => self.list(Keyspace::Datasets, b""),
        }
    }

    pub fn get_dataset(
        &self,
        schema: &str,
        name: &str,
    ) -> Result<Option<Stored<DatasetRecord>>, CatalogError> {
        self.get(Keyspace::Datasets, dataset_key(schema, name).as_bytes())
    }

    /// Create a dataset in an existing schema.
    pub fn create_dataset(
        &self,
        record: DatasetRecord,
    ) -> Result<Stored<DatasetRecord>, CatalogError> {
        validate_name(ObjectKind::Dataset, &record.name)?;
        self.require_schema(&record.schema)?;
        let key = dataset_key(&record.schema, &record.name);
        self.create(Keyspace::Datasets, ObjectKind::Dataset, &key, record)
    }

    pub fn update_dataset(
        &self,
        record: DatasetRecord,
        expected_version: u64,
    ) -> Result<Stored<DatasetRecord>, CatalogError> {
        let key = dataset_key(&record.schema, &record.name);
        self.update(
            Keyspace::Datasets,
            ObjectKind::Dataset,
            &key,
            record,
            expected_version,
        )
    }

    /// Create the dataset, or replace it whatever its version (`CREATE OR REPLACE`).
    pub fn create_or_replace_dataset(
        &self,
        record: DatasetRecord,
    ) -> Result<Stored<DatasetRecord>, CatalogError> {
        loop {
            match self.get_dataset(&record.schema, &record.name)? {
                None => match self.create_dataset(record.clone()) {
                    Err(CatalogError::AlreadyExists { .. }) => continue,
                    other => return other,
                },
                Some(current) => match self.update_dataset(record.clone(), current.version) {
                    Err(CatalogError::Conflict { .. }) | Err(CatalogError::NotFound { .. }) => {
                        continue;
                    }
                    other => return other,
                },
            }
        }
    }

    pub fn delete_dataset(
        &self,
        schema: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<(), CatalogError> {
        self.delete::<DatasetRecord>(
            Keyspace::Datasets,
            ObjectKind::Dataset,
            &dataset_key(schema, name),
            expected_version,
        )
    }

    pub fn flush(&self) -> Result<(), CatalogError> {
        self.store.flush()
    }

    // ---- generic record plumbing ----

    fn require_schema(&self, schema: &str) -> Result<(), CatalogError> {
        match self.get_schema(schema)? {
            Some(_) => Ok(()),
            None => Err(CatalogError::NotFound {
                kind: ObjectKind::Schema,
                name: schema.to_string(),
            }),
        }
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        space: Keyspace,
        key: &[u8],
    ) -> Result<Option<Stored<T>>, CatalogError> {
        self.store
            .get(space, key)?
            .map(|bytes| decode(&String::from_utf8_lossy(key), &bytes))
            .transpose()
    }

    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        space: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<Stored<T>>, CatalogError> {
        self.store
            .scan_prefix(space, prefix)?
            .into_iter()
            .map(|(k, v)| decode(&String::from_utf8_lossy(&k), &v))
            .collect()
    }

    pub(crate) fn create<T: Serialize>(
        &self,
        space: Keyspace,
        kind: ObjectKind,
        key: &str,
        record: T,
    ) -> Result<Stored<T>, CatalogError> {
        let stored = envelope(record, 1, now_ms());
        let bytes = encode(key, &stored)?;
        match self
            .store
            .compare_and_swap(space, key.as_bytes(), None, Some(bytes), true)?
        {
            Ok(()) => Ok(stored),
            Err(_) => Err(CatalogError::AlreadyExists {
                kind,
                name: display_key(key),
            }),
        }
    }

    pub(crate) fn update<T: Serialize + DeserializeOwned>(
        &self,
        space: Keyspace,
        kind: ObjectKind,
        key: &str,
        record: T,
        expected_version: u64,
    ) -> Result<Stored<T>, CatalogError> {
        let current_bytes =
            self.store
                .get(space, key.as_bytes())?
                .ok_or_else(|| CatalogError::NotFound {
                    kind,
                    name: display_key(key),
                })?;
        let current: Stored<T> = decode(key, &current_bytes)?;
        if current.version != expected_version {
            return Err(CatalogError::Conflict {
                kind,
                name: display_key(key),
                expected: expected_version,
                found: current.version,
            });
        }
        let mut stored = envelope(record, current.version + 1, current.created_ms);
        stored.updated_ms = now_ms();
        let bytes = encode(key, &stored)?;
        match self.store.compare_and_swap(
            space,
            key.as_bytes(),
            Some(&current_bytes),
            Some(bytes),
            true,
        )? {
            Ok(()) => Ok(stored),
            Err(mismatch) => {
                let found = match mismatch.current {
                    Some(b) => decode::<T>(key, &b)?.version,
                    None => 0,
                };
                Err(CatalogError::Conflict {
                    kind,
                    name: display_key(key),
                    expected: expected_version,
                    found,
                })
            }
        }
    }

    pub(crate) fn delete<T: DeserializeOwned>(
        &self,
        space: Keyspace,
        kind: ObjectKind,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), CatalogError> {
        let current_bytes =
            self.store
                .get(space, key.as_bytes())?
                .ok_or_else(|| CatalogError::NotFound {
                    kind,
                    name: display_key(key),
                })?;
        if let Some(expected) = expected_version {
            let current: Stored<T> = decode(key, &current_bytes)?;
            if current.version != expected {
                return Err(CatalogError::Conflict {
                    kind,
                    name: display_key(key),
                    expected,
                    found: current.version,
                });
            }
        }
        match self.store.compare_and_swap(
            space,
            key.as_bytes(),
            Some(&current_bytes),
            None,
            true,
        )? {
            Ok(()) => Ok(()),
            Err(_) => Err(CatalogError::Conflict {
                kind,
                name: display_key(key),
                expected: expected_version.unwrap_or(0),
                found: 0,
            }),
        }
    }
}

pub(crate) fn envelope<T>(record: T, version: u64, created_ms: u64) -> Stored<T> {
    Stored {
        format: FORMAT_VERSION,
        version,
        created_ms,
        updated_ms: created_ms,
        record,
    }
}

pub(crate) fn encode<T: Serialize>(key: &str, stored: &Stored<T>) -> Result<Vec<u8>, CatalogError> {
    serde_json::to_vec(stored).map_err(|e| CatalogError::Corrupt {
        key: display_key(key),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<Stored<T>, CatalogError> {
    // Read the format first so a newer record is reported as such, not as garbage.
    #[derive(serde::Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let format = serde_json::from_slice::<FormatOnly>(bytes)
        .map_err(|e| CatalogError::Corrupt {
            key: display_key(key),
            reason: e.to_string(),
        })?
        .format;
    if format > FORMAT_VERSION {
        return Err(CatalogError::NewerFormat {
            key: display_key(key),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| CatalogError::Corrupt {
        key: display_key(key),
        reason: e.to_string(),
    })
}

fn dataset_key(schema: &str, name: &str) -> String {
    format!("{schema}{KEY_SEPARATOR}{name}")
}

fn dataset_prefix(schema: &str) -> String {
    format!("{schema}{KEY_SEPARATOR}")
}

pub(crate) fn display_key(key: &str) -> String {
    key.replace(KEY_SEPARATOR, ".")
}

pub(crate) fn validate_name(kind: ObjectKind, name: &str) -> Result<(), CatalogError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 256 {
        Some("it is longer than 256 bytes")
    } else if name.chars().any(|c| c.is_control()) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CatalogError::InvalidName {
            kind,
            name: name.escape_default().to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}
