//! `--config quarry.toml` (or `QUARRY_CONFIG`): every flag of a command as a key of a TOML
//! file, with the precedence flag > environment > file > default.
//!
//! The file is not a second schema: its keys are the command's own flags (`max-running-queries`
//! or `max_running_queries`), checked and parsed by the same clap definitions. A key is
//! applied by adding it to the command line only when clap says neither a flag nor an
//! environment variable set it, so clap's own precedence does the rest.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command};
use quarry_common::QuarryError;
use toml_edit::{Document, Item, Value};

/// Settings whose values `quarry config --print` never shows.
const SECRETS: [&str; 3] = ["cluster_secret", "admin_password", "metrics_token"];

/// Why a command line with its config file could not be read.
#[derive(Debug)]
pub enum ConfigError {
    /// The command line itself (clap prints it, with usage).
    Usage(clap::Error),
    /// The config file: unreadable, not TOML, an unknown key or a wrong value.
    File(String),
}

impl ConfigError {
    /// Print the error as clap would; the process's exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            ConfigError::Usage(e) => {
                let _ = e.print();
                ExitCode::from(if e.use_stderr() { 2 } else { 0 })
            }
            ConfigError::File(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
        }
    }
}

/// `quarry config`.
#[derive(Args)]
pub struct ConfigArgs {
    /// Print the effective settings as a config file, each with where it came from.
    #[arg(long)]
    print: bool,
    /// The command and its flags, as they would be run (`coordinator --config quarry.toml`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

/// `quarry config --print COMMAND [FLAGS]`: what that command of `cli` would run with.
pub fn print_config(cli: Command, args: ConfigArgs) -> Result<(), QuarryError> {
    if !args.print {
        return Err(QuarryError::invalid(
            "say what to do: `quarry config --print coordinator --config quarry.toml`",
        ));
    }
    let mut line: Vec<OsString> = vec!["quarry".into()];
    if args.command.is_empty() {
        line.push("coordinator".into());
    }
    line.extend(args.command);
    let parsed = parse(cli.clone(), line).map_err(|e| match e {
        ConfigError::Usage(e) => QuarryError::invalid(e.to_string()),
        ConfigError::File(message) => QuarryError::invalid(message),
    })?;
    print!("{}", print(cli, &parsed));
    Ok(())
}

/// The command line's matches with the config file applied, and the ids the file set.
pub struct Parsed {
    pub matches: ArgMatches,
    pub from_file: BTreeSet<String>,
}

/// Parse `args` with `command`, filling in what the subcommand's `--config` file sets.
pub fn parse(command: Command, args: Vec<OsString>) -> Result<Parsed, ConfigError> {
    let mut command = command;
    command.build();
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(ConfigError::Usage)?;
    // Only a subcommand given --config has a file to read.
    let file = matches.subcommand().and_then(|(name, sub)| {
        let path = sub.try_get_one::<PathBuf>("config").ok().flatten()?.clone();
        Some((command.find_subcommand(name)?, sub, path))
    });
    let Some((subcommand, sub, path)) = file else {
        return Ok(Parsed {
            matches,
            from_file: BTreeSet::new(),
        });
    };
    let settings = read(&path, subcommand)?;
    let mut args = args;
    let mut from_file = BTreeSet::new();
    for setting in settings {
        let set_elsewhere = matches!(
            sub.value_source(&setting.id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if set_elsewhere {
            continue;
        }
        args.extend(setting.args);
        from_file.insert(setting.id);
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(ConfigError::Usage)?;
    Ok(Parsed { matches, from_file })
}

/// Can `arg` be a key of the file? Every flag with a long name but --help, --version and
/// --config itself.
fn is_key(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
        && arg.get_id().as_str() != "config"
}

/// One key of the file, as the command-line arguments it stands for.
struct Setting {
    id: String,
    args: Vec<OsString>,
}

/// Read and check every key of the file against `command`'s flags.
fn read(path: &Path, command: &Command) -> Result<Vec<Setting>, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File(format!("cannot read the config file {shown}: {e}")))?;
    let doc = Document::parse(text.as_str()).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(1);
        ConfigError::File(format!("{shown}:{line}: {}", e.message().trim()))
    })?;
    let mut settings = Vec::new();
    let mut unknown = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let line = doc
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map(|s| line_of(&text, s.start))
            .unwrap_or(1);
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && is_key(a));
        let Some(arg) = arg else {
            unknown.push(format!("{shown}:{line}: unknown key '{key}'"));
            continue;
        };
        let args = setting_args(arg, item)
            .map_err(|why| ConfigError::File(format!("{shown}:{line}: {key}: {why}")))?;
        settings.push(Setting { id, args });
    }
    if !unknown.is_empty() {
        let names: Vec<String> = command
            .get_arguments()
            .filter(|a| is_key(a) && !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        return Err(ConfigError::File(format!(
            "{} (the keys are the command's flags: {})",
            unknown.join("; "),
            names.join(", ")
        )));
    }
    Ok(settings)
}

/// The command-line arguments a key's value stands for, checked by the flag's own parser.
fn setting_args(arg: &Arg, item: &Item) -> Result<Vec<OsString>, String> {
    let long = format!("--{}", arg.get_long().unwrap_or_default());
    let value = match item.as_value() {
        Some(Value::String(s)) => s.value().clone(),
        Some(Value::Integer(i)) => i.value().to_string(),
        Some(Value::Float(f)) => f.value().to_string(),
        Some(Value::Boolean(b)) => b.value().to_string(),
        _ => return Err("expected a string, a number or true/false".to_string()),
    };
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value.as_str() {
            "true" => Ok(vec![long.into()]),
            "false" => Ok(Vec::new()),
            _ => Err(format!("expected true or false, not '{value}'")),
        };
    }
    // The flag's own value parser judges the value, on a command of this flag alone (the
    // real one would also check flags that need each other, which the whole line does).
    let probe = Command::new("config").no_binary_name(true).arg(
        Arg::new(arg.get_id().clone())
            .value_parser(arg.get_value_parser().clone())
            .allow_hyphen_values(true)
            .action(ArgAction::Set),
    );
    probe.try_get_matches_from([value.as_str()]).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    })?;
    Ok(vec![long.into(), value.into()])
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The effective settings of `command`'s subcommand as a config file would write them, each
/// with where its value came from; secrets masked.
pub fn print(command: Command, parsed: &Parsed) -> String {
    let mut command = command;
    command.build();
    let Some((name, sub)) = parsed.matches.subcommand() else {
        return String::new();
    };
    let Some(subcommand) = command.find_subcommand(name) else {
        return String::new();
    };
    let mut out =
        format!("# quarry {name}: effective settings (flag > environment > file > default)\n");
    for arg in subcommand.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            continue;
        };
        if !is_key(arg) || arg.is_hide_set() {
            continue;
        }
        let source = if parsed.from_file.contains(id) {
            "file"
        } else {
            match sub.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::DefaultValue) => "default",
                _ => "not set",
            }
        };
        let raw: Option<Vec<String>> = sub
            .try_get_raw(id)
            .ok()
            .flatten()
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
        let line = match raw {
            None => format!("# {long} ="),
            Some(_) if SECRETS.contains(&id) => format!("{long} = \"********\""),
            Some(values) => {
                let value = values.join(",");
                if matches!(arg.get_action(), ArgAction::SetTrue) {
                    format!("{long} = {value}")
                } else {
                    format!("{long} = {}", Value::from(value))
                }
            }
        };
        out.push_str(&format!("{line:<50} # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, CommandFactory, Parser, Subcommand};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
        #[arg(long, global = true)]
        log: Option<String>,
    }

    #[derive(Subcommand)]
    enum Sub {
        Serve(ServeArgs),
    }

    #[derive(Args)]
    struct ServeArgs {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        port: u16,
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long)]
        auth: bool,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<String>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<String>,
        #[arg(long)]
        admin_password: Option<String>,
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    fn run(file: &tempfile::NamedTempFile, extra: &[&str]) -> Result<Parsed, ConfigError> {
        let mut args: Vec<OsString> = vec!["quarry".into(), "serve".into(), "--config".into()];
        args.push(file.path().into());
        args.extend(extra.iter().map(OsString::from));
        parse(Cli::command(), args)
    }

    fn serve(parsed: &Parsed) -> &ArgMatches {
        parsed.matches.subcommand().expect("serve").1
    }

    fn error(result: Result<Parsed, ConfigError>) -> String {
        match result {
            Err(ConfigError::File(message)) => message,
            Err(ConfigError::Usage(e)) => panic!("a usage error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn the_file_fills_in_what_flags_leave_unset() {
        let file = write(
            "port = 7\nname = \"file\"\nauth = true\ntls-cert = \"c\"\ntls_key = \"k\"\nlog = \"debug\"\n",
        );
        let parsed = run(&file, &["--name", "flag"]).expect("parsed");
        let m = serve(&parsed);
        assert_eq!(m.get_one::<u16>("port"), Some(&7));
        assert_eq!(
            m.get_one::<String>("name").map(String::as_str),
            Some("flag")
        );
        assert_eq!(m.get_one::<bool>("auth"), Some(&true));
        assert_eq!(
            m.get_one::<String>("tls_key").map(String::as_str),
            Some("k")
        );
        assert_eq!(
            m.get_one::<String>("log").map(String::as_str),
            Some("debug")
        );
        assert!(parsed.from_file.contains("port") && !parsed.from_file.contains("name"));
        let printed = print(Cli::command(), &parsed);
        assert!(printed.contains("port = \"7\""), "{printed}");
        assert!(printed.contains("# file"), "{printed}");
        assert!(printed.contains("# flag"), "{printed}");
    }

    #[test]
    fn secrets_are_masked() {
        let file = write("admin-password = \"hunter2\"\n");
        let parsed = run(&file, &[]).expect("parsed");
        let printed = print(Cli::command(), &parsed);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("admin-password = \"********\""),
            "{printed}"
        );
    }

    #[test]
    fn a_bad_file_names_the_file_the_line_and_the_key() {
        let file = write("port = 7\n\nnmae = \"x\"\n");
        let message = error(run(&file, &[]));
        let shown = file.path().display().to_string();
        assert!(
            message.starts_with(&format!("{shown}:3: unknown key 'nmae'")),
            "{message}"
        );
        assert!(
            message.contains("--name") || message.contains("name"),
            "{message}"
        );

        let file = write("port = \"lots\"\n");
        let message = error(run(&file, &[]));
        assert!(
            message.starts_with(&format!("{}:1: port: ", file.path().display())),
            "{message}"
        );
        assert!(message.contains("lots"), "{message}");

        let file = write("name = \"x\"\nport = [1, 2]\n");
        let message = error(run(&file, &[]));
        assert!(message.contains(":2: port: expected a string"), "{message}");

        let file = write("auth = \"maybe\"\n");
        assert!(error(run(&file, &[])).contains(":1: auth: expected true or false"));

        let file = write("name = \"x\"\nport = = 3\n");
        let message = error(run(&file, &[]));
        assert!(
            message.starts_with(&format!("{}:2: ", file.path().display())),
            "{message}"
        );

        let file = write("config = \"other.toml\"\n");
        assert!(error(run(&file, &[])).contains("unknown key 'config'"));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let mut args: Vec<OsString> = vec!["quarry".into(), "serve".into(), "--config".into()];
        args.push("/nonexistent/quarry.toml".into());
        let message = error(parse(Cli::command(), args));
        assert!(
            message.contains("cannot read the config file /nonexistent/quarry.toml"),
            "{message}"
        );
    }
}
