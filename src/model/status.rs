//! A task's status as its worker reports it, stored under `/crawler/status/<name>` on the
//! worker's lease, so that it vanishes with the worker.
//!
//! The worker names itself and the assignment epoch it acts on (the resource's mod revision),
//! so a master can tell a status about the current assignment from one left over from an
//! earlier one (`stale`), and a task with no status at all (a Go worker, which never reports)
//! from one that runs.

use serde::{Deserialize, Serialize};

use crate::object::{DecodeError, Object};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// The process is being started.
    Starting,
    /// The process runs.
    Running,
    /// The process failed and waits to be started again.
    Backoff,
    /// The process exited 0; it is not started again.
    Completed,
    /// The process failed too often; it stays so until the resource changes or is restarted.
    Failed,
    /// The process is being stopped.
    Stopping,
}

impl TaskState {
    /// Every state, in the order of a task's life.
    pub const ALL: [TaskState; 6] = [
        TaskState::Starting,
        TaskState::Running,
        TaskState::Backoff,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Stopping,
    ];

    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Backoff => "backoff",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Stopping => "stopping",
        }
    }

    /// The state named `text`, if any.
    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A task's status, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Node id of the worker that reports it.
    pub worker: String,
    /// The assignment epoch it acts on: the resource's mod revision.
    pub epoch: i64,
    /// Where the task is.
    pub state: TaskState,
    /// The process id, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the current (or last) process started, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// How many times the process was started again after failing.
    #[serde(default)]
    pub restarts: u32,
    /// Exit code of the last process that ended (absent if it was killed by a signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// One line about the state: why it failed, what it waits for.
    #[serde(default)]
    pub message: String,
    /// The one line the runner reported about its run, from `summary` in its work directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When this status was written, Unix milliseconds.
    pub updated_at_ms: i64,
}

impl Object for TaskStatus {
    fn decode(_name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(value).map_err(|e| DecodeError::new(e.to_string()))
    }

    fn group(&self) -> Option<&str> {
        Some(self.state.as_str())
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("json");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(TaskState::parse("unknown"), None);
    }

    #[test]
    fn a_status_decodes_what_it_encodes() {
        let status = TaskStatus {
            worker: "go.micro.server.worker-1".into(),
            epoch: 42,
            state: TaskState::Running,
            pid: Some(7),
            started_at_ms: Some(1),
            restarts: 2,
            exit_code: None,
            message: String::new(),
            summary: None,
            updated_at_ms: 3,
        };
        let bytes = serde_json::to_vec(&status).expect("json");
        assert_eq!(TaskStatus::decode("t", &bytes).expect("decode"), status);
        assert!(TaskStatus::decode("t", b"{}").is_err());
    }
}
