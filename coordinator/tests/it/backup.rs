//! `quarry backup` / `quarry restore`: a backup taken from a running coordinator while
//! INSERTs and DDL run restores into a fresh directory, and a coordinator started on it
//! answers as the original did; damaged backups are refused and write nothing.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{QuarryProcess, quarry_bin};
use crate::rest::Api;

fn quarry(args: &[&str]) -> Output {
    Command::new(quarry_bin())
        .args(args)
        .env("QUARRY_PASSWORD", "pw")
        .output()
        .expect("quarry runs")
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// `quarry backup <source...> --to TO [extra...]`.
fn backup(source: &[&str], to: &Path, extra: &[&str]) -> Output {
    let to = to.display().to_string();
    let mut args = vec!["backup"];
    args.extend(source);
    args.extend(["--to", to.as_str()]);
    args.extend(extra);
    quarry(&args)
}

/// `quarry restore --from FROM --dir DIR [extra...]`.
fn restore(from: &Path, dir: &Path, extra: &[&str]) -> Output {
    let (from, dir) = (from.display().to_string(), dir.display().to_string());
    let mut args = vec!["restore", "--from", from.as_str(), "--dir", dir.as_str()];
    args.extend(extra);
    quarry(&args)
}

/// Rows of a statement, sorted, so two catalogs' answers compare.
async fn rows(api: &Api, sql: &str) -> Vec<String> {
    let body = api.sql(sql).await;
    let mut rows: Vec<String> = body["rows"]
        .as_array()
        .map(|r| r.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    rows.sort();
    rows
}

/// What the tests compare between a coordinator and one started on its restored backup.
async fn answers(api: &Api) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for sql in [
        "SHOW TABLES",
        "SHOW GRANTS",
        "SELECT * FROM sys.users",
        "SELECT * FROM sys.roles",
        "SELECT name FROM sys.reflections",
        "SELECT * FROM sales.v",
        "SELECT count(*) AS n FROM sales.t",
    ] {
        all.push(rows(api, sql).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_run_restores_the_same_catalog() {
    let root = tempfile::tempdir().expect("tempdir");
    let original_dir = root.path().join("original");
    let flags = [
        "--demo-rows",
        "2000",
        "--auth",
        "--admin-password",
        "pw",
        "--executors",
        "1",
    ];
    let original = QuarryProcess::up(&original_dir, &flags);
    let admin = Api::logged_in(&original.http, "admin", "pw").await;
    for sql in [
        "CREATE SCHEMA sales",
        "CREATE TABLE sales.t AS SELECT order_id, city, revenue FROM demo.orders LIMIT 100",
        "CREATE VIEW sales.v AS SELECT city, count(*) AS n FROM sales.t GROUP BY city",
        "CREATE USER ada PASSWORD 's3cret'",
        "CREATE ROLE analyst",
        "GRANT ROLE analyst TO USER ada",
        "GRANT SELECT ON SCHEMA sales TO ROLE analyst",
        "GRANT SELECT ON TABLE demo.orders TO USER ada",
        "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION by_city USING DIMENSIONS (city) MEASURES (revenue (SUM))",
    ] {
        admin.sql(sql).await;
    }

    // Writes run while the backup is taken: new views one after another, and INSERTs.
    let writer = {
        let api = Api::logged_in(&original.http, "admin", "pw").await;
        tokio::spawn(async move {
            for i in 0..40 {
                api.sql(&format!("CREATE VIEW sales.w{i} AS SELECT {i} AS i"))
                    .await;
                api.sql(
                    "INSERT INTO sales.t SELECT order_id, city, revenue FROM demo.orders LIMIT 1",
                )
                .await;
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = root.path().join("during.backup");
    let text = ok(backup(&["--coordinator", &original.http], &during, &[]));
    assert!(text.contains("Backed up"), "{text}");
    writer.await.expect("writer");

    // After the writes: a backup with the job history, and what the original answers.
    let after = root.path().join("after.backup");
    ok(backup(
        &["--coordinator", &original.http],
        &after,
        &["--jobs"],
    ));
    let expected = answers(&admin).await;
    // Not an admin: refused.
    let out = backup(
        &["--coordinator", &original.http],
        &root.path().join("x"),
        &["--user", "ada", "--password", "s3cret"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only admins"));
    drop(original);

    // The backup taken mid-writes is whole: the views it holds are w0..wk with no gap.
    let mid = root.path().join("mid");
    ok(restore(&during, &mid, &[]));
    let catalog = quarry_catalog::Catalog::open(&mid.join("catalog")).expect("restored catalog");
    let mut views: Vec<usize> = catalog
        .list_datasets(Some("sales"))
        .expect("datasets")
        .iter()
        .filter_map(|d| d.record.name.strip_prefix('w').and_then(|n| n.parse().ok()))
        .collect();
    views.sort();
    assert_eq!(views, (0..views.len()).collect::<Vec<_>>(), "no gap");
    assert!(views.len() < 40, "taken while the views were being made");
    drop(catalog);

    // The backup after the writes, restored into a fresh directory: a coordinator there
    // (its tables' data where it was) answers as the original did.
    let restored_dir = root.path().join("restored");
    let text = ok(restore(&after, &restored_dir, &[]));
    assert!(text.contains("Restored"), "{text}");
    let warehouse = original_dir.join("warehouse").display().to_string();
    let reflections = original_dir.join("reflections").display().to_string();
    let mut restored_flags = flags.to_vec();
    restored_flags[1] = "0";
    restored_flags.extend([
        "--warehouse",
        &warehouse,
        "--reflection-store",
        &reflections,
    ]);
    let restored = QuarryProcess::up(&restored_dir, &restored_flags);
    let admin = Api::logged_in(&restored.http, "admin", "pw").await;
    assert_eq!(answers(&admin).await, expected);
    let jobs = admin.get("/api/v1/jobs?limit=10000").await.1;
    assert!(
        jobs["jobs"].as_array().is_some_and(|j| j.len() > 40),
        "the job history came along"
    );
    // Ada's password and grants came along.
    let ada = Api::logged_in(&restored.http, "ada", "s3cret").await;
    assert!(!rows(&ada, "SELECT * FROM sales.v").await.is_empty());
    drop(restored);

    // A stopped coordinator's directory backs up directly.
    let offline = root.path().join("offline.backup");
    let dir = original_dir.display().to_string();
    let text = ok(backup(&["--dir", &dir], &offline, &[]));
    assert!(text.contains("0 jobs"), "{text}");

    refuses_bad_backups(root.path(), &after);
}

/// Damaged, cut, foreign and future backups are refused, and nothing is written.
fn refuses_bad_backups(root: &Path, good: &Path) {
    let bytes = std::fs::read(good).expect("backup");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let mut future = bytes.clone();
    future[8] = 99;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped", flipped, "damaged"),
        ("cut", bytes[..bytes.len() - 10].to_vec(), "truncated"),
        (
            "foreign",
            b"PAR1 not a backup".to_vec(),
            "not a Quarry catalog backup",
        ),
        ("future", future, "newer Quarry"),
    ];
    for (name, content, why) in cases {
        let file = root.join(format!("{name}.backup"));
        std::fs::write(&file, content).expect("write");
        let target = root.join(format!("into-{name}"));
        let out = restore(&file, &target, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert!(!target.join("catalog").exists(), "{name}: nothing written");
    }
    // Into a catalog that is there: refused without --force.
    let target = root.join("restored");
    let out = restore(good, &target, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    ok(restore(good, &target, &["--force"]));
}
