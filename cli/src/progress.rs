//! The progress line: while a statement runs at a terminal for more than a second, one
//! line on standard error says how far its job is (state, percent of tasks, rows so far,
//! elapsed time and an estimate of what is left), redrawn four times a second and wiped
//! before the first rows print. It asks the server with the `quarry.job_progress` action,
//! so it adds nothing to the job history. It is never drawn where standard error is not a
//! terminal, nor in scripts and `-c`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{Any, TicketStatementQuery};
use arrow_flight::{Action, FlightInfo};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

const ACTION: &str = "quarry.job_progress";
/// Statements quicker than this never show a progress line.
const QUIET_FOR: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(250);

/// The job a planned statement's results come from.
pub fn job_of(info: &FlightInfo) -> Option<String> {
    let ticket = info.endpoint.first()?.ticket.as_ref()?;
    let any = Any::decode(ticket.ticket.as_ref()).ok()?;
    let query = any.unpack::<TicketStatementQuery>().ok()??;
    String::from_utf8(query.statement_handle.to_vec()).ok()
}

#[derive(Default)]
struct Drawn {
    stopped: bool,
    shown: bool,
}

/// A progress line being drawn; wiped when stopped or dropped.
pub struct Progress {
    drawn: Arc<Mutex<Drawn>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Follow job `id` with a client of its own (the statement's client is busy reading).
    pub fn start(mut client: FlightSqlServiceClient<Channel>, id: String) -> Progress {
        let drawn = Arc::new(Mutex::new(Drawn::default()));
        let shared = Arc::clone(&drawn);
        let began = Instant::now();
        let task = tokio::spawn(async move {
            tokio::time::sleep(QUIET_FOR).await;
            loop {
                if let Some(text) = ask(&mut client, &id).await {
                    let mut state = lock(&shared);
                    if state.stopped {
                        return;
                    }
                    eprint!("\r\x1b[K{text}");
                    state.shown = true;
                } else if began.elapsed() > QUIET_FOR * 5 {
                    // A server without the action: stop asking.
                    return;
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        Progress { drawn, task }
    }

    /// Stop drawing and wipe the line.
    pub fn stop(&self) {
        let mut state = lock(&self.drawn);
        if !state.stopped && state.shown {
            eprint!("\r\x1b[K");
        }
        state.stopped = true;
        self.task.abort();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(drawn: &Mutex<Drawn>) -> std::sync::MutexGuard<'_, Drawn> {
    match drawn.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn ask(client: &mut FlightSqlServiceClient<Channel>, id: &str) -> Option<String> {
    let action = Action::new(ACTION, id.as_bytes().to_vec());
    let mut results = client.do_action(action).await.ok()?;
    let body = results.try_next().await.ok()??;
    let progress: serde_json::Value = serde_json::from_slice(&body.body).ok()?;
    Some(line(&progress))
}

/// The line for a job's progress, e.g.
/// `RUNNING  45% (9/20 tasks)  1,234,567 rows  3.2 s  about 4 s left`.
pub fn line(progress: &serde_json::Value) -> String {
    let state = progress["state"].as_str().unwrap_or("RUNNING");
    let done = progress["tasks_done"].as_u64().unwrap_or(0);
    let total = progress["tasks_total"].as_u64().unwrap_or(0);
    let rows = progress["rows"].as_u64().unwrap_or(0);
    let elapsed = progress["elapsed_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let mut text = state.to_string();
    if let Some(percent) = (done * 100).checked_div(total) {
        text.push_str(&format!("  {percent}% ({done}/{total} tasks)"));
    }
    text.push_str(&format!("  {} rows  {elapsed:.1} s", thousands(rows)));
    if total > 0 && done > 0 && done < total {
        let left = elapsed * (total - done) as f64 / done as f64;
        text.push_str(&format!("  about {left:.0} s left"));
    }
    text
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_state_percent_rows_time_and_what_is_left() {
        let line = line(&serde_json::json!({
            "state": "RUNNING", "tasks_done": 5, "tasks_total": 20,
            "rows": 1234567, "elapsed_ms": 2000
        }));
        assert_eq!(
            line,
            "RUNNING  25% (5/20 tasks)  1,234,567 rows  2.0 s  about 6 s left"
        );
    }
}
