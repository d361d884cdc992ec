//! Behaviour of the catalog against real sled in a temporary directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use quarry_catalog::{
    Catalog, CatalogError, DatasetDefinition, DatasetRecord, Keyspace, KvStore, SchemaRecord,
    SledStore, SourceConfig, SourceRecord, TableDefinition, ViewDefinition,
};

fn view(schema: &str, name: &str, sql: &str) -> DatasetRecord {
    DatasetRecord {
        schema: schema.to_string(),
        name: name.to_string(),
        definition: DatasetDefinition::View(ViewDefinition {
            sql: sql.to_string(),
            default_schema: None,
        }),
    }
}

fn local_source(name: &str) -> SourceRecord {
    SourceRecord {
        name: name.to_string(),
        config: SourceConfig::Local {
            root: "/data".to_string(),
            writable: false,
        },
    }
}

#[test]
fn kv_store_conformance_sled() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path())?;
    check_kv_store(&store)
}

/// The contract every KvStore backend must keep.
fn check_kv_store(store: &dyn KvStore) -> Result<(), CatalogError> {
    let ks = Keyspace::Meta;
    assert_eq!(store.get(ks, b"a")?, None);
    // create-if-absent succeeds once
    assert!(
        store
            .compare_and_swap(ks, b"a", None, Some(b"1".to_vec()), true)?
            .is_ok()
    );
    let second = store.compare_and_swap(ks, b"a", None, Some(b"2".to_vec()), true)?;
    assert_eq!(second.err().and_then(|m| m.current), Some(b"1".to_vec()));
    // swap from the right value
    assert!(
        store
            .compare_and_swap(ks, b"a", Some(b"1"), Some(b"3".to_vec()), true)?
            .is_ok()
    );
    assert_eq!(store.get(ks, b"a")?, Some(b"3".to_vec()));
    // keyspaces are separate
    assert_eq!(store.get(Keyspace::Sources, b"a")?, None);
    // prefix scans are ordered and bounded
    store.put(ks, b"p/2", b"x".to_vec(), false)?;
    store.put(ks, b"p/1", b"y".to_vec(), false)?;
    store.put(ks, b"q/1", b"z".to_vec(), true)?;
    let keys: Vec<Vec<u8>> = store
        .scan_prefix(ks, b"p/")?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"p/1".to_vec(), b"p/2".to_vec()]);
    // delete by swap
    assert!(
        store
            .compare_and_swap(ks, b"a", Some(b"3"), None, true)?
            .is_ok()
    );
    assert_eq!(store.get(ks, b"a")?, None);
    store.remove(ks, b"p/1", true)?;
    assert_eq!(store.scan_prefix(ks, b"p/")?.len(), 1);
    store.flush()
}

#[test]
fn records_survive_reopen() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let catalog = Catalog::open(dir.path())?;
        catalog.create_source(local_source("files"))?;
        catalog.create_schema(SchemaRecord {
            name: "sales".to_string(),
        })?;
        catalog.create_dataset(view("sales", "v", "SELECT 1"))?;
    }
    let catalog = Catalog::open(dir.path())?;
    assert_eq!(catalog.list_sources()?.len(), 1);
    let names: Vec<String> = catalog
        .list_schemas()?
        .into_iter()
        .map(|s| s.record.name)
        .collect();
    assert_eq!(names, vec!["public".to_string(), "sales".to_string()]);
    let v = catalog.get_dataset("sales", "v")?.expect("view kept");
    assert_eq!(v.version, 1);
    assert_eq!(v.record, view("sales", "v", "SELECT 1"));
    Ok(())
}

#[test]
fn duplicate_create_is_refused() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::open(dir.path())?;
    catalog.create_source(local_source("files"))?;
    let err = catalog.create_source(local_source("files")).unwrap_err();
    assert_eq!(err.to_string(), "source 'files' already exists");
    Ok(())
}

#[test]
fn stale_update_is_refused_and_loses_nothing() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::open(dir.path())?;
    let v1 = catalog.create_dataset(view("public", "v", "SELECT 1"))?;
    // two writers read version 1; the first update wins
    let v2 = catalog.update_dataset(view("public", "v", "SELECT 2"), v1.version)?;
    assert_eq!(v2.version, 2);
    let err = catalog
        .update_dataset(view("public", "v", "SELECT 3"), v1.version)
        .unwrap_err();
    assert!(matches!(
        err,
        CatalogError::Conflict {
            expected: 1,
            found: 2,
            ..
        }
    ));
    assert!(err.to_string().contains("changed concurrently"));
    let current = catalog.get_dataset("public", "v")?.expect("exists");
    assert_eq!(current.record, view("public", "v", "SELECT 2"));
    // a stale delete is refused too
    assert!(matches!(
        catalog.delete_dataset("public", "v", Some(1)),
        Err(CatalogError::Conflict { .. })
    ));
    catalog.delete_dataset("public", "v", Some(2))?;
    assert!(catalog.get_dataset("public", "v")?.is_none());
    Ok(())
}

#[test]
fn concurrent_updates_one_winner_per_version() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(Catalog::open(dir.path())?);
    catalog.create_dataset(view("public", "v", "SELECT 0"))?;
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let catalog = Arc::clone(&catalog);
            std::thread::spawn(move || {
                catalog.update_dataset(view("public", "v", &format!("SELECT {i}")), 1)
            })
        })
        .collect();
    let mut wins = 0;
    for h in handles {
        match h.join().expect("thread") {
            Ok(_) => wins += 1,
            Err(CatalogError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        catalog.get_dataset("public", "v")?.map(|d| d.version),
        Some(2)
    );
    Ok(())
}

#[test]
fn datasets_need_their_schema_and_pin_their_source() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::open(dir.path())?;
    let err = catalog
        .create_dataset(view("nope", "v", "SELECT 1"))
        .unwrap_err();
    assert_eq!(err.to_string(), "schema 'nope' does not exist");

    catalog.create_source(local_source("files"))?;
    catalog.create_dataset(DatasetRecord {
        schema: "public".to_string(),
        name: "t".to_string(),
        definition: DatasetDefinition::Table(TableDefinition {
            source: Some("files".to_string()),
            path: Some("t.parquet".to_string()),
            location: "file:///data/t.parquet".to_string(),
            format: "parquet".to_string(),
            options: BTreeMap::new(),
            file_extension: ".parquet".to_string(),
            partition_columns: vec![],
            arrow_schema: String::new(),
        }),
    })?;
    let err = catalog.delete_source("files", None).unwrap_err();
    assert!(
        err.to_string().contains("still in use by public.t"),
        "{err}"
    );
    catalog.delete_dataset("public", "t", None)?;
    catalog.delete_source("files", None)?;

    let err = catalog.delete_schema("public", None).unwrap_err();
    assert!(matches!(err, CatalogError::InUse { .. }));
    Ok(())
}

#[test]
fn newer_and_corrupt_records_are_reported() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::open(dir.path())?;
    catalog.store().put(
        Keyspace::Sources,
        b"future",
        br#"{"format":99,"version":1,"created_ms":0,"updated_ms":0,"record":{}}"#.to_vec(),
        true,
    )?;
    let err = catalog.get_source("future").unwrap_err();
    assert!(matches!(err, CatalogError::NewerFormat { found: 99, .. }));
    catalog
        .store()
        .put(Keyspace::Sources, b"junk", b"not json".to_vec(), true)?;
    assert!(matches!(
        catalog.get_source("junk"),
        Err(CatalogError::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn jobs_list_newest_first_and_prune() -> Result<(), CatalogError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::open(dir.path())?;
    for i in 0..5u64 {
        catalog.put_job(&quarry_catalog::JobRecord {
            id: format!("job-{i}"),
            sql: "SELECT 1".to_string(),
            user: "anonymous".to_string(),
            state: "COMPLETED".to_string(),
            submitted_ms: 1000 + i,
            started_ms: None,
            finished_ms: None,
            row_count: 1,
            tasks_done: 0,
            tasks_total: 0,
            error: None,
            profile: serde_json::Value::Null,
            reflections: Vec::new(),
            data_as_of_ms: None,
            aggregates: Vec::new(),
            frontend: "flight_sql".to_string(),
            trace_id: None,
            results_cache: None,
            timings_us: Default::default(),
        })?;
    }
    let ids: Vec<String> = catalog.list_jobs()?.into_iter().map(|j| j.id).collect();
    assert_eq!(ids[0], "job-4");
    assert_eq!(catalog.prune_jobs(2)?, 3);
    let ids: Vec<String> = catalog.list_jobs()?.into_iter().map(|j| j.id).collect();
    assert_eq!(ids, vec!["job-4".to_string(), "job-3".to_string()]);
    assert!(catalog.get_job("job-4")?.is_some());
    let recent: Vec<String> = catalog
        .recent_jobs(None, 1)?
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(recent, vec!["job-4".to_string()]);
    assert!(catalog.recent_jobs(Some("FAILED"), 10)?.is_empty());
    assert_eq!(catalog.recent_jobs(Some("completed"), 10)?.len(), 2);
    Ok(())
}

#[test]
fn grants_roles_and_users_survive_reopen_and_go_with_their_owner() -> Result<(), CatalogError> {
    use quarry_catalog::{GranteeKind, Privilege, RoleRecord, SecurableKind, UserRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let catalog = Catalog::open(dir.path())?;
        catalog.create_user(UserRecord {
            name: "ada".to_string(),
            password_hash: "00".to_string(),
            salt: "s".to_string(),
            roles: vec![],
        })?;
        catalog.create_role(RoleRecord {
            name: "analyst".to_string(),
        })?;
        assert!(matches!(
            catalog.create_role(RoleRecord {
                name: "analyst".to_string()
            }),
            Err(CatalogError::AlreadyExists { .. })
        ));
        catalog.modify_user("ada", |u| u.roles.push("analyst".to_string()))?;
        let on = |c: &Catalog, p: &[Privilege]| {
            c.grant(
                GranteeKind::Role,
                "analyst",
                SecurableKind::Dataset,
                "demo\u{1f}orders",
                p,
            )
        };
        on(&catalog, &[Privilege::Select])?;
        on(&catalog, &[Privilege::Select, Privilege::Alter])?;
        catalog.grant(
            GranteeKind::User,
            "ada",
            SecurableKind::Schema,
            "demo",
            &[Privilege::CreateTable],
        )?;
    }
    let catalog = Catalog::open(dir.path())?;
    let grants = catalog.list_grants()?;
    assert_eq!(grants.len(), 2);
    let role_grant = grants
        .iter()
        .find(|g| g.grantee_kind == GranteeKind::Role)
        .expect("role grant");
    assert_eq!(
        role_grant.privileges,
        vec![Privilege::Select, Privilege::Alter]
    );
    catalog.revoke(
        GranteeKind::Role,
        "analyst",
        SecurableKind::Dataset,
        "demo\u{1f}orders",
        &[Privilege::Alter],
    )?;
    // Revoking everything removes the record.
    catalog.revoke(
        GranteeKind::User,
        "ada",
        SecurableKind::Schema,
        "demo",
        &Privilege::ALL,
    )?;
    assert_eq!(catalog.list_grants()?.len(), 1);
    catalog.delete_role("analyst")?;
    assert!(catalog.list_grants()?.is_empty());
    let ada = catalog.get_user("ada")?.expect("ada");
    assert!(ada.record.roles.is_empty());
    catalog.delete_user("ada")?;
    assert!(catalog.get_user("ada")?.is_none());
    Ok(())
}
