//! Results as psql prints them: an aligned table and a row count.

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{Cell, CellAlignment, Table};

use crate::client::QueryResult;

/// psql's look: a `-+-` line under the header, `|` between columns, no outer border.
const PSQL_STYLE: &str = "     -+ |          ";

fn right_aligned(data_type: &DataType) -> bool {
    data_type.is_numeric()
}

pub fn render(result: &QueryResult) -> String {
    let mut table = Table::new();
    table.load_preset(PSQL_STYLE);
    table.set_header(result.schema.fields().iter().map(|f| Cell::new(f.name())));
    let options = FormatOptions::default().with_null("");
    let mut rows = 0usize;
    for batch in &result.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect();
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let cells = formatters.iter().zip(schema.fields()).map(|(f, field)| {
                let text = match f {
                    Ok(f) => f.value(row).to_string(),
                    Err(e) => format!("<{e}>"),
                };
                let cell = Cell::new(text);
                if right_aligned(field.data_type()) {
                    cell.set_alignment(CellAlignment::Right)
                } else {
                    cell
                }
            });
            table.add_row(cells);
            rows += 1;
        }
    }
    let noun = if rows == 1 { "row" } else { "rows" };
    match &result.accelerated {
        Some(note) => format!("{table}\n({rows} {noun}; {note})\n\n"),
        None => format!("{table}\n({rows} {noun})\n\n"),
    }
}
