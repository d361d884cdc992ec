//! Results as psql prints them: aligned (the default), unaligned, CSV, JSON or Markdown,
//! one record per block with `\x`, with or without the header and the row count (`-t`).

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
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

fn cells(schema: &Schema, batches: &[RecordBatch]) -> Cells {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for batch in batches {
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
    let fields = schema.fields();
    Cells {
        names: fields.iter().map(|f| f.name().clone()).collect(),
        types: fields.iter().map(|f| f.data_type().clone()).collect(),
        rows,
    }
}

/// `result` as `settings` say, with `title` above an aligned table (`\d` listings).
pub fn render(result: &QueryResult, settings: &Settings, title: Option<&str>) -> String {
    let cells = cells(&result.schema, &result.batches);
    let accelerated = result.accelerated.as_deref();
    if settings.format == Format::Aligned {
        return aligned_block(&cells, settings, title, Some(cells.rows.len()), accelerated);
    }
    let style = Style::of(settings);
    let mut out = style.head(&cells.names, &cells.types);
    out.push_str(&style.rows(&cells, true));
    out.push_str(&style.tail(cells.rows.len(), accelerated));
    out
}

/// An aligned table (or `\x` records), with the row count when `total` is given.
fn aligned_block(
    cells: &Cells,
    settings: &Settings,
    title: Option<&str>,
    total: Option<usize>,
    accelerated: Option<&str>,
) -> String {
    let expanded = match settings.expanded {
        Expanded::On => true,
        Expanded::Off => false,
        Expanded::Auto => row_width(cells) > AUTO_EXPAND_WIDTH,
    };
    let body = if expanded {
        expanded_records(cells)
    } else {
        aligned(cells, settings.tuples_only)
    };
    let mut out = String::new();
    if let (Some(title), false) = (title, settings.tuples_only) {
        out.push_str(&format!("{title}\n"));
    }
    out.push_str(&body);
    match total {
        Some(rows) if !settings.tuples_only => {
            out.push_str(&format!("\n{}\n", footer(rows, accelerated)))
        }
        Some(_) => {}
        None => out.push('\n'),
    }
    out.push('\n');
    out
}

/// The formats printed row by row as results arrive.
struct Style {
    format: Format,
    tuples_only: bool,
    separator: String,
}

impl Style {
    fn of(settings: &Settings) -> Style {
        Style {
            format: settings.format,
            tuples_only: settings.tuples_only,
            separator: settings.field_separator.clone(),
        }
    }

    fn head(&self, names: &[String], types: &[DataType]) -> String {
        match self.format {
            Format::Unaligned if !self.tuples_only => format!("{}\n", names.join(&self.separator)),
            Format::Csv if !self.tuples_only => {
                let names: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
                format!("{}\n", names.join(","))
            }
            Format::Markdown => format!(
                "| {} |\n|{}\n",
                names
                    .iter()
                    .map(|n| markdown_cell(n))
                    .collect::<Vec<_>>()
                    .join(" | "),
                types
                    .iter()
                    .map(|t| if t.is_numeric() { "---:|" } else { "---|" })
                    .collect::<String>()
            ),
            Format::Json => "[".to_string(),
            _ => String::new(),
        }
    }

    /// Rows of one batch; `first` says whether none came before.
    fn rows(&self, cells: &Cells, first: bool) -> String {
        let mut out = String::new();
        for (i, row) in cells.rows.iter().enumerate() {
            match self.format {
                Format::Unaligned => {
                    let values: Vec<&str> =
                        row.iter().map(|c| c.as_deref().unwrap_or("")).collect();
                    out.push_str(&values.join(&self.separator));
                    out.push('\n');
                }
                Format::Csv => {
                    let values: Vec<String> = row
                        .iter()
                        .map(|c| c.as_deref().map(csv_field).unwrap_or_default())
                        .collect();
                    out.push_str(&values.join(","));
                    out.push('\n');
                }
                Format::Markdown => {
                    let values: Vec<String> = row
                        .iter()
                        .map(|c| markdown_cell(c.as_deref().unwrap_or("")))
                        .collect();
                    out.push_str(&format!("| {} |\n", values.join(" | ")));
                }
                Format::Json => {
                    if !(first && i == 0) {
                        out.push(',');
                    }
                    out.push('\n');
                    out.push_str(&json_object(cells, row));
                }
                Format::Aligned => {}
            }
        }
        out
    }

    fn tail(&self, rows: usize, accelerated: Option<&str>) -> String {
        match self.format {
            Format::Unaligned if !self.tuples_only => format!("{}\n", footer(rows, accelerated)),
            Format::Markdown => "\n".to_string(),
            Format::Json => "\n]\n".to_string(),
            _ => String::new(),
        }
    }
}

/// Aligned results are held up to this many rows so their columns line up and a pager can
/// show them; beyond it they print in blocks of this many as they arrive (psql's
/// FETCH_COUNT), so a result of any size prints in bounded memory.
const HOLD_ROWS: usize = 50_000;

/// A result printed as its batches arrive.
pub struct Printer {
    style: Style,
    aligned: bool,
    schema: Option<SchemaRef>,
    held: Vec<RecordBatch>,
    held_rows: usize,
    rows: usize,
    /// Aligned blocks were printed already.
    streamed: bool,
}

impl Printer {
    pub fn new(settings: &Settings) -> Printer {
        Printer {
            style: Style::of(settings),
            aligned: settings.format == Format::Aligned,
            schema: None,
            held: Vec::new(),
            held_rows: 0,
            rows: 0,
            streamed: false,
        }
    }

    pub fn start(&mut self, schema: &SchemaRef) -> String {
        self.schema = Some(schema.clone());
        if self.aligned {
            return String::new();
        }
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        self.style.head(&names, &types)
    }

    pub fn batch(&mut self, batch: RecordBatch, settings: &Settings) -> String {
        let Some(schema) = self.schema.clone() else {
            return String::new();
        };
        let first = self.rows == 0;
        self.rows += batch.num_rows();
        if !self.aligned {
            return self.style.rows(&cells(&schema, &[batch]), first);
        }
        self.held_rows += batch.num_rows();
        self.held.push(batch);
        if self.held_rows < HOLD_ROWS {
            return String::new();
        }
        self.streamed = true;
        let block = cells(&schema, &std::mem::take(&mut self.held));
        self.held_rows = 0;
        aligned_block(&block, settings, None, None, None)
    }

    /// The rest of the result and its row count; whether it may go through a pager (an
    /// aligned result printed in one piece).
    pub fn finish(&mut self, settings: &Settings, accelerated: Option<&str>) -> (String, bool) {
        let Some(schema) = self.schema.clone() else {
            return (String::new(), false);
        };
        if !self.aligned {
            return (self.style.tail(self.rows, accelerated), false);
        }
        let block = cells(&schema, &std::mem::take(&mut self.held));
        let text = aligned_block(&block, settings, None, Some(self.rows), accelerated);
        (text, !self.streamed)
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

fn markdown_cell(value: &str) -> String {
    value.replace('|', "\\|").replace('\n', " ")
}

/// A row as a JSON object keyed by column name; numbers and booleans as JSON's own.
fn json_object(cells: &Cells, row: &[Option<String>]) -> String {
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
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::Field;

    use super::*;

    fn batch(schema: &SchemaRef, from: i64, rows: i64) -> RecordBatch {
        let values = Int64Array::from_iter_values(from..from + rows);
        RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).expect("batch")
    }

    /// Rows print as batches arrive: CSV at once, aligned in blocks once past HOLD_ROWS.
    #[test]
    fn rows_print_as_they_arrive() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut settings = Settings {
            format: Format::Csv,
            ..Settings::default()
        };
        let mut csv = Printer::new(&settings);
        assert_eq!(csv.start(&schema), "n\n");
        assert_eq!(csv.batch(batch(&schema, 1, 2), &settings), "1\n2\n");
        assert_eq!(csv.finish(&settings, None), (String::new(), false));

        settings.format = Format::Json;
        let mut json = Printer::new(&settings);
        let mut text = json.start(&schema);
        text.push_str(&json.batch(batch(&schema, 1, 1), &settings));
        text.push_str(&json.batch(batch(&schema, 2, 1), &settings));
        text.push_str(&json.finish(&settings, None).0);
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("one JSON array");
        assert_eq!(parsed[1]["n"], 2);

        settings.format = Format::Aligned;
        let mut aligned = Printer::new(&settings);
        assert_eq!(aligned.start(&schema), "");
        // Held while small, so the columns line up and a pager can take the whole table.
        assert_eq!(aligned.batch(batch(&schema, 0, 10), &settings), "");
        let block = aligned.batch(batch(&schema, 10, HOLD_ROWS as i64), &settings);
        assert!(
            block.contains(" 49999") && !block.contains("rows)"),
            "a block"
        );
        let (tail, pageable) = aligned.finish(&settings, None);
        assert!(!pageable);
        assert!(
            tail.contains(&format!("({} rows)", HOLD_ROWS + 10)),
            "{tail}"
        );

        let mut small = Printer::new(&settings);
        small.start(&schema);
        assert_eq!(small.batch(batch(&schema, 0, 3), &settings), "");
        let (text, pageable) = small.finish(&settings, None);
        assert!(pageable && text.contains("(3 rows)"), "{text}");
    }
}
