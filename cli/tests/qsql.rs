//! qsql against a real `quarry up`: batch mode, scripts, errors and the prompt.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn qsql() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qsql"))
}

/// The `quarry` binary from the same build (the workspace test run builds it).
fn quarry() -> PathBuf {
    qsql().with_file_name("quarry")
}

struct Quarry {
    child: Child,
    port: String,
    _dir: tempfile::TempDir,
}

impl Drop for Quarry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_quarry() -> Quarry {
    start_quarry_with(&[])
}

/// `quarry up` with `extra` flags; its Flight SQL port comes from its ready file.
fn start_quarry_with(extra: &[&str]) -> Quarry {
    assert!(
        quarry().exists(),
        "{} is missing: build the workspace (cargo build) before running qsql's tests",
        quarry().display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready.json");
    let log = dir.path().join("quarry.log");
    let child = Command::new(quarry())
        .args([
            "up",
            "--flight",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "127.0.0.1:0",
            "--demo-rows",
            "5000",
            "--dir",
        ])
        .arg(dir.path().join("quarry"))
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("quarry starts");
    // From here on, Drop stops the process whatever happens.
    let mut quarry = Quarry {
        child,
        port: String::new(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while quarry.port.is_empty() {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let flight = text
                .split("\"flight\": \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("the ready file names the Flight SQL address");
            quarry.port = flight.rsplit(':').next().expect("port").to_string();
        }
        let exited = quarry.child.try_wait().ok().flatten();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "quarry did not become ready ({exited:?}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    quarry
}

fn run(quarry: &Quarry, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_on(&quarry.port, args, stdin)
}

fn run_on(port: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(qsql())
        .args(["-p", port])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qsql starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let output = child.wait_with_output().expect("qsql finishes");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn qsql_batch_script_errors_and_prompt() {
    let quarry = start_quarry();

    // -c: an aligned table with a row count
    let (code, out, err) = run(
        &quarry,
        &[
            "-c",
            "SELECT city, count(*) AS orders FROM demo.orders GROUP BY city ORDER BY orders DESC LIMIT 2",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("city") && lines[0].contains("| orders"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("---") && lines[1].contains("-+-"),
        "{out}"
    );
    assert!(lines[2].contains("Mumbai"), "{out}");
    assert!(out.contains("(2 rows)"), "{out}");

    // -f: several statements; USE carries over to the next statement
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "USE demo;\n-- a comment; with a semicolon\nSELECT count(*) AS n FROM orders;\nSELECT 'a;b' AS s;\n",
    )
    .expect("script");
    let (code, out, err) = run(&quarry, &["-f", script.to_str().expect("path")], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5000"), "{out}");
    assert!(out.contains("a;b"), "{out}");

    // errors: message on stderr, exit status 1, and later statements not run
    let (code, out, err) = run(&quarry, &["-c", "SELEC 1; SELECT 2"], None);
    assert_eq!(code, 1);
    assert!(err.contains("ERROR:") && err.contains("Column: 1"), "{err}");
    assert!(!out.contains('2'), "{out}");
    let (code, _, err) = run(&quarry, &["-f", "/no/such/file.sql"], None);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/file.sql"), "{err}");

    // the prompt: statements end at ';', errors do not end the session, \q quits
    let (code, out, err) = run(
        &quarry,
        &[],
        Some("SELECT 40 +\n 2 AS answer;\nSELECT nope;\n\\timing\nSELECT 1 AS one;\n\\q\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("answer") && out.contains("42"), "{out}");
    assert!(err.contains("ERROR:") && err.contains("nope"), "{err}");
    assert!(
        out.contains("Timing is on.") && out.contains("Time:"),
        "{out}"
    );

    // no server: a clear error, and psql's status for it
    let (code, _, err) = run_on("1", &["-h", "127.0.0.1", "-c", "SELECT 1"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
}

/// psql's habits: backslash commands in -c, -f and at the prompt, repeated -c and -f in
/// order, variables, output formats, and psql's exit statuses.
#[test]
fn qsql_backslash_commands_formats_and_exit_codes() {
    let quarry = start_quarry();

    // \dt, \dn and \d name in -c; several -c run in order
    let (code, out, err) = run(
        &quarry,
        &["-c", "\\dt demo.*", "-c", "\\dn", "-c", "\\d demo.orders"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let relations = out.find("List of relations").expect("\\dt title");
    let schemas = out.find("List of schemas").expect("\\dn title");
    let columns = out.find("Table \"demo.orders\"").expect("\\d title");
    assert!(relations < schemas && schemas < columns, "{out}");
    assert!(
        out.lines().any(|l| l.contains("demo ")
            && l.contains("| orders ")
            && l.trim_end().ends_with("| table")),
        "{out}"
    );
    assert!(out.contains("city") && out.contains("revenue"), "{out}");
    let (code, _, err) = run(&quarry, &["-c", "\\d demo.nope"], None);
    assert_eq!(code, 1);
    assert!(err.contains("Did not find any relation named"), "{err}");

    // formats: --csv -t, -A -F, \pset format json, \x; variables from -v and \set
    let count =
        "SELECT city, count(*) AS n FROM demo.orders GROUP BY city ORDER BY n DESC, city LIMIT 2";
    let (code, csv, err) = run(&quarry, &["--csv", "-c", count], None);
    assert_eq!(code, 0, "{err}");
    assert!(csv.starts_with("city,n\nMumbai,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let (_, unaligned, _) = run(&quarry, &["-A", "-t", "-F", ";", "-c", count], None);
    assert!(unaligned.starts_with("Mumbai;"), "{unaligned}");
    assert_eq!(unaligned.lines().count(), 2, "{unaligned}");
    let (code, out, err) = run(
        &quarry,
        &[
            "-v",
            "top=1",
            "-c",
            "\\pset format json",
            "-c",
            "SELECT city, count(*) AS n FROM demo.orders GROUP BY city ORDER BY n DESC LIMIT :top",
            "-c",
            "\\pset format aligned",
            "-c",
            "\\x",
            "-c",
            "\\set who Mumbai",
            "-c",
            "SELECT :'who' AS city, 1 AS one",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let json_start = out.find('[').expect("a JSON array");
    let json_end = json_start + out[json_start..].find("\n]").expect("a JSON array") + 2;
    let rows: serde_json::Value =
        serde_json::from_str(&out[json_start..json_end]).expect("JSON rows");
    assert_eq!(rows[0]["city"], "Mumbai", "{out}");
    assert!(rows[0]["n"].is_number(), "{out}");
    assert!(
        out.contains("-[ RECORD 1 ]") && out.contains("city | Mumbai"),
        "{out}"
    );

    // exit statuses: a failed -c is 1 and the next -c still runs; a script goes on after
    // an error (0) unless ON_ERROR_STOP, which stops it (3); \i runs a file
    let (code, out, _) = run(&quarry, &["-c", "SELEC 1", "-c", "SELECT 7 AS seven"], None);
    assert_eq!(code, 1);
    assert!(out.contains('7'), "{out}");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("errors.sql");
    std::fs::write(&script, "SELECT nope;\nSELECT 8 AS eight;\n").expect("script");
    let script = script.to_str().expect("path");
    let (code, out, err) = run(&quarry, &["-f", script], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('8') && err.contains("nope"), "{out}{err}");
    let (code, out, _) = run(&quarry, &["-v", "ON_ERROR_STOP=1", "-f", script], None);
    assert_eq!(code, 3);
    assert!(!out.contains('8'), "{out}");
    let (code, out, err) = run(&quarry, &[], Some(&format!("\\i {script}\n\\q\n")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('8'), "{out}");

    // \c: a new connection with another default schema and user; a failed one keeps the old
    let (code, out, err) = run(
        &quarry,
        &[
            "-c",
            "\\c demo alice",
            "-c",
            "SELECT count(*) AS n FROM orders",
            "-c",
            "\\c - - 127.0.0.1 1",
            "-c",
            "\\conninfo",
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("now connected") && out.contains("5000"),
        "{out}"
    );
    assert!(err.contains("cannot connect"), "{err}");
    assert!(out.contains("as user \"alice\""), "{out}");

    // \e: the last statement, changed in $EDITOR, runs again
    let mut child = Command::new(qsql())
        .args(["-p", &quarry.port])
        .env("EDITOR", "sed -i s/41/42/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qsql starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"SELECT 41 AS edited;\n\\e\n\\q\n")
        .expect("write stdin");
    let output = child.wait_with_output().expect("qsql finishes");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("41") && out.contains("42"), "{out}");

    // \o sends results to a file; \conninfo and \? answer
    let results = dir.path().join("out.txt");
    let (code, out, err) = run(
        &quarry,
        &[
            "-c",
            &format!("\\o {}", results.display()),
            "-c",
            "SELECT 'into the file' AS s",
            "-c",
            "\\o",
            "-c",
            "\\conninfo",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("into the file") && out.contains("connected to Quarry"),
        "{out}"
    );
    let written = std::fs::read_to_string(&results).expect("\\o file");
    assert!(written.contains("into the file"), "{written}");
}

#[test]
fn qsql_over_tls_with_a_login() {
    // The checkout this test runs in (cargo sets it at run time too): the path baked in
    // at build time is another checkout's when a shared build cache found this binary
    // fresh.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let certs = PathBuf::from(manifest_dir).join("../coordinator/tests/tls");
    let cert = |name: &str| certs.join(name).display().to_string();
    let (server, key, ca) = (cert("server.pem"), cert("server-key.pem"), cert("ca.pem"));
    let quarry = start_quarry_with(&[
        "--auth",
        "--admin-password",
        "pw",
        "--tls-cert",
        &server,
        "--tls-key",
        &key,
    ]);
    let login = ["-U", "admin", "--password", "pw"];
    let mut args = vec!["--ca-cert", ca.as_str()];
    args.extend(login);
    args.extend(["-c", "SELECT 40 + 2 AS x"]);
    let (code, out, err) = run(&quarry, &args, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("42"), "{out}");
    // Plaintext against the TLS port fails with an error, and so does a wrong password.
    let mut plain: Vec<&str> = login.to_vec();
    plain.extend(["-c", "SELECT 1"]);
    let (code, _, err) = run(&quarry, &plain, None);
    assert_ne!(code, 0);
    assert!(!err.is_empty());
    let (code, _, err) = run(
        &quarry,
        &[
            "--ca-cert",
            &ca,
            "-U",
            "admin",
            "--password",
            "nope",
            "-c",
            "SELECT 1",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("wrong user name or password"), "{err}");
}

/// The README's reflection example, pasted into qsql: the answer says which reflection
/// gave it and how old its data is, and EXPLAIN REFLECTIONS says why.
#[test]
fn qsql_shows_answers_from_reflections() {
    let quarry = start_quarry();
    let script = "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION daily_city \
        USING DIMENSIONS (date BY DAY, city, product_category) \
        MEASURES (revenue (SUM, COUNT), rating (SUM, COUNT));\n\
        WAIT FOR REFLECTION daily_city TIMEOUT 120;\n\
        SELECT product_category, sum(revenue) AS revenue FROM demo.orders GROUP BY 1 ORDER BY 2 DESC LIMIT 3;\n\
        EXPLAIN REFLECTIONS SELECT city, avg(rating) FROM demo.orders GROUP BY city;\n\
        EXPLAIN REFLECTIONS SELECT city, max(rating) FROM demo.orders GROUP BY city;\n";
    let (code, out, err) = run(&quarry, &[], Some(script));
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(out.contains("can accelerate"), "{out}");
    assert!(
        out.contains("(3 rows; data as of ") && out.contains("from reflection daily_city)"),
        "{out}"
    );
    assert!(out.contains("daily_city | chosen"), "{out}");
    assert!(out.contains("needs the measure rating (MAX)"), "{out}");
}

/// A qsql prompt in a real terminal (tmux), driven by keystrokes.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn start(quarry: &Quarry) -> Terminal {
        let terminal = Terminal::open(quarry, "");
        terminal.wait_for("quarry=>");
        terminal
    }

    /// qsql with `args` in a fresh terminal.
    fn open(quarry: &Quarry, args: &str) -> Terminal {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "tmux is missing: .ci/run installs it"
        );
        let socket = format!("qsql-test-{}", std::process::id());
        // The pager the test expects, whatever the environment sets.
        let command = format!(
            "env PAGER='less -S' LESS= {} -p {} {args}",
            qsql().display(),
            quarry.port
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "qsql",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg(command)
            .status()
            .expect("tmux runs");
        assert!(status.success());
        Terminal { socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "qsql"];
        args.extend(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// The text (literally) as typed.
    fn type_text(&self, text: &str) {
        // tmux reads an argument ending in `;` as the end of its command unless escaped.
        let escaped = match text.strip_suffix(';') {
            Some(head) => format!("{head}\\;"),
            None => text.to_string(),
        };
        assert!(
            self.tmux(&["send-keys", "-t", "qsql", "-l", &escaped])
                .status
                .success()
        );
    }

    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "qsql", "-S", "-200"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {needle:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&self) -> bool {
        self.tmux(&["has-session", "-t", "qsql"]).status.success()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// At a terminal: Tab completes a table after FROM, Ctrl-C cancels a slow query (on the
/// server too) and the prompt comes back, a tall result goes through the pager, and two
/// Ctrl-C at an empty prompt quit.
#[test]
fn qsql_at_a_terminal_completes_and_cancels() {
    let quarry = start_quarry();
    let terminal = Terminal::start(&quarry);

    terminal.type_text("SELECT count(*) AS n FROM de");
    terminal.keys(&["Tab"]);
    terminal.wait_for("FROM demo.");
    terminal.type_text("or");
    terminal.keys(&["Tab"]);
    terminal.wait_for("FROM demo.orders");
    terminal.type_text(";");
    terminal.keys(&["Enter"]);
    let screen = terminal.wait_for("(1 row)");
    assert!(screen.contains("5000"), "{screen}");

    // A filter over three sides: no statistic answers it, so it runs for a long time.
    terminal.type_text(
        "SELECT count(*) FROM demo.orders a, demo.orders b, demo.orders c \
         WHERE a.revenue + b.revenue + c.revenue < 0;",
    );
    terminal.keys(&["Enter"]);
    // After a second it shows how far it is.
    let screen = terminal.wait_for(" rows  ");
    assert!(
        screen.contains("RUNNING") && screen.contains("rows"),
        "no progress line:\n{screen}"
    );
    terminal.keys(&["C-c"]);
    terminal.wait_for("canceling statement due to user request");
    terminal.type_text("SELECT 40 + 2 AS answer;");
    terminal.keys(&["Enter"]);
    let screen = terminal.wait_for("42");
    assert!(screen.contains("answer"), "{screen}");

    // The server cancelled the job, not just the client.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = run(
            &quarry,
            &[
                "-A",
                "-t",
                "-c",
                "SELECT state FROM sys.jobs WHERE sql LIKE '%demo.orders c%' AND sql NOT LIKE '%sys.jobs%'",
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        if out.trim() == "CANCELED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not cancelled: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A result taller than the terminal goes through the pager (less); q comes back.
    terminal.type_text("SELECT order_id FROM demo.orders ORDER BY order_id LIMIT 200;");
    terminal.keys(&["Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !terminal.screen().lines().any(|l| l.trim_end() == ":") {
        assert!(
            Instant::now() < deadline,
            "no pager:\n{}",
            terminal.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    terminal.keys(&["q"]);
    terminal.type_text("SELECT 'back' AS b;");
    terminal.keys(&["Enter"]);
    terminal.wait_for(" back");

    terminal.keys(&["C-c"]);
    terminal.keys(&["C-c"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while terminal.running() {
        assert!(
            Instant::now() < deadline,
            "two Ctrl-C did not quit:\n{}",
            terminal.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server that wants a password nobody gave: qsql asks for it without echoing it.
#[test]
fn qsql_asks_for_a_password_at_a_terminal() {
    let quarry = start_quarry_with(&["--auth", "--admin-password", "s3cret"]);
    let terminal = Terminal::open(&quarry, "-U admin");
    terminal.wait_for("Password for user admin:");
    terminal.type_text("s3cret");
    terminal.keys(&["Enter"]);
    terminal.wait_for("quarry=>");
    terminal.type_text("SELECT 6 * 7 AS answer;");
    terminal.keys(&["Enter"]);
    let screen = terminal.wait_for("(1 row)");
    assert!(screen.contains("42"), "{screen}");
    assert!(
        !screen.contains("s3cret"),
        "the password was echoed:\n{screen}"
    );
}

/// A result far larger than qsql may hold prints as it arrives: 10 million rows (about
/// 160 MB of text) go through a qsql whose memory stays small.
#[test]
fn qsql_streams_a_result_larger_than_it_holds() {
    let quarry = start_quarry();
    let mut child = Command::new(qsql())
        .args(["-p", &quarry.port, "-A", "-t", "-c"])
        .arg("SELECT value, value * 2 AS twice, 'row-' || CAST(value AS VARCHAR) AS label FROM generate_series(1, 10000000)")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qsql starts");
    let pid = child.id();
    let peak_kib = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let mut peak = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        bytes += line.len() as u64 + 1;
        lines += 1;
        if lines.is_multiple_of(1_000_000) {
            peak = peak.max(peak_kib());
        }
    }
    let status = child.wait().expect("qsql finishes");
    assert!(status.success());
    assert_eq!(lines, 10_000_000);
    println!(
        "{} MB printed; qsql's peak RSS {} MiB",
        bytes / 1_000_000,
        peak / 1024
    );
    assert!(
        peak < 128 * 1024 && peak * 1024 < bytes / 2,
        "qsql held {peak} KiB for {bytes} bytes of output"
    );
}
