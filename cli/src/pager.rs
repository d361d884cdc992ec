//! Aligned results taller than the terminal go through a pager (`$PAGER`, else `less -S`),
//! as psql's do, when qsql writes to a terminal; `\pset pager off` turns it off.

use std::io::{IsTerminal, Write};
use std::process::{Command, Stdio};

/// Show `text` through the pager when it is taller than the screen. False when it was not
/// paged, and the caller prints it.
pub fn page(text: &str) -> bool {
    if !std::io::stdout().is_terminal() {
        return false;
    }
    let Some((_, terminal_size::Height(rows))) = terminal_size::terminal_size() else {
        return false;
    };
    if text.lines().count() < usize::from(rows) {
        return false;
    }
    let pager = std::env::var("PAGER")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "less -S".to_string());
    let Ok(mut child) = Command::new("sh")
        .arg("-c")
        .arg(&pager)
        .stdin(Stdio::piped())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A reader that quits early closes the pipe: nothing more to show.
        let _ = stdin.write_all(text.as_bytes());
    }
    let _ = child.wait();
    true
}
