//! A writer process is killed with SIGKILL again and again in the middle of catalog
//! writes; every write it acknowledged must be there when the store is reopened.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quarry_catalog::{Catalog, CatalogError, DatasetDefinition, DatasetRecord, ViewDefinition};

const WRITER_DIR_ENV: &str = "QUARRY_CRASH_WRITER_DIR";
const WRITER_CYCLE_ENV: &str = "QUARRY_CRASH_WRITER_CYCLE";
const TEST_NAME: &str = "kill_nine_loses_no_acknowledged_write";

fn cycles() -> usize {
    std::env::var("QUARRY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn view(name: &str, sql: &str) -> DatasetRecord {
    DatasetRecord {
        schema: "public".to_string(),
        name: name.to_string(),
        definition: DatasetDefinition::View(ViewDefinition {
            sql: sql.to_string(),
            default_schema: None,
        }),
    }
}

/// The child: create views and bump a shared counter view, acknowledging each on stdout.
fn run_writer(dir: &str, cycle: &str) -> Result<(), CatalogError> {
    let catalog = Catalog::open(std::path::Path::new(dir))?;
    let mut i = 0u64;
    loop {
        let name = format!("c{cycle}_{i}");
        catalog.create_dataset(view(&name, "SELECT 1"))?;
        println!("created {name}");
        let counter = match catalog.get_dataset("public", "counter")? {
            Some(c) => {
                catalog.update_dataset(view("counter", &format!("SELECT {i}")), c.version)?
            }
            None => catalog.create_dataset(view("counter", "SELECT 0"))?,
        };
        println!("counter {}", counter.version);
        i += 1;
    }
}

#[test]
fn kill_nine_loses_no_acknowledged_write() -> Result<(), Box<dyn std::error::Error>> {
    if let (Ok(dir), Ok(cycle)) = (
        std::env::var(WRITER_DIR_ENV),
        std::env::var(WRITER_CYCLE_ENV),
    ) {
        run_writer(&dir, &cycle)?;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut acked: Vec<String> = Vec::new();
    let mut counter_acked = 0u64;
    for cycle in 0..cycles() {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(WRITER_DIR_ENV, dir.path())
            .env(WRITER_CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            })
        };
        // Kill at a different moment each cycle: after the store opened and writes flowed.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos() as u64;
        std::thread::sleep(Duration::from_millis(60 + nanos % 200));
        child.kill()?; // SIGKILL
        child.wait()?;
        reader.join().map_err(|_| "reader thread panicked")?;

        let lines = lines.lock().map_err(|_| "poisoned")?.clone();
        for line in &lines {
            if let Some(name) = line.strip_prefix("created ") {
                acked.push(name.to_string());
            } else if let Some(v) = line.strip_prefix("counter ") {
                counter_acked = counter_acked.max(v.parse()?);
            }
        }

        // The store must reopen, and hold every acknowledged write.
        let catalog = Catalog::open(dir.path())?;
        for name in &acked {
            assert!(
                catalog.get_dataset("public", name)?.is_some(),
                "cycle {cycle}: acknowledged view {name} was lost"
            );
        }
        let counter = catalog
            .get_dataset("public", "counter")?
            .map(|c| c.version)
            .unwrap_or(0);
        assert!(
            counter >= counter_acked,
            "cycle {cycle}: counter at version {counter}, but version {counter_acked} was acknowledged"
        );
    }
    assert!(
        acked.len() > cycles(),
        "the writer acknowledged only {} writes",
        acked.len()
    );
    Ok(())
}
