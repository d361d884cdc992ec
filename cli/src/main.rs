//! qsql: a psql-like terminal client for Quarry, speaking Arrow Flight SQL.
//!
//! ```text
//! qsql [-h HOST] [-p PORT] [-U USER] [-c SQL] [-f FILE]
//! ```
//! Without `-c` or `-f` it opens an interactive prompt with history (`\q` quits, `\?`
//! helps). Results print as aligned tables; errors go to stderr, and in batch mode the
//! first error stops qsql with exit status 1.

mod client;
mod output;
mod script;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rustyline::error::ReadlineError;

use client::{Connection, Tls};

#[derive(Parser)]
#[command(
    name = "qsql",
    version,
    about = "qsql: a terminal client for Quarry (Arrow Flight SQL)",
    disable_help_flag = true
)]
struct Args {
    /// Coordinator host.
    #[arg(short = 'h', long, env = "QSQL_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Flight SQL port.
    #[arg(short = 'p', long, env = "QSQL_PORT", default_value_t = 32010)]
    port: u16,
    /// User name (needed when the server requires logins).
    #[arg(short = 'U', long, env = "QSQL_USER")]
    user: Option<String>,
    /// Password; also read from QSQL_PASSWORD.
    #[arg(long, env = "QSQL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Connect over TLS (the server was started with --tls-cert).
    #[arg(long, env = "QSQL_TLS")]
    tls: bool,
    /// Trust this CA certificate (PEM) instead of the system's; implies --tls.
    #[arg(long, env = "QSQL_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Run this SQL and exit.
    #[arg(short = 'c', long)]
    command: Option<String>,
    /// Run the SQL statements in this file and exit.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

async fn run_script(connection: &mut Connection, sql: &str) -> Result<(), String> {
    for statement in script::split(sql) {
        let started = Instant::now();
        let result = connection.query(&statement).await?;
        print!("{}", output::render(&result));
        if connection.timing {
            println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(())
}

const HELP: &str = "\
  \\q          quit
  \\timing     toggle timing of statements
  \\?          this help
End a statement with ; to run it.";

async fn interactive(connection: &mut Connection) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("qsql: cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    loop {
        let prompt = if buffer.is_empty() {
            "quarry=> "
        } else {
            "quarry-> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("qsql: {e}");
                break;
            }
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match trimmed.split_whitespace().next().unwrap_or_default() {
                "\\q" => break,
                "\\?" => println!("{HELP}"),
                "\\timing" => {
                    connection.timing = !connection.timing;
                    println!(
                        "Timing is {}.",
                        if connection.timing { "on" } else { "off" }
                    );
                }
                other => eprintln!("invalid command {other}; try \\? for help"),
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
        if let Err(e) = run_script(connection, &buffer).await {
            eprintln!("ERROR:  {e}");
        }
        buffer.clear();
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // rustls chooses a crypto provider itself only when one is compiled in; a workspace
    // build may bring two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qsql: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let tls = (args.tls || args.ca_cert.is_some()).then(|| Tls {
            ca_cert: args.ca_cert.clone(),
        });
        let mut connection = match Connection::open(
            &args.host,
            args.port,
            args.user.as_deref(),
            args.password.as_deref(),
            tls,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("qsql: cannot connect to {}:{}: {e}", args.host, args.port);
                return ExitCode::FAILURE;
            }
        };
        let script = match (&args.command, &args.file) {
            (Some(sql), _) => Some(sql.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) => {
                    eprintln!("qsql: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            },
            (None, None) => None,
        };
        match script {
            Some(sql) => match run_script(&mut connection, &sql).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ERROR:  {e}");
                    ExitCode::FAILURE
                }
            },
            None => interactive(&mut connection).await,
        }
    })
}
