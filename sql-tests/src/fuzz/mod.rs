//! Fuzzing Quarry's doors against real processes, on stable Rust.
//!
//! One target per door: [`sql`] (a grammar-aware generator and mutations of the statements in
//! `slt/`), [`rest`] (methods, paths, headers, bodies), [`flight`] (every Flight SQL command
//! with random fields, broken tickets and descriptors, `DoPut` with broken Arrow IPC, huge
//! metadata), [`pgwire`] (the PostgreSQL protocol: garbage, broken startups, every message
//! type with wrong names, counts and lengths, clients leaving mid-result), [`files`] (truncated and bit-flipped Parquet, CSV, NDJSON and Delta logs read
//! through tables) and [`internal`] (the executor protocol, sent with the cluster secret).
//!
//! A target turns a seeded random stream into inputs, sends each to a running server and
//! names the reply's kind. The driver ([`run`]) watches the server between inputs: a process
//! that exited is a crash, one that does not answer `SELECT 1` is a hang, and at the end jobs,
//! task slots, exchange outputs, spill files and open files must be back where they were.
//! Inputs depend only on the seed, so `quarry-bench --fuzz TARGET --seed N` repeats a run;
//! every finding carries the input that caused it.
//!
//! `cargo fuzz` needs nightly; a driver of our own over `rand_chacha` runs on stable and
//! against whole processes, which is where a stack overflow or an abort shows.

pub mod cluster;
pub mod files;
pub mod flight;
pub mod grammar;
pub mod internal;
pub mod pgwire;
pub mod rest;
pub mod sql;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random stream inputs are drawn from.
pub type Rng = ChaCha8Rng;

/// The longest a single input may take before the driver calls it a hang.
pub const INPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a target sent and what came back.
pub struct Sent {
    /// The input, printable (shortened when large).
    pub input: String,
    /// The kind of reply: `ok`, an error code, `timeout`, ...
    pub outcome: String,
}

/// One door's fuzzer.
pub trait Target {
    fn name(&self) -> &'static str;
    /// Draw one input from `rng`, send it, and name the reply.
    fn one(&mut self, rng: &mut Rng) -> Sent;
}

/// The process(es) under test, as the driver watches them.
pub trait Server {
    /// `Some(why)` once a process has exited.
    fn exited(&mut self) -> Option<String>;
    /// `SELECT 1`, answered correctly and in time.
    fn select_one(&self) -> Result<(), String>;
    /// A baseline of held resources, taken before the run.
    fn baseline(&mut self);
    /// Whether anything is held that the baseline did not hold (jobs, slots, files).
    fn leaks(&self) -> Result<(), String>;
}

/// How long and how much to fuzz.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub time: Duration,
    pub max_inputs: usize,
    /// Check `SELECT 1` after this many inputs (and after the last).
    pub check_every: usize,
}

impl Budget {
    pub fn for_time(time: Duration) -> Self {
        Budget {
            time,
            max_inputs: usize::MAX,
            check_every: 25,
        }
    }
}

/// Something a run found.
#[derive(Debug)]
pub struct Finding {
    /// Index of the input in the seeded stream.
    pub input_index: usize,
    pub input: String,
    pub what: String,
}

/// A target's run.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub inputs: usize,
    pub elapsed: Duration,
    /// Replies by kind.
    pub outcomes: BTreeMap<String, usize>,
    /// The first input of each kind of reply, for reading.
    pub examples: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "fuzz {}: seed {}, {} inputs in {:.1} s, {} finding(s)",
            self.target,
            self.seed,
            self.inputs,
            self.elapsed.as_secs_f64(),
            self.findings.len()
        )?;
        for (outcome, n) in &self.outcomes {
            writeln!(f, "  {n:>6}  {outcome}")?;
            if let Some(example) = self.examples.get(outcome) {
                writeln!(f, "          e.g. {}", excerpt(example, 160))?;
            }
        }
        for finding in &self.findings {
            writeln!(
                f,
                "  FINDING at input {}: {}\n    input: {}",
                finding.input_index, finding.what, finding.input
            )?;
        }
        Ok(())
    }
}

/// The targets, by name.
pub const TARGETS: [&str; 6] = ["sql", "rest", "flight", "pgwire", "files", "internal"];

/// The target called `name`, aimed at `cluster`.
pub fn target(name: &str, c: &cluster::FuzzCluster) -> Result<Box<dyn Target>, String> {
    let root = c.root.display().to_string();
    Ok(match name {
        "sql" => Box::new(sql::SqlTarget::new(&c.cluster.rest.base, &root)),
        "rest" => Box::new(rest::RestTarget::new(&c.cluster.rest.base)),
        "flight" => Box::new(flight::FlightTarget::new(
            c.cluster.flight_address(),
            &c.cluster.rest.base,
            &root,
        )),
        "pgwire" => Box::new(pgwire::PgWireTarget::new(
            &c.cluster.pg,
            &c.cluster.rest.base,
            &root,
        )),
        "files" => Box::new(files::FilesTarget::new(
            &c.cluster.rest.base,
            &c.root,
            c.cluster.dir.path(),
        )),
        "internal" => {
            let internal = format!("127.0.0.1:{}", c.cluster.internal);
            Box::new(internal::InternalTarget::new(
                &c.cluster.rest,
                &internal,
                &c.root,
            )?)
        }
        other => return Err(format!("no fuzz target {other}; there are {TARGETS:?}")),
    })
}

/// Shorten a printable input to `max` characters (on a character boundary).
pub fn excerpt(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({} chars)", text.chars().count())
}

/// Fuzz `server` through `target` from `seed` within `budget`. Stops at the first crash or
/// hang; leaks are checked at the end.
pub fn run(server: &mut dyn Server, target: &mut dyn Target, seed: u64, budget: Budget) -> Report {
    let mut rng = Rng::seed_from_u64(seed);
    let started = Instant::now();
    server.baseline();
    let mut report = Report {
        target: target.name(),
        seed,
        inputs: 0,
        elapsed: Duration::ZERO,
        outcomes: BTreeMap::new(),
        examples: BTreeMap::new(),
        findings: Vec::new(),
    };
    let mut last_input = String::new();
    while started.elapsed() < budget.time && report.inputs < budget.max_inputs {
        let index = report.inputs;
        let sent_at = Instant::now();
        let sent = target.one(&mut rng);
        report.inputs += 1;
        if sent_at.elapsed() > INPUT_TIMEOUT {
            report.findings.push(Finding {
                input_index: index,
                input: sent.input.clone(),
                what: format!("no reply within {} s", INPUT_TIMEOUT.as_secs()),
            });
        }
        let going_down = sent.outcome.contains("unreachable") || sent.outcome.contains("closed");
        *report.outcomes.entry(sent.outcome.clone()).or_default() += 1;
        report
            .examples
            .entry(sent.outcome)
            .or_insert_with(|| sent.input.clone());
        last_input = sent.input;
        if going_down {
            // A process that is going down may take a moment to be seen gone.
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(why) = server.exited() {
            report.findings.push(Finding {
                input_index: index,
                input: last_input.clone(),
                what: format!("a process died: {why}"),
            });
            break;
        }
        if report.inputs.is_multiple_of(budget.check_every)
            && let Err(why) = server.select_one()
        {
            report.findings.push(Finding {
                input_index: index,
                input: last_input.clone(),
                what: format!(
                    "SELECT 1 failed after this input (or one of the {} before it): {why}",
                    budget.check_every - 1
                ),
            });
            break;
        }
    }
    if report.findings.is_empty() {
        let last = report.inputs.saturating_sub(1);
        if let Err(why) = server.select_one() {
            report.findings.push(Finding {
                input_index: last,
                input: last_input.clone(),
                what: format!("SELECT 1 failed at the end: {why}"),
            });
        } else if let Err(why) = server.leaks() {
            report.findings.push(Finding {
                input_index: last,
                input: String::new(),
                what: format!("held after the run: {why}"),
            });
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Helpers targets share to draw inputs.
pub mod draw {
    use rand::Rng as _;
    use rand::seq::IndexedRandom;

    use super::Rng;

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
        items.choose(rng).expect("a non-empty list")
    }

    /// True with probability `p`.
    pub fn chance(rng: &mut Rng, p: f64) -> bool {
        rng.random_bool(p.clamp(0.0, 1.0))
    }

    /// Random bytes, mostly short, sometimes long.
    pub fn bytes(rng: &mut Rng) -> Vec<u8> {
        let len = match rng.random_range(0..10) {
            0 => 0,
            1..=6 => rng.random_range(1..64),
            7 | 8 => rng.random_range(64..4096),
            _ => rng.random_range(4096..200_000),
        };
        (0..len).map(|_| rng.random()).collect()
    }

    /// A string of the kinds that break parsers: empty, long, unicode, quotes, NULs, paths.
    pub fn text(rng: &mut Rng) -> String {
        const SPECIAL: &[&str] = &[
            "",
            " ",
            "'",
            "\"",
            "\\",
            "%",
            "_",
            "*",
            "\0",
            "..",
            "../../../../etc/passwd",
            "/etc/passwd",
            "%2e%2e%2f",
            "null",
            "NaN",
            "-1",
            "18446744073709551616",
            "ñ",
            "🦀",
            "\u{202e}",
            "sys",
            "information_schema",
            "people",
            "$ROOT",
        ];
        match rng.random_range(0..6) {
            0 => pick(rng, SPECIAL).to_string(),
            1 => (0..rng.random_range(0..40))
                .map(|_| rng.random_range(b' '..=b'~') as char)
                .collect(),
            2 => (0..rng.random_range(0..20))
                .map(|_| rng.random::<char>())
                .collect(),
            3 => pick(rng, SPECIAL).repeat(rng.random_range(1..2000)),
            4 => format!("{}{}", pick(rng, SPECIAL), rng.random::<u32>()),
            _ => [
                "people", "events", "products", "sales", "files", "demo", "sys.jobs",
            ][rng.random_range(0..7)]
            .to_string(),
        }
    }

    /// An integer near the edges: 0, ±1, type boundaries, or small random.
    pub fn number(rng: &mut Rng) -> i64 {
        match rng.random_range(0..6) {
            0 => 0,
            1 => *pick(rng, &[1, -1, 2, 255, 256, 65_535, 65_536]),
            2 => *pick(rng, &[i64::MAX, i64::MIN, i32::MAX as i64, i32::MIN as i64]),
            3 => rng.random(),
            _ => rng.random_range(-100..1000),
        }
    }

    /// Damage `data`: flip bits, truncate, cut a piece out, splice random bytes in, or
    /// repeat a piece.
    pub fn damage(rng: &mut Rng, data: &mut Vec<u8>) {
        if data.is_empty() {
            data.extend(bytes(rng));
            return;
        }
        for _ in 0..rng.random_range(1..4) {
            let len = data.len().max(1);
            match rng.random_range(0..6) {
                0 | 1 => {
                    for _ in 0..rng.random_range(1..8) {
                        let at = rng.random_range(0..len.min(data.len()).max(1));
                        if let Some(byte) = data.get_mut(at) {
                            *byte ^= 1 << rng.random_range(0..8);
                        }
                    }
                }
                2 => data.truncate(rng.random_range(0..len)),
                3 => {
                    let start = rng.random_range(0..len);
                    let end = rng.random_range(start..=len).min(data.len());
                    data.drain(start.min(end)..end);
                }
                4 => {
                    let at = rng.random_range(0..=data.len());
                    let junk: Vec<u8> =
                        (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                    data.splice(at..at, junk);
                }
                _ => {
                    let start = rng.random_range(0..len).min(data.len());
                    let end = rng.random_range(start..=data.len());
                    let piece = data[start..end].to_vec();
                    let at = rng.random_range(0..=data.len());
                    data.splice(at..at, piece);
                }
            }
        }
    }
}
