//! qsql: a psql-like terminal client for Quarry, speaking Arrow Flight SQL.
//!
//! ```text
//! qsql [-h HOST] [-p PORT] [-U USER] [-d SCHEMA] [-c SQL]... [-f FILE]... [-v NAME=VALUE]
//!      [--csv | -A] [-t] [-F SEP] [-o FILE] [-X]
//! ```
//! Without `-c` or `-f` it opens an interactive prompt with history (`\q` quits, `\?`
//! helps). Backslash commands (`meta.rs`) work in `-c`, in `-f` scripts and at the prompt.
//! Exit status as psql's: 0 done, 1 a failed `-c` or qsql's own error (a missing file), 2
//! no connection, 3 an error in a script with `ON_ERROR_STOP` set.

mod client;
mod complete;
mod meta;
mod output;
mod pager;
mod progress;
mod script;
mod settings;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser};
use rustyline::error::ReadlineError;

use client::{Connection, Tls};
use meta::Flow;
use settings::{Format, Settings};

#[derive(Parser)]
#[command(
    name = "qsql",
    version,
    about = "qsql: a terminal client for Quarry (Arrow Flight SQL)",
    disable_help_flag = true
)]
struct Args {
    /// Coordinator host.
    #[arg(short = 'h', long, env = "QUARRY_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Flight SQL port.
    #[arg(short = 'p', long, env = "QUARRY_PORT", default_value_t = 32010)]
    port: u16,
    /// User name (needed when the server requires logins).
    #[arg(short = 'U', long, env = "QUARRY_USER")]
    user: Option<String>,
    /// Password; also read from QUARRY_PASSWORD.
    #[arg(long, env = "QUARRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Ask for the password.
    #[arg(short = 'W', long = "password-prompt")]
    password_prompt: bool,
    /// The schema unqualified names resolve against (USE SCHEMA).
    #[arg(short = 'd', long = "dbname")]
    schema: Option<String>,
    /// Connect over TLS (the server was started with --tls-cert).
    #[arg(long, env = "QUARRY_TLS")]
    tls: bool,
    /// Trust this CA certificate (PEM) instead of the system's; implies --tls.
    #[arg(long, env = "QUARRY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Run this SQL or backslash command, then exit; may be given several times.
    #[arg(short = 'c', long, action = clap::ArgAction::Append)]
    command: Vec<String>,
    /// Run the statements in this file, then exit; may be given several times.
    #[arg(short = 'f', long, action = clap::ArgAction::Append)]
    file: Vec<PathBuf>,
    /// Set a variable (NAME=VALUE), as \set does.
    #[arg(short = 'v', long = "set", action = clap::ArgAction::Append)]
    variable: Vec<String>,
    /// CSV output.
    #[arg(long)]
    csv: bool,
    /// Unaligned output.
    #[arg(short = 'A', long = "no-align")]
    unaligned: bool,
    /// Rows only: no header and no row count.
    #[arg(short = 't', long = "tuples-only")]
    tuples_only: bool,
    /// The field separator of unaligned output.
    #[arg(short = 'F', long = "field-separator")]
    field_separator: Option<String>,
    /// Send results to this file.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Read no startup file (qsql reads none; accepted as psql's).
    #[arg(short = 'X', long = "no-psqlrc")]
    no_rc: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// How a script ended.
enum Ended {
    Done,
    /// A statement failed and the script went on (or it was one `-c`).
    Failed,
    /// `ON_ERROR_STOP`: stopped at an error.
    Stopped,
    Quit,
}

/// Run SQL text: statements and backslash lines in order. `one_command` is a `-c`
/// string, which stops at its first error as psql's does.
async fn run_script(
    connection: &mut Connection,
    settings: &mut Settings,
    text: &str,
    one_command: bool,
) -> Ended {
    let mut failed = false;
    for piece in script::pieces(text) {
        let outcome = match piece {
            script::Piece::Meta(line) => match meta::run(&line, connection, settings).await {
                Ok(Flow::Continue) => Ok(()),
                Ok(Flow::Quit) => return Ended::Quit,
                Ok(Flow::Include(text)) => {
                    match Box::pin(run_script(connection, settings, &text, false)).await {
                        Ended::Done => Ok(()),
                        Ended::Failed => {
                            failed = true;
                            Ok(())
                        }
                        stop @ (Ended::Stopped | Ended::Quit) => return stop,
                    }
                }
                Err(e) => Err(e),
            },
            script::Piece::Sql(sql) => run_statement(connection, settings, &sql).await,
        };
        if let Err(e) = outcome {
            eprintln!("ERROR:  {e}");
            if settings.on_error_stop() {
                return Ended::Stopped;
            }
            failed = true;
            if one_command {
                break;
            }
        }
    }
    if failed { Ended::Failed } else { Ended::Done }
}

async fn run_statement(
    connection: &mut Connection,
    settings: &mut Settings,
    sql: &str,
) -> Result<(), String> {
    let started = Instant::now();
    settings.last_statement = format!("{sql};");
    let sql = settings.interpolate(sql);
    // Rows print as they arrive (aligned ones in blocks, see output::Printer).
    let mut printer = output::Printer::new(settings);
    let mut accelerated = None;
    connection
        .query_streaming(&sql, settings.progress, &mut |part| match part {
            client::Part::Start(schema, note) => {
                accelerated = note;
                let text = printer.start(&schema);
                settings.print(&text);
            }
            client::Part::Batch(batch) => {
                let text = printer.batch(batch, settings);
                settings.print(&text);
            }
        })
        .await?;
    let (text, pageable) = printer.finish(settings, accelerated.as_deref());
    let pageable = pageable && settings.pager && settings.output.is_none();
    if !(pageable && pager::page(&text)) {
        settings.print(&text);
    }
    if settings.timing {
        println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// Does this statement change what completion offers?
fn changes_catalog(sql: &str) -> bool {
    let first = sql.split_whitespace().next().unwrap_or_default();
    ["CREATE", "DROP", "ALTER"]
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w))
}

async fn interactive(connection: &mut Connection, settings: &mut Settings) -> ExitCode {
    let mut editor = match rustyline::Editor::<
        complete::QsqlHelper,
        rustyline::history::DefaultHistory,
    >::new()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("qsql: cannot start the line editor: {e}");
            return ExitCode::from(1);
        }
    };
    let words = complete::CatalogWords::load(connection).await;
    editor.set_helper(Some(complete::QsqlHelper { words }));
    // Statements at the prompt show how far they are, where someone can see it.
    settings.progress = std::io::stderr().is_terminal();
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".qsql_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!(
        "qsql {} — connected to {}. Type \\? for help.",
        env!("CARGO_PKG_VERSION"),
        connection.address
    );
    let mut buffer = String::new();
    let mut interrupted = false;
    loop {
        let prompt = if buffer.is_empty() {
            "quarry=> "
        } else {
            "quarry-> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C drops the statement being typed; a second one at an empty prompt quits.
            Err(ReadlineError::Interrupted) => {
                if buffer.is_empty() && interrupted {
                    break;
                }
                interrupted = buffer.is_empty();
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("qsql: {e}");
                break;
            }
        };
        interrupted = false;
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            if let Ended::Quit = run_script(connection, settings, trimmed, false).await {
                break;
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !script::is_complete(&buffer) {
            continue;
        }
        let _ = editor.add_history_entry(buffer.trim());
        let ended = run_script(connection, settings, &buffer, false).await;
        if changes_catalog(buffer.trim_start()) {
            let words = complete::CatalogWords::load(connection).await;
            editor.set_helper(Some(complete::QsqlHelper { words }));
        }
        buffer.clear();
        if let Ended::Quit = ended {
            break;
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}

/// `-c` and `-f` in the order they were given.
fn scripts(matches: &clap::ArgMatches, args: &Args) -> Vec<(usize, Script)> {
    let mut scripts: Vec<(usize, Script)> = Vec::new();
    if let Some(indices) = matches.indices_of("command") {
        scripts.extend(
            indices
                .zip(&args.command)
                .map(|(i, c)| (i, Script::Command(c.clone()))),
        );
    }
    if let Some(indices) = matches.indices_of("file") {
        scripts.extend(
            indices
                .zip(&args.file)
                .map(|(i, f)| (i, Script::File(f.clone()))),
        );
    }
    scripts.sort_by_key(|(i, _)| *i);
    scripts
}

enum Script {
    Command(String),
    File(PathBuf),
}

fn settings_of(args: &Args) -> Result<Settings, String> {
    let mut settings = Settings::default();
    if args.csv {
        settings.format = Format::Csv;
    } else if args.unaligned {
        settings.format = Format::Unaligned;
    }
    settings.tuples_only = args.tuples_only;
    if let Some(sep) = &args.field_separator {
        settings.field_separator = sep.clone();
    }
    for assignment in &args.variable {
        let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
        settings
            .variables
            .insert(name.to_string(), value.to_string());
    }
    if let Some(path) = &args.output {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        settings.output = Some(Box::new(std::io::BufWriter::new(file)));
    }
    Ok(settings)
}

fn main() -> ExitCode {
    // rustls chooses a crypto provider itself only when one is compiled in; a workspace
    // build may bring two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = Args::command().get_matches();
    let mut args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let _ = args.no_rc;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qsql: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let mut settings = match settings_of(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qsql: {e}");
            return ExitCode::from(1);
        }
    };
    if args.password_prompt && args.password.is_none() {
        match rpassword::prompt_password("Password: ") {
            Ok(password) => args.password = Some(password),
            Err(e) => {
                eprintln!("qsql: no password: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let scripts = scripts(&matches, &args);
    runtime.block_on(async move {
        let tls = (args.tls || args.ca_cert.is_some()).then(|| Tls {
            ca_cert: args.ca_cert.clone(),
        });
        let target = client::Target {
            host: args.host.clone(),
            port: args.port,
            user: args.user.clone(),
            password: args.password.clone(),
            tls,
        };
        let opened = match Connection::open(target.clone()).await {
            // A server that wants a password nobody gave: ask for it at a terminal, as
            // psql does.
            Err(e)
                if target.password.is_none()
                    && !e.starts_with("cannot connect")
                    && std::io::stdin().is_terminal() =>
            {
                let user = target.user.clone().unwrap_or_default();
                match rpassword::prompt_password(format!("Password for user {user}: ")) {
                    Ok(password) => {
                        Connection::open(client::Target {
                            password: Some(password),
                            ..target
                        })
                        .await
                    }
                    Err(_) => Err(e),
                }
            }
            other => other,
        };
        let mut connection = match opened {
            Ok(c) => c,
            Err(e) => {
                eprintln!("qsql: cannot connect to {}:{}: {e}", args.host, args.port);
                return ExitCode::from(2);
            }
        };
        if let Some(schema) = &args.schema
            && let Err(e) = connection
                .query(&format!("USE \"{}\"", schema.replace('"', "\"\"")))
                .await
        {
            eprintln!("qsql: cannot use schema {schema}: {e}");
            return ExitCode::from(2);
        }
        if scripts.is_empty() {
            return interactive(&mut connection, &mut settings).await;
        }
        let mut status = 0u8;
        for (_, script) in scripts {
            let ended = match script {
                Script::Command(text) => {
                    match run_script(&mut connection, &mut settings, &text, true).await {
                        Ended::Failed => {
                            status = 1;
                            Ended::Done
                        }
                        other => other,
                    }
                }
                Script::File(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => run_script(&mut connection, &mut settings, &text, false).await,
                    Err(e) => {
                        eprintln!("qsql: {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                },
            };
            match ended {
                Ended::Stopped => return ExitCode::from(3),
                Ended::Quit => break,
                Ended::Done | Ended::Failed => {}
            }
        }
        ExitCode::from(status)
    })
}
