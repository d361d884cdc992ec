//! The long runs of the robustness work: fuzzing every door for minutes or hours, the
//! storm of many clients at once, and the soak. Each starts its own cluster of `quarry`
//! processes from this build (a coordinator and two executors of two slots) and prints
//! its report; a finding, an unexpected error or growth makes the command fail.

use std::path::Path;
use std::time::Duration;

use quarry_sql_tests::fuzz::cluster::FuzzCluster;
use quarry_sql_tests::fuzz::{self, Budget, TARGETS};
use quarry_sql_tests::processes::ProcessCluster;
use quarry_sql_tests::soak::{self, SoakConfig};
use quarry_sql_tests::storm::{self, StormConfig};
use quarry_sql_tests::tpch;

use crate::Error;

const EXECUTORS: usize = 2;
const SLOTS: usize = 2;

/// Fuzz `which` (a target's name or `all`) for `minutes` each, from `seed`.
pub fn fuzz(which: &str, minutes: f64, seed: u64, results: &Path) -> Result<(), Error> {
    let names: Vec<&str> = if which == "all" {
        TARGETS.to_vec()
    } else {
        vec![which]
    };
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for name in names {
        eprintln!("fuzz {name}: {minutes} min from seed {seed}");
        let mut cluster = FuzzCluster::start(EXECUTORS, SLOTS)?;
        let mut target = fuzz::target(name, &cluster)?;
        let budget = Budget::for_time(Duration::from_secs_f64(minutes * 60.0));
        let report = fuzz::run(&mut cluster, target.as_mut(), seed, budget);
        println!("{report}");
        summary.push(serde_json::json!({
            "target": name,
            "seed": seed,
            "inputs": report.inputs,
            "seconds": report.elapsed.as_secs_f64(),
            "outcomes": report.outcomes,
            "findings": report.findings.iter().map(|f| format!("{}: {}", f.what, f.input)).collect::<Vec<_>>(),
        }));
        if !report.findings.is_empty() {
            failed.push(name);
        }
    }
    std::fs::write(
        results.join("fuzz.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("findings in {failed:?}").into())
    }
}

fn tpch_cluster(data: &Path) -> Result<(ProcessCluster, std::path::PathBuf), Error> {
    eprintln!(
        "TPC-H SF0.1: generating data (once) into {}",
        data.display()
    );
    let dir = tpch::cached(data, 0.1, 2)?.canonicalize()?;
    let cluster = ProcessCluster::start(EXECUTORS, SLOTS, &["--log", "warn"]);
    Ok((cluster, dir))
}

/// `clients` clients at once, `rounds` rounds of the mix each.
pub fn storm(clients: usize, rounds: usize, data: &Path) -> Result<(), Error> {
    let (mut cluster, dir) = tpch_cluster(data)?;
    storm::prepare(&cluster, &dir)?;
    eprintln!("storm: {clients} clients, {rounds} round(s) each");
    let report = storm::run(
        &mut cluster,
        StormConfig {
            clients,
            rounds,
            tpch_every: 2,
        },
    );
    println!("{report}");
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{problems:#?}").into())
    }
}

/// The soak for `minutes`, sampling every minute; the curve goes to `results/soak.json`.
pub fn soak(minutes: f64, data: &Path, results: &Path) -> Result<(), Error> {
    let (mut cluster, dir) = tpch_cluster(data)?;
    soak::prepare(&cluster, &dir)?;
    eprintln!("soak: {minutes} min, a sample each minute");
    let config = SoakConfig {
        duration: Duration::from_secs_f64(minutes * 60.0),
        sample_every: Duration::from_secs(60),
    };
    eprintln!("  minute, then per process: RSS MiB / open files / threads");
    let report = soak::run(&mut cluster, config, |sample| eprintln!("  {sample}"));
    println!("{report}");
    let samples: Vec<serde_json::Value> = report
        .samples
        .iter()
        .map(|s| {
            serde_json::json!({
                "minute": s.at.as_secs_f64() / 60.0,
                "processes": s.processes.iter().map(|(name, v)| serde_json::json!({
                    "name": name,
                    "rss_bytes": v.map(|v| v.rss),
                    "files": v.map(|v| v.files),
                    "threads": v.map(|v| v.threads),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    std::fs::write(
        results.join("soak.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "minutes": minutes,
            "calls": report.calls,
            "refused": report.errors.refused,
            "failed": report.errors.failed,
            "samples": samples,
        }))?,
    )?;
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{problems:#?}").into())
    }
}
