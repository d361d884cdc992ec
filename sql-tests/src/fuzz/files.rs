//! The files target: Parquet, CSV and NDJSON files that are truncated, bit-flipped or
//! spliced (before the table is made, or after, under a table that already knows the
//! schema), and Delta tables whose logs and data files are damaged, all read through
//! tables as a user would; then the table is dropped and the file removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use rand::Rng as _;
use serde_json::json;

use super::cluster::post;
use super::draw::{bytes, chance, damage, pick, text};
use super::{Rng, Sent, Target};
use crate::processes::Rest;

pub struct FilesTarget {
    rest: Rest,
    /// The `files` source's root; damaged files go to `fuzz/` under it.
    root: PathBuf,
    /// Where managed tables of schema `mart` live.
    warehouse: PathBuf,
    made: usize,
}

impl FilesTarget {
    /// `cluster_dir` is the process cluster's folder (the coordinator's is `coordinator/`).
    pub fn new(base: &str, root: &Path, cluster_dir: &Path) -> Self {
        FilesTarget {
            rest: Rest::new(base.to_string()),
            root: root.to_path_buf(),
            warehouse: cluster_dir.join("coordinator/warehouse/mart"),
            made: 0,
        }
    }

    fn sql(&self, sql: &str) -> String {
        match post(&self.rest, "/api/v1/sql", &json!({"sql": sql})) {
            Ok((200, _)) => "ok".to_string(),
            Ok((status, body)) => format!("{status} {}", body["code"].as_str().unwrap_or("")),
            Err(e) if e.contains("timed out") => "slow".to_string(),
            Err(_) => "unreachable".to_string(),
        }
    }
}

/// A small batch of random columns and rows.
fn batch(rng: &mut Rng) -> Option<RecordBatch> {
    let rows = *pick(rng, &[0usize, 1, 7, 100, 3000]);
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    for i in 0..rng.random_range(1..5) {
        let array: ArrayRef = match rng.random_range(0..4) {
            0 => Arc::new(Int64Array::from_iter(
                (0..rows).map(|_| chance(rng, 0.9).then(|| rng.random::<i64>() % 1000)),
            )),
            1 => Arc::new(Float64Array::from_iter(
                (0..rows).map(|_| chance(rng, 0.9).then(|| rng.random::<f64>())),
            )),
            2 => Arc::new(BooleanArray::from_iter(
                (0..rows).map(|_| chance(rng, 0.9).then(|| rng.random::<bool>())),
            )),
            _ => Arc::new(StringArray::from_iter((0..rows).map(|_| {
                chance(rng, 0.9).then(|| text(rng).replace(['\0', '\n', '\r'], " "))
            }))),
        };
        columns.push((format!("c{i}"), array));
    }
    RecordBatch::try_from_iter(columns).ok()
}

/// `batch` as bytes of `format`.
fn encode(batch: &RecordBatch, format: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let written = match format {
        "parquet" => parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
            .and_then(|mut w| {
                w.write(batch)?;
                w.close().map(|_| ())
            })
            .map_err(|e| e.to_string()),
        "csv" => {
            let mut writer = arrow::csv::Writer::new(&mut out);
            writer.write(batch).map_err(|e| e.to_string())
        }
        _ => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            writer
                .write(batch)
                .and_then(|_| writer.finish())
                .map_err(|e| e.to_string())
        }
    };
    if written.is_err() {
        out.clear();
    }
    out
}

impl FilesTarget {
    /// A damaged Parquet, CSV or NDJSON file under a table.
    fn flat_file(&mut self, rng: &mut Rng, n: usize) -> (String, String) {
        let format = *pick(rng, &["parquet", "csv", "json"]);
        let Some(batch) = batch(rng) else {
            return ("no batch".to_string(), "skipped".to_string());
        };
        let mut data = encode(&batch, format);
        let damage_before = chance(rng, 0.6);
        let damage_after = !damage_before && chance(rng, 0.8);
        if damage_before {
            damage(rng, &mut data);
        }
        let dir = self.root.join("fuzz");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("in{n}.{format}"));
        if std::fs::write(&file, &data).is_err() {
            return ("cannot write".to_string(), "skipped".to_string());
        }
        let table = format!("fz_f{n}");
        let with_format = if chance(rng, 0.5) {
            format!(" FORMAT {format}")
        } else {
            String::new()
        };
        let mut outcome = vec![self.sql(&format!(
            "CREATE TABLE {table} FROM files 'fuzz/in{n}.{format}'{with_format}"
        ))];
        if damage_after {
            let mut changed = data.clone();
            damage(rng, &mut changed);
            let _ = std::fs::write(&file, &changed);
        }
        for query in [
            format!("SELECT * FROM {table}"),
            format!("SELECT count(*), max(c0), min(c0) FROM {table}"),
            format!("SELECT c0, count(*) FROM {table} GROUP BY c0 ORDER BY 2 DESC LIMIT 3"),
        ] {
            outcome.push(self.sql(&query));
        }
        outcome.push(self.sql(&format!("DROP TABLE {table}")));
        let _ = std::fs::remove_file(&file);
        let input = format!(
            "{format} file of {} rows x {} columns, damaged {} ({} bytes)",
            batch.num_rows(),
            batch.num_columns(),
            if damage_before {
                "before CREATE TABLE"
            } else if damage_after {
                "after CREATE TABLE"
            } else {
                "never"
            },
            data.len()
        );
        (input, outcome.join(" / "))
    }

    /// A Delta table with a damaged log or data file.
    fn delta(&mut self, rng: &mut Rng, n: usize) -> (String, String) {
        let table = format!("fz_d{n}");
        let mut outcome = vec![self.sql(&format!(
            "CREATE TABLE mart.{table} AS SELECT value AS id, value % 5 AS k FROM range({})",
            rng.random_range(0..500)
        ))];
        if chance(rng, 0.5) {
            outcome.push(self.sql(&format!(
                "INSERT INTO mart.{table} VALUES (1000, 1), (1001, 2)"
            )));
        }
        let folder = self.warehouse.join(&table);
        let log = folder.join("_delta_log");
        let pick_file = |rng: &mut Rng, dir: &Path, suffix: &str| -> Option<PathBuf> {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect();
            files.sort();
            (!files.is_empty()).then(|| pick(rng, &files).clone())
        };
        let what = match rng.random_range(0..6) {
            0 | 1 => match pick_file(rng, &log, ".json") {
                Some(file) => {
                    let mut data = std::fs::read(&file).unwrap_or_default();
                    damage(rng, &mut data);
                    let _ = std::fs::write(&file, data);
                    "damaged a log entry"
                }
                None => "no log entry",
            },
            2 => match pick_file(rng, &log, ".json") {
                Some(file) => {
                    let _ = std::fs::remove_file(file);
                    "deleted a log entry"
                }
                None => "no log entry",
            },
            3 => {
                let junk = if chance(rng, 0.5) {
                    bytes(rng)
                } else {
                    format!(
                        "{{\"add\":{{\"path\":\"{}\",\"size\":-1,\"dataChange\":true}}}}\n",
                        text(rng).replace('"', "")
                    )
                    .into_bytes()
                };
                let _ = std::fs::write(
                    log.join(format!("{:020}.json", rng.random_range(0..5))),
                    junk,
                );
                "wrote a bogus log entry"
            }
            4 => match pick_file(rng, &folder, ".parquet") {
                Some(file) => {
                    let mut data = std::fs::read(&file).unwrap_or_default();
                    damage(rng, &mut data);
                    let _ = std::fs::write(&file, data);
                    "damaged a data file"
                }
                None => "no data file",
            },
            _ => match pick_file(rng, &folder, ".parquet") {
                Some(file) => {
                    let _ = std::fs::remove_file(file);
                    "deleted a data file"
                }
                None => "no data file",
            },
        };
        for sql in [
            format!("SELECT count(*), sum(id) FROM mart.{table}"),
            format!("SELECT k, count(*) FROM mart.{table} GROUP BY k"),
            format!("INSERT INTO mart.{table} VALUES (2000, 3)"),
            format!("DESCRIBE HISTORY mart.{table}"),
            format!("OPTIMIZE TABLE mart.{table}"),
        ] {
            if chance(rng, 0.7) {
                outcome.push(self.sql(&sql));
            }
        }
        outcome.push(self.sql(&format!("DROP TABLE mart.{table}")));
        (
            format!("Delta table mart.{table}: {what}"),
            outcome.join(" / "),
        )
    }
}

impl Target for FilesTarget {
    fn name(&self) -> &'static str {
        "files"
    }

    fn one(&mut self, rng: &mut Rng) -> Sent {
        self.made += 1;
        let n = self.made;
        let (input, outcome) = if chance(rng, 0.3) {
            self.delta(rng, n)
        } else {
            self.flat_file(rng, n)
        };
        Sent { input, outcome }
    }
}
