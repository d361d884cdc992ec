//! What `\pset`, `\x`, `\timing`, `\set` and `\o` change, and the variables statements
//! may use (`:name`, `:'name'` as a string, `:"name"` as a name), as in psql.

use std::collections::BTreeMap;
use std::io::Write;

/// How results print (`\pset format`, `--csv`, `-A`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Aligned,
    Unaligned,
    Csv,
    Json,
    Markdown,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "aligned" => Format::Aligned,
            "unaligned" => Format::Unaligned,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "markdown" => Format::Markdown,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Aligned => "aligned",
            Format::Unaligned => "unaligned",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Markdown => "markdown",
        }
    }
}

/// One record per block (`\x`): always, never, or when a row is wider than the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expanded {
    Off,
    On,
    Auto,
}

pub struct Settings {
    pub format: Format,
    pub expanded: Expanded,
    /// Rows only: no header, no row count (`-t`, `\t`).
    pub tuples_only: bool,
    /// Between fields in unaligned output (`-F`).
    pub field_separator: String,
    pub timing: bool,
    /// Page aligned results taller than the terminal (`\pset pager`).
    pub pager: bool,
    pub variables: BTreeMap<String, String>,
    /// Where results go (`-o`, `\o`): standard output when None.
    pub output: Option<Box<dyn Write>>,
    /// The last statement run, for `\e`.
    pub last_statement: String,
    /// Draw a progress line on standard error (at the prompt, when it is a terminal).
    pub progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            format: Format::Aligned,
            expanded: Expanded::Off,
            tuples_only: false,
            field_separator: "|".to_string(),
            timing: false,
            pager: true,
            variables: BTreeMap::new(),
            output: None,
            last_statement: String::new(),
            progress: false,
        }
    }
}

impl Settings {
    /// Is `ON_ERROR_STOP` set (to anything but off/false/0)?
    pub fn on_error_stop(&self) -> bool {
        self.variables
            .get("ON_ERROR_STOP")
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "off" | "false" | "0"))
    }

    /// Write results where `\o` points.
    pub fn print(&mut self, text: &str) {
        let written = match &mut self.output {
            Some(out) => out.write_all(text.as_bytes()).and_then(|_| out.flush()),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|_| out.flush())
            }
        };
        if let Err(e) = written {
            eprintln!("qsql: cannot write the results: {e}");
        }
    }

    /// `sql` with `:name`, `:'name'` and `:"name"` replaced by the variables' values;
    /// text inside quotes and unknown names are left as they are.
    pub fn interpolate(&self, sql: &str) -> String {
        if self.variables.is_empty() || !sql.contains(':') {
            return sql.to_string();
        }
        let chars: Vec<char> = sql.chars().collect();
        let mut out = String::with_capacity(sql.len());
        let mut quote: Option<char> = None;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = quote {
                out.push(c);
                if c == q {
                    quote = None;
                }
                i += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = Some(c);
                out.push(c);
                i += 1;
                continue;
            }
            // `::` is a cast, not a variable.
            if c == ':' && chars.get(i + 1) != Some(&':') && (i == 0 || chars[i - 1] != ':') {
                let (wrap, start) = match chars.get(i + 1) {
                    Some('\'') => (Some('\''), i + 2),
                    Some('"') => (Some('"'), i + 2),
                    _ => (None, i + 1),
                };
                let mut end = start;
                while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                let closes = match wrap {
                    Some(w) => chars.get(end) == Some(&w),
                    None => true,
                };
                let name: String = chars[start..end].iter().collect();
                if end > start
                    && closes
                    && let Some(value) = self.variables.get(&name)
                {
                    match wrap {
                        Some('\'') => out.push_str(&format!("'{}'", value.replace('\'', "''"))),
                        Some(_) => out.push_str(&format!("\"{}\"", value.replace('"', "\"\""))),
                        None => out.push_str(value),
                    }
                    i = if wrap.is_some() { end + 1 } else { end };
                    continue;
                }
            }
            out.push(c);
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_interpolated_outside_quotes() {
        let mut settings = Settings::default();
        settings.variables.insert("n".into(), "3".into());
        settings.variables.insert("who".into(), "o'brien".into());
        assert_eq!(
            settings.interpolate("SELECT :n, :'who', :\"who\", ':n', x::int, :missing"),
            "SELECT 3, 'o''brien', \"o'brien\", ':n', x::int, :missing"
        );
        assert!(!settings.on_error_stop());
        settings
            .variables
            .insert("ON_ERROR_STOP".into(), "1".into());
        assert!(settings.on_error_stop());
    }
}
