//! A job's state: the names job records store, and the enum frontends see.

pub(crate) const PLANNING: &str = "PLANNING";
/// Waiting for admission (see [`super::admission`]).
pub(crate) const QUEUED: &str = "QUEUED";
pub(crate) const RUNNING: &str = "RUNNING";
pub(crate) const COMPLETED: &str = "COMPLETED";
pub(crate) const FAILED: &str = "FAILED";
pub(crate) const CANCELED: &str = "CANCELED";

/// A job's state; job records store it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Planning,
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Planning,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Planning => PLANNING,
            JobState::Queued => QUEUED,
            JobState::Running => RUNNING,
            JobState::Completed => COMPLETED,
            JobState::Failed => FAILED,
            JobState::Canceled => CANCELED,
        }
    }

    /// A state's name, in any case; None for a name that is no state.
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// The state a record names (a record this coordinator wrote always names one).
    pub fn of(name: &str) -> JobState {
        JobState::parse(name).unwrap_or(JobState::Failed)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
