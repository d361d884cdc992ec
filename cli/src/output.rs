//! Results as psql prints them: aligned (the default), unaligned, CSV, JSON or Markdown,
//! one record per block with `\x`, with or without the header and the row count (`-t`).

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{Cell, CellAlignment, Table};

use crate::client::QueryResult;
use crate::settings::{Expanded, Format, Settings};

/// psql's look: a `-+-` line under the header, `|` between columns, no outer border.
const PSQL_STYLE: &str = "     -+ |          ";

/// Rows wider than this print one record per block under `\x auto`.
const AUTO_EXPAND_WIDTH: usize = 120;

/// A result's cells as text (None for NULL), with its column names and types.
struct Cells {
    names: Vec<String>,
    types: Vec<DataType>,
    rows: Vec<Vec<Option<String>>>,
}

fn cells(result: &QueryResult) -> Cells {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for batch in &result.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, column)| {
                        if column.is_null(row) {
                            return None;
                        }
                        Some(match f {
                            Ok(f) => f.value(row).to_string(),
                            Err(e) => format!("<{e}>"),
                        })
                    })
                    .collect(),
            );
        }
    }
    let fields = result.schema.fields();
    Cells {
        names: fields.iter().map(|f| f.name().clone()).collect(),
        types: fields.iter().map(|f| f.data_type().clone()).collect(),
        rows,
    }
}

/// `result` as `settings` say, with `title` above an aligned table (`\d` listings).
pub fn render(result: &QueryResult, settings: &Settings, title: Option<&str>) -> String {
    let cells = cells(result);
    let footer = footer(cells.rows.len(), result.accelerated.as_deref());
    match settings.format {
        Format::Aligned => {
            let expanded = match settings.expanded {
                Expanded::On => true,
                Expanded::Off => false,
                Expanded::Auto => row_width(&cells) > AUTO_EXPAND_WIDTH,
            };
            let body = if expanded {
                expanded_records(&cells)
            } else {
                aligned(&cells, settings.tuples_only)
            };
            let mut out = String::new();
            if let (Some(title), false) = (title, settings.tuples_only) {
                out.push_str(&format!("{title}\n"));
            }
            out.push_str(&body);
            if !settings.tuples_only {
                out.push_str(&format!("\n{footer}\n"));
            }
            out.push('\n');
            out
        }
        Format::Unaligned => {
            let sep = &settings.field_separator;
            let mut out = String::new();
            if !settings.tuples_only {
                out.push_str(&cells.names.join(sep));
                out.push('\n');
            }
            for row in &cells.rows {
                let values: Vec<&str> = row.iter().map(|c| c.as_deref().unwrap_or("")).collect();
                out.push_str(&values.join(sep));
                out.push('\n');
            }
            if !settings.tuples_only {
                out.push_str(&format!("{footer}\n"));
            }
            out
        }
        Format::Csv => {
            let mut out = String::new();
            if !settings.tuples_only {
                let names: Vec<String> = cells.names.iter().map(|n| csv_field(n)).collect();
                out.push_str(&names.join(","));
                out.push('\n');
            }
            for row in &cells.rows {
                let values: Vec<String> = row
                    .iter()
                    .map(|c| c.as_deref().map(csv_field).unwrap_or_default())
                    .collect();
                out.push_str(&values.join(","));
                out.push('\n');
            }
            out
        }
        Format::Json => json(&cells),
        Format::Markdown => {
            let mut out = String::new();
            let escape = |s: &str| s.replace('|', "\\|").replace('\n', " ");
            out.push_str(&format!(
                "| {} |\n",
                cells
                    .names
                    .iter()
                    .map(|n| escape(n))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            out.push_str(&format!(
                "|{}\n",
                cells
                    .types
                    .iter()
                    .map(|t| if t.is_numeric() { "---:|" } else { "---|" })
                    .collect::<String>()
            ));
            for row in &cells.rows {
                let values: Vec<String> = row
                    .iter()
                    .map(|c| escape(c.as_deref().unwrap_or("")))
                    .collect();
                out.push_str(&format!("| {} |\n", values.join(" | ")));
            }
            out.push('\n');
            out
        }
    }
}

fn footer(rows: usize, accelerated: Option<&str>) -> String {
    let noun = if rows == 1 { "row" } else { "rows" };
    match accelerated {
        Some(note) => format!("({rows} {noun}; {note})"),
        None => format!("({rows} {noun})"),
    }
}

fn row_width(cells: &Cells) -> usize {
    let mut widths: Vec<usize> = cells.names.iter().map(|n| n.chars().count()).collect();
    for row in &cells.rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.as_deref().map_or(0, |c| c.chars().count()));
        }
    }
    widths.iter().map(|w| w + 3).sum()
}

fn aligned(cells: &Cells, tuples_only: bool) -> String {
    let mut table = Table::new();
    table.load_preset(PSQL_STYLE);
    if !tuples_only {
        table.set_header(cells.names.iter().map(Cell::new));
    }
    for row in &cells.rows {
        table.add_row(row.iter().zip(&cells.types).map(|(c, t)| {
            let cell = Cell::new(c.as_deref().unwrap_or(""));
            if t.is_numeric() {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    table.to_string()
}

/// psql's `\x`: `-[ RECORD n ]` and then `name | value` lines.
fn expanded_records(cells: &Cells) -> String {
    let name_width = cells
        .names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, row) in cells.rows.iter().enumerate() {
        out.push(format!(
            "-[ RECORD {} ]{}",
            i + 1,
            "-".repeat(name_width.saturating_sub(8))
        ));
        for (name, value) in cells.names.iter().zip(row) {
            out.push(format!(
                "{name:<name_width$} | {}",
                value.as_deref().unwrap_or("")
            ));
        }
    }
    if out.is_empty() {
        out.push("(0 rows)".to_string());
    }
    out.join("\n")
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// An array of objects keyed by column name; numbers and booleans as JSON's own.
fn json(cells: &Cells) -> String {
    let rows: Vec<serde_json::Value> = cells
        .rows
        .iter()
        .map(|row| {
            let object: serde_json::Map<String, serde_json::Value> = cells
                .names
                .iter()
                .zip(row)
                .zip(&cells.types)
                .map(|((name, value), data_type)| {
                    let value = match value {
                        None => serde_json::Value::Null,
                        Some(text) if data_type.is_numeric() || *data_type == DataType::Boolean => {
                            serde_json::from_str(text)
                                .unwrap_or_else(|_| serde_json::Value::String(text.clone()))
                        }
                        Some(text) => serde_json::Value::String(text.clone()),
                    };
                    (name.clone(), value)
                })
                .collect();
            serde_json::Value::Object(object)
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_string());
    out.push('\n');
    out
}
