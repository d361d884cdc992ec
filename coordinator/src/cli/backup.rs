//! `quarry backup` and `quarry restore`: the catalog to a file and back.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use quarry_catalog::{Backup, Keyspace, SledStore};
use quarry_common::QuarryError;

#[derive(Args)]
#[command(group = clap::ArgGroup::new("from").required(true).args(["coordinator", "dir"]))]
pub struct BackupArgs {
    /// A running coordinator's HTTP address (`http://HOST:9047`); it takes the backup
    /// without stopping.
    #[arg(long)]
    coordinator: Option<String>,
    /// A stopped coordinator's `--dir`: its catalog is read directly.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The backup file to write (whole or not at all).
    #[arg(long)]
    to: PathBuf,
    /// Include the job history.
    #[arg(long)]
    jobs: bool,
    /// An admin user, with --password (as for REST).
    #[arg(long, env = "QUARRY_USER", default_value = "admin")]
    user: String,
    /// That user's password.
    #[arg(long, env = "QUARRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A personal access token instead of a password.
    #[arg(long, env = "QUARRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA certificate (PEM) that signed an https coordinator's certificate, when it is
    /// not one the system trusts.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    /// The coordinator's `--dir` to restore into; its catalog goes in `DIR/catalog`.
    #[arg(long)]
    dir: PathBuf,
    /// Replace a catalog that is already there.
    #[arg(long)]
    force: bool,
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> QuarryError {
    QuarryError::invalid(format!("cannot {what} {}: {e}", path.display()))
}

/// What a backup holds, in words.
fn summary(backup: &Backup) -> String {
    let count = |s| backup.count(s);
    format!(
        "{} entries: {} sources, {} schemas, {} tables and views, {} reflections, {} users, {} roles, {} grants, {} tokens, {} jobs",
        backup.entries(),
        count(Keyspace::Sources),
        count(Keyspace::Schemas),
        count(Keyspace::Datasets),
        count(Keyspace::Reflections),
        count(Keyspace::Users),
        count(Keyspace::Roles),
        count(Keyspace::Grants),
        count(Keyspace::Tokens),
        count(Keyspace::Jobs),
    )
}

pub async fn backup(args: BackupArgs) -> Result<(), QuarryError> {
    let started = Instant::now();
    let bytes = match (&args.coordinator, &args.dir) {
        (Some(url), _) => fetch(url, &args).await?,
        (None, Some(dir)) => {
            let catalog = dir.join("catalog");
            let jobs = args.jobs;
            tokio::task::spawn_blocking(move || {
                if !catalog.is_dir() {
                    return Err(QuarryError::invalid(format!(
                        "{} holds no catalog",
                        catalog.display()
                    )));
                }
                let store = SledStore::open(&catalog)
                    .map_err(|e| failed("open the catalog in", &catalog, e))?;
                quarry_catalog::write_backup(&store, jobs)
                    .map_err(|e| QuarryError::invalid(e.to_string()))
            })
            .await
            .map_err(|e| QuarryError::invalid(format!("the backup stopped: {e}")))??
        }
        (None, None) => return Err(QuarryError::invalid("say --coordinator URL or --dir DIR")),
    };
    // What arrived is checked as a restore would check it, before it is written.
    let backup = quarry_catalog::read_backup(&bytes)
        .map_err(|e| QuarryError::invalid(format!("the coordinator sent a bad backup: {e}")))?;
    let to = args.to.clone();
    let size = bytes.len();
    tokio::task::spawn_blocking(move || quarry_catalog::write_backup_file(&to, &bytes))
        .await
        .map_err(|e| QuarryError::invalid(format!("the backup stopped: {e}")))?
        .map_err(|e| failed("write", &args.to, e))?;
    println!(
        "Backed up {} to {} ({size} bytes) in {} ms",
        summary(&backup),
        args.to.display(),
        started.elapsed().as_millis()
    );
    println!(
        "Managed tables' data and reflections' materializations are not in it: they stay in the warehouse and the reflection store."
    );
    Ok(())
}

/// Ask a running coordinator for a backup over its REST API.
async fn fetch(url: &str, args: &BackupArgs) -> Result<Vec<u8>, QuarryError> {
    let mut client = reqwest::Client::builder();
    if let Some(ca) = &args.ca_cert {
        let pem = tokio::fs::read(ca)
            .await
            .map_err(|e| failed("read", ca, e))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| failed("use", ca, e))?;
        client = client.add_root_certificate(cert);
    }
    let client = client
        .build()
        .map_err(|e| QuarryError::invalid(format!("cannot make an HTTP client: {e}")))?;
    let endpoint = format!(
        "{}/api/v1/admin/backup?jobs={}",
        url.trim_end_matches('/'),
        args.jobs
    );
    let mut request = client.get(&endpoint);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    } else if let Some(password) = &args.password {
        request = request.basic_auth(&args.user, Some(password));
    }
    let response = request
        .send()
        .await
        .map_err(|e| QuarryError::invalid(format!("cannot reach {url}: {e}")))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| QuarryError::invalid(format!("the backup from {url} broke off: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(QuarryError::invalid(format!(
            "{url} refused the backup ({status}): {message}"
        )));
    }
    Ok(body.to_vec())
}

pub async fn restore(args: RestoreArgs) -> Result<(), QuarryError> {
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&args.from).map_err(|e| failed("read", &args.from, e))?;
        let backup = quarry_catalog::read_backup(&bytes).map_err(|e| {
            QuarryError::invalid(format!("{}: {e}; nothing was written", args.from.display()))
        })?;
        let catalog = args.dir.join("catalog");
        quarry_catalog::restore_backup(&backup, &catalog, args.force)
            .map_err(|e| QuarryError::invalid(e.to_string()))?;
        println!(
            "Restored {} into {} in {} ms",
            summary(&backup),
            catalog.display(),
            started.elapsed().as_millis()
        );
        println!(
            "Start a coordinator with --dir {} to use it. Managed tables' data was not in the backup: their warehouse must be where it was.",
            args.dir.display()
        );
        Ok(())
    })
    .await
    .map_err(|e| QuarryError::invalid(format!("the restore stopped: {e}")))?
}
