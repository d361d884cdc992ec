//! psql's backslash commands: describing the catalog (`\d`, `\dt`, `\dv`, `\dn`, `\df`,
//! `\l`, from `information_schema`), output settings (`\x`, `\pset`, `\a`, `\t`, `\o`,
//! `\timing`), variables (`\set`, `\unset`, `\echo`), scripts (`\i`), `\conninfo`, `\?`
//! and `\q`. They work at the prompt, in `-c` and in `-f` scripts.

use std::io::Write;

use crate::client::Connection;
use crate::output;
use crate::settings::{Expanded, Format, Settings};

pub const HELP: &str = "\
General
  \\q                     quit qsql
  \\? | \\h               this help
  \\conninfo              the server and user of this connection
  \\c [SCHEMA [USER [HOST [PORT]]]]
                         connect again (- keeps a part); SCHEMA becomes the default
  \\timing [on|off]       show how long each statement takes
Informational (PATTERN: [schema.]name with * and ? wildcards)
  \\d [PATTERN]           tables and views; with the name of one, its columns
  \\dt [PATTERN]          tables
  \\dv [PATTERN]          views
  \\dn [PATTERN]          schemas
  \\df [PATTERN]          functions
  \\l                     catalogs
Formatting
  \\x [on|off|auto]       one record per block
  \\a                     toggle aligned and unaligned output
  \\t [on|off]            rows only (no header or row count)
  \\pset format FORMAT    aligned, unaligned, csv, json or markdown
  \\pset fieldsep SEP     the separator of unaligned output
  \\pset tuples_only      same as \\t
  \\pset pager [on|off]   page results taller than the terminal ($PAGER, else less -S)
Input and output
  \\i FILE                run the statements in FILE
  \\e [FILE]             edit FILE, or the last statement, in $EDITOR; then run it
  \\o [FILE]              send results to FILE, or back to the screen
  \\echo TEXT             print TEXT
Variables
  \\set [NAME [VALUE]]    set a variable (:NAME, :'NAME', :\"NAME\" in statements), or list them
  \\unset NAME            remove a variable; ON_ERROR_STOP=1 stops scripts at an error
End a statement with ; to run it.";

/// What the line asked of the caller.
pub enum Flow {
    Continue,
    Quit,
    /// Run this script text (`\i`).
    Include(String),
}

/// Run one backslash command line.
pub async fn run(
    line: &str,
    connection: &mut Connection,
    settings: &mut Settings,
) -> Result<Flow, String> {
    let line = line.trim();
    let (command, rest) = match line.split_once(char::is_whitespace) {
        Some((c, r)) => (c, r.trim()),
        None => (line, ""),
    };
    let args: Vec<&str> = rest.split_whitespace().collect();
    match command {
        "\\q" | "\\quit" => return Ok(Flow::Quit),
        "\\?" | "\\h" | "\\help" => println!("{HELP}"),
        "\\c" | "\\connect" => connect(&args, connection).await?,
        "\\conninfo" => println!(
            "You are connected to Quarry at \"{}\" as user \"{}\".",
            connection.address,
            connection.user.as_deref().unwrap_or("(anonymous)")
        ),
        "\\timing" => {
            settings.timing = toggle(settings.timing, args.first().copied())?;
            println!("Timing is {}.", on_off(settings.timing));
        }
        "\\x" => {
            settings.expanded = match args.first().copied() {
                None => match settings.expanded {
                    Expanded::Off => Expanded::On,
                    _ => Expanded::Off,
                },
                Some("on") => Expanded::On,
                Some("off") => Expanded::Off,
                Some("auto") => Expanded::Auto,
                Some(other) => return Err(format!("\\x: unrecognized value \"{other}\"")),
            };
            let state = match settings.expanded {
                Expanded::On => "on",
                Expanded::Off => "off",
                Expanded::Auto => "used automatically",
            };
            println!("Expanded display is {state}.");
        }
        "\\a" => {
            settings.format = match settings.format {
                Format::Aligned => Format::Unaligned,
                _ => Format::Aligned,
            };
            println!("Output format is {}.", settings.format.name());
        }
        "\\t" => {
            settings.tuples_only = toggle(settings.tuples_only, args.first().copied())?;
            println!("Tuples only is {}.", on_off(settings.tuples_only));
        }
        "\\pset" => pset(&args, settings)?,
        "\\echo" => println!("{}", settings.interpolate(rest)),
        "\\set" => match args.as_slice() {
            [] => {
                for (name, value) in &settings.variables {
                    println!("{name} = '{value}'");
                }
            }
            [name, values @ ..] => {
                settings
                    .variables
                    .insert(name.to_string(), values.join(" "));
            }
        },
        "\\unset" => {
            let name = args.first().ok_or("\\unset: missing required argument")?;
            settings.variables.remove(*name);
        }
        "\\i" | "\\include" => {
            let path = args.first().ok_or("\\i: missing required argument")?;
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            return Ok(Flow::Include(text));
        }
        "\\e" | "\\edit" => return edit(args.first().copied(), settings).map(Flow::Include),
        "\\o" | "\\out" => {
            settings.output = match args.first() {
                None => None,
                Some(path) => {
                    let file = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
                    Some(Box::new(std::io::BufWriter::new(file)) as Box<dyn Write>)
                }
            };
        }
        "\\d" | "\\d+" => match args.first() {
            Some(pattern) if !has_wildcard(pattern) => {
                describe(pattern, connection, settings).await?
            }
            pattern => {
                list_relations(None, pattern.copied(), connection, settings).await?;
            }
        },
        "\\dt" | "\\dt+" => {
            list_relations(
                Some("BASE TABLE"),
                args.first().copied(),
                connection,
                settings,
            )
            .await?
        }
        "\\dv" | "\\dv+" => {
            list_relations(Some("VIEW"), args.first().copied(), connection, settings).await?
        }
        "\\dn" | "\\dn+" => {
            let filter = like_filter("schema_name", args.first().copied());
            let sql = format!(
                "SELECT schema_name AS \"Name\" FROM information_schema.schemata \
                 WHERE schema_name <> 'information_schema' {filter} ORDER BY 1"
            );
            listing(&sql, "List of schemas", connection, settings).await?;
        }
        "\\df" | "\\df+" => {
            let filter = like_filter("routine_name", args.first().copied());
            let sql = format!(
                "SELECT DISTINCT routine_name AS \"Name\", routine_type AS \"Type\" \
                 FROM information_schema.routines WHERE true {filter} ORDER BY 1"
            );
            listing(&sql, "List of functions", connection, settings).await?;
        }
        "\\l" | "\\l+" | "\\list" => {
            let sql = "SELECT DISTINCT catalog_name AS \"Name\" FROM information_schema.schemata ORDER BY 1";
            listing(sql, "List of catalogs", connection, settings).await?;
        }
        other => return Err(format!("invalid command {other}; try \\? for help")),
    }
    Ok(Flow::Continue)
}

/// `\e`: FILE, or the last statement in a temporary file, opened in `$EDITOR` (else
/// `vi`); what it holds afterwards is run.
fn edit(file: Option<&str>, settings: &Settings) -> Result<String, String> {
    let temporary = std::env::temp_dir().join(format!("qsql-{}.sql", std::process::id()));
    let path = match file {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            std::fs::write(&temporary, &settings.last_statement)
                .map_err(|e| format!("{}: {e}", temporary.display()))?;
            temporary.clone()
        }
    };
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    // The editor is a command line (`code --wait`, `sed -i ...`), so a shell runs it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("qsql")
        .arg(&path)
        .status()
        .map_err(|e| format!("cannot start the editor {editor}: {e}"))?;
    if !status.success() {
        return Err(format!("the editor {editor} failed ({status})"));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.is_none() {
        let _ = std::fs::remove_file(&temporary);
    }
    Ok(text)
}

/// `\c`: a new connection like this one with the parts given (`-` keeps one), which
/// replaces it when it opens; the schema becomes the default. A failed attempt keeps the
/// old connection, as psql does at its prompt.
async fn connect(args: &[&str], connection: &mut Connection) -> Result<(), String> {
    let given = |i: usize| args.get(i).copied().filter(|a| *a != "-");
    let mut target = connection.target.clone();
    if let Some(user) = given(1) {
        target.user = Some(user.to_string());
    }
    if let Some(host) = given(2) {
        target.host = host.to_string();
    }
    if let Some(port) = given(3) {
        target.port = port
            .parse()
            .map_err(|_| format!("\\c: \"{port}\" is not a port"))?;
    }
    let mut fresh = Connection::open(target).await?;
    if let Some(schema) = given(0) {
        let sql = format!("USE \"{}\"", schema.replace('"', "\"\""));
        fresh.query(&sql).await?;
    }
    *connection = fresh;
    println!(
        "You are now connected to Quarry at \"{}\" as user \"{}\".",
        connection.address,
        connection.user.as_deref().unwrap_or("(anonymous)")
    );
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn toggle(current: bool, value: Option<&str>) -> Result<bool, String> {
    match value {
        None => Ok(!current),
        Some("on" | "true" | "1") => Ok(true),
        Some("off" | "false" | "0") => Ok(false),
        Some(other) => Err(format!("unrecognized value \"{other}\": use on or off")),
    }
}

fn pset(args: &[&str], settings: &mut Settings) -> Result<(), String> {
    match args {
        ["format", name] => {
            settings.format = Format::parse(name)
                .ok_or("\\pset: allowed formats are aligned, unaligned, csv, json, markdown")?;
            println!("Output format is {}.", settings.format.name());
        }
        ["fieldsep", sep] => {
            settings.field_separator = sep.trim_matches('\'').to_string();
            println!("Field separator is \"{}\".", settings.field_separator);
        }
        ["pager", value @ ..] => {
            settings.pager = toggle(settings.pager, value.first().copied())?;
            println!("Pager usage is {}.", on_off(settings.pager));
        }
        ["tuples_only", value @ ..] => {
            settings.tuples_only = toggle(settings.tuples_only, value.first().copied())?;
            println!("Tuples only is {}.", on_off(settings.tuples_only));
        }
        ["expanded" | "x", value @ ..] => {
            settings.expanded = match value.first().copied() {
                Some("auto") => Expanded::Auto,
                Some("on") => Expanded::On,
                Some("off") => Expanded::Off,
                _ if settings.expanded == Expanded::Off => Expanded::On,
                _ => Expanded::Off,
            };
        }
        _ => {
            return Err("\\pset: use format, fieldsep, pager, tuples_only or expanded".to_string());
        }
    }
    Ok(())
}

fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// A string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// psql's pattern (`*`, `?`) as a LIKE on `column`; nothing without a pattern.
fn like_filter(column: &str, pattern: Option<&str>) -> String {
    match pattern {
        None => String::new(),
        Some(p) => {
            let like = p
                .trim_matches('"')
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('*', "%")
                .replace('?', "_");
            format!("AND {column} LIKE {}", literal(&like))
        }
    }
}

/// `schema.name` patterns filter both parts; a bare one filters names.
fn relation_filter(pattern: Option<&str>) -> String {
    match pattern.map(|p| p.split_once('.')) {
        Some(Some((schema, name))) => format!(
            "{} {}",
            like_filter("table_schema", Some(schema)),
            like_filter("table_name", Some(name))
        ),
        Some(None) => like_filter("table_name", pattern),
        None => String::new(),
    }
}

async fn list_relations(
    kind: Option<&str>,
    pattern: Option<&str>,
    connection: &mut Connection,
    settings: &mut Settings,
) -> Result<(), String> {
    let kind_filter = kind.map_or(String::new(), |k| {
        format!("AND table_type = {}", literal(k))
    });
    let sql = format!(
        "SELECT table_schema AS \"Schema\", table_name AS \"Name\", \
         CASE table_type WHEN 'BASE TABLE' THEN 'table' WHEN 'VIEW' THEN 'view' ELSE lower(table_type) END AS \"Type\" \
         FROM information_schema.tables \
         WHERE table_schema NOT IN ('information_schema') {kind_filter} {} ORDER BY 1, 2",
        relation_filter(pattern)
    );
    listing(&sql, "List of relations", connection, settings).await
}

/// `\d name`: the columns of one table or view.
async fn describe(
    name: &str,
    connection: &mut Connection,
    settings: &mut Settings,
) -> Result<(), String> {
    let unquoted = name.replace('"', "");
    let (schema_filter, table) = match unquoted.rsplit_once('.') {
        Some((schema, table)) => (
            format!("AND table_schema = {}", literal(schema)),
            table.to_string(),
        ),
        None => (String::new(), unquoted.clone()),
    };
    let sql = format!(
        "SELECT column_name AS \"Column\", data_type AS \"Type\", \
         CASE is_nullable WHEN 'YES' THEN '' ELSE 'not null' END AS \"Nullable\" \
         FROM information_schema.columns WHERE table_name = {} {schema_filter} \
         ORDER BY table_schema, ordinal_position",
        literal(&table)
    );
    let result = connection.query(&sql).await?;
    if result.batches.iter().all(|b| b.num_rows() == 0) {
        return Err(format!("Did not find any relation named \"{name}\"."));
    }
    let title = format!("Table \"{unquoted}\"");
    let text = output::render(&result, settings, Some(&title));
    settings.print(&text);
    Ok(())
}

async fn listing(
    sql: &str,
    title: &str,
    connection: &mut Connection,
    settings: &mut Settings,
) -> Result<(), String> {
    let result = connection.query(sql).await?;
    let text = output::render(&result, settings, Some(title));
    settings.print(&text);
    Ok(())
}
