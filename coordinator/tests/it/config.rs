//! `--config quarry.toml`: a file with every flag starts a coordinator that runs with it;
//! flags and environment variables beat the file; a broken file stops the start with the
//! file, the line and the key.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{quarry_bin, test_cert, wait_ready};

/// A config file naming every flag of `quarry coordinator`.
fn every_flag(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# Every setting of `quarry coordinator`.
dir = "{d}/data"
flight = "127.0.0.1:0"
http = "127.0.0.1:0"
pg = "127.0.0.1:0"
internal = "127.0.0.1:0"
auth = true
admin-password = "from-the-file"
insecure = false
tls-cert = "{cert}"
tls_key = "{key}"
cluster-secret = "0123456789abcdef0123456789abcdef"
max-running-queries = 3
max-queued-queries = 9
queue-timeout = "2 min"
fetch-timeout = "45s"
ready-file = "{d}/ready.json"
test-sources = false
warehouse = "{d}/warehouse"
reflection-store = "{d}/reflections"
query-memory = "1GB"
results-cache-size = "64MB"
max-sql-length = 100000
max-statements = 50
max-nesting = 90
max-expression-depth = 900
max-expression-nodes = 400000
max-plan-depth = 900
max-relations = 400
max-request-body = "8MB"
max-message-size = "32MB"
max-connections = 100
log = "warn"
"#,
        cert = test_cert("server.pem"),
        key = test_cert("server-key.pem"),
    )
}

fn quarry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(quarry_bin());
    command.args(args).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("quarry runs")
}

/// The value and the source `quarry config --print` shows for `key`.
fn printed(text: &str, key: &str) -> (String, String) {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("{key} in\n{text}"));
    let (setting, source) = line.split_once('#').expect("a source");
    let value = setting.split_once('=').expect("key = value").1.trim();
    (
        value.trim_matches('"').to_string(),
        source.trim().to_string(),
    )
}

#[test]
fn a_file_with_every_flag_starts_a_coordinator_and_flags_and_environment_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("quarry.toml");
    std::fs::write(&config, every_flag(dir.path())).expect("config");
    let config = config.display().to_string();

    // What it would run with: the file, except where a flag or the environment says.
    let env = [("QUARRY_MAX_QUEUED_QUERIES", "7")];
    let out = quarry(
        &[
            "config",
            "--print",
            "coordinator",
            "--config",
            &config,
            "--max-running-queries",
            "5",
        ],
        &env,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (key, value, source) in [
        ("max-running-queries", "5", "flag"),
        ("max-queued-queries", "7", "environment"),
        ("fetch-timeout", "45s", "file"),
        ("max-connections", "100", "file"),
        ("admin-password", "********", "file"),
        ("cluster-secret", "********", "file"),
    ] {
        assert_eq!(printed(&text, key), (value.into(), source.into()), "{key}");
    }
    assert!(!text.contains("from-the-file") && !text.contains("0123456789abcdef"));

    // The same file starts a coordinator: its listeners, ready file, TLS and logins are
    // the file's.
    let mut child = Command::new(quarry_bin())
        .args(["coordinator", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("quarry starts");
    let ready = wait_ready(
        &mut child,
        &dir.path().join("ready.json"),
        Duration::from_secs(60),
    );
    let http = ready["http"].as_str().expect("http").to_string();
    assert!(http.starts_with("https://127.0.0.1:"), "{ready}");
    assert!(
        ready["flight"]
            .as_str()
            .is_some_and(|f| f.starts_with("grpc+tls://"))
    );
    let ca = test_cert("ca.pem");
    let curl = |user: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                &ca,
            ])
            .args(["-u", user, &format!("{http}/api/v1/jobs")])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl("admin:from-the-file"), "200");
    assert_eq!(curl("admin:wrong"), "401");
    assert!(
        dir.path().join("data").is_dir(),
        "the catalog is in the file's dir"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_broken_file_stops_the_start_naming_the_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "http = \"127.0.0.1:0\"\nmax-running-queries = = 3\n",
            ":2:",
            "",
        ),
        (
            "http = \"127.0.0.1:0\"\n\nmax-runing-queries = 3\n",
            ":3:",
            "unknown key 'max-runing-queries'",
        ),
        (
            "max-running-queries = \"many\"\n",
            ":1:",
            "max-running-queries: invalid value 'many'",
        ),
        ("auth = 1\n", ":1:", "auth: expected true or false"),
        (
            "[coordinator]\nhttp = \"x\"\n",
            ":1:",
            "unknown key 'coordinator'",
        ),
    ];
    for (i, (text, line, what)) in cases.into_iter().enumerate() {
        let config = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&config, text).expect("config");
        let ready = dir.path().join(format!("ready-{i}.json"));
        let config = config.display().to_string();
        let out = quarry(
            &[
                "coordinator",
                "--config",
                &config,
                "--dir",
                &dir.path().join("data").display().to_string(),
                "--ready-file",
                &ready.display().to_string(),
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("{config}{line}")),
            "{text}: {stderr}"
        );
        assert!(stderr.contains(what), "{text}: {stderr}");
        assert!(!ready.exists(), "it did not start");
    }
    // QUARRY_CONFIG names the file as --config does.
    let out = quarry(
        &["coordinator"],
        &[("QUARRY_CONFIG", "/nonexistent/quarry.toml")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read the config file /nonexistent/quarry.toml")
    );
}
