//! Small files in every format the tests read, written fresh for each test.
//!
//! ```text
//! root/people.csv, people.json, people_semicolon.csv   8 people
//! root/products.parquet                                 5 products
//! root/sales/year=Y/region=R/part-0.parquet             hive-partitioned sales (+ _SUCCESS)
//! root/events/part-{0..3}.parquet                       20 000 events over 4 files
//! root/bad/corrupt.parquet, root/empty/, root/notes.txt bad input
//! root/link_out.csv -> outside/secret.csv               a symlink leaving the root
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;

const PEOPLE_CSV: &str = "\
id,name,age,city
1,Asha,34,Mumbai
2,Bilal,28,Delhi
3,Chen,,Pune
4,Divya,45,Mumbai
5,Emil,39,Chennai
6,Farah,23,Delhi
7,Gopal,51,Pune
8,Hana,31,Mumbai
";

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut writer = ArrowWriter::try_new(File::create(path)?, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), array.null_count() > 0))
        .collect();
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// Write the fixtures under `dir`; returns (root, outside).
pub fn write(dir: &Path) -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let root = dir.join("root");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir_all(&outside)?;

    std::fs::write(root.join("people.csv"), PEOPLE_CSV)?;
    std::fs::write(
        root.join("people_semicolon.csv"),
        PEOPLE_CSV.replace(',', ";"),
    )?;
    let mut json = String::new();
    for line in PEOPLE_CSV.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let age = if f[2].is_empty() {
            "null".to_string()
        } else {
            f[2].to_string()
        };
        json.push_str(&format!(
            "{{\"id\": {}, \"name\": \"{}\", \"age\": {age}, \"city\": \"{}\"}}\n",
            f[0], f[1], f[3]
        ));
    }
    std::fs::write(root.join("people.json"), json)?;

    write_parquet(
        &root.join("products.parquet"),
        &batch(vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![
                    "kettle", "lamp", "novel", "phone", "shoes",
                ])),
            ),
            (
                "category",
                Arc::new(StringArray::from(vec![
                    "home",
                    "home",
                    "books",
                    "electronics",
                    "fashion",
                ])),
            ),
            (
                "price",
                Arc::new(Float64Array::from(vec![25.0, 40.5, 12.25, 499.0, 80.0])),
            ),
        ])?,
    )?;

    // Sales: (year, region) -> rows of (sale_id, product_id, qty, amount).
    let mut sale_id = 0i64;
    for (year, region, n) in [
        ("2023", "east", 4),
        ("2023", "west", 3),
        ("2024", "east", 5),
    ] {
        let ids: Vec<i64> = (0..n).map(|i| sale_id + i + 1).collect();
        sale_id += n;
        let products: Vec<i64> = ids.iter().map(|i| (i % 5) + 1).collect();
        let qty: Vec<i32> = ids.iter().map(|i| (i % 3) as i32 + 1).collect();
        let amount: Vec<f64> = ids.iter().map(|i| *i as f64 * 10.0).collect();
        let folder = root.join(format!("sales/year={year}/region={region}"));
        write_parquet(
            &folder.join("part-0.parquet"),
            &batch(vec![
                ("sale_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("product_id", Arc::new(Int64Array::from(products))),
                ("qty", Arc::new(Int32Array::from(qty))),
                ("amount", Arc::new(Float64Array::from(amount))),
            ])?,
        )?;
    }
    std::fs::write(root.join("sales/_SUCCESS"), "")?;

    // Events: enough files and rows that both executors get scan work.
    for part in 0..4i64 {
        let ids: Vec<i64> = (0..5000).map(|i| part * 5000 + i).collect();
        let users: Vec<i64> = ids.iter().map(|i| i % 100).collect();
        let kinds: Vec<&str> = ids
            .iter()
            .map(|i| ["view", "click", "buy"][(i % 3) as usize])
            .collect();
        let values: Vec<f64> = ids.iter().map(|i| (i % 7) as f64).collect();
        write_parquet(
            &root.join(format!("events/part-{part}.parquet")),
            &batch(vec![
                ("event_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("user_id", Arc::new(Int64Array::from(users))),
                ("kind", Arc::new(StringArray::from(kinds))),
                ("value", Arc::new(Float64Array::from(values))),
            ])?,
        )?;
    }

    std::fs::create_dir_all(root.join("bad"))?;
    std::fs::write(
        root.join("bad/corrupt.parquet"),
        b"PAR1 this is not really parquet PAR1",
    )?;
    std::fs::create_dir_all(root.join("empty"))?;
    std::fs::write(root.join("notes.txt"), "just some notes\n")?;

    std::fs::write(outside.join("secret.csv"), "secret\nhunter2\n")?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.csv"), root.join("link_out.csv"))?;
    Ok((root.canonicalize()?, outside.canonicalize()?))
}
