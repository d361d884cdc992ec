//! What a process holds, read from `/proc` (Linux): resident memory, its peak, open files
//! and threads. The storm reports the peaks; the soak samples them over time.

use std::fmt;

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vitals {
    /// Resident memory now (`VmRSS`), bytes.
    pub rss: u64,
    /// The most resident memory the process has had (`VmHWM`), bytes.
    pub peak_rss: u64,
    /// Open file descriptors (files, sockets, pipes).
    pub files: usize,
    pub threads: usize,
}

impl Vitals {
    /// A reading of `pid`; `None` when the process is gone.
    pub fn of(pid: u32) -> Option<Vitals> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let files = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        Some(Vitals {
            rss: field("VmRSS:") * 1024,
            peak_rss: field("VmHWM:") * 1024,
            files,
            threads: field("Threads:") as usize,
        })
    }
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for Vitals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RSS {:.0} MiB (peak {:.0} MiB), {} files, {} threads",
            mib(self.rss),
            mib(self.peak_rss),
            self.files,
            self.threads
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_files_and_threads() {
        let me = Vitals::of(std::process::id()).expect("this process is alive");
        assert!(me.rss > 0 && me.peak_rss >= me.rss, "{me}");
        assert!(me.files >= 3 && me.threads >= 1, "{me}");
        assert_eq!(Vitals::of(u32::MAX), None);
    }
}
