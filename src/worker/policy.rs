//! How a worker runs its tasks, from `worker.*`: where they live, how long a stop may take,
//! how failures are counted, and the agent each run gets.

use std::path::PathBuf;
use std::time::Duration;

use super::tasklog::TaskLog;
use crate::config::{Runners, WorkerConfig};

/// How tasks are run, from `worker.*`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// This worker's node id.
    pub node_id: String,
    /// The command templates.
    pub runners: Runners,
    /// Where task directories live: `<data_dir>/tasks/<name>/`.
    pub data_dir: PathBuf,
    /// SIGTERM → SIGKILL.
    pub stop_grace: Duration,
    /// Output kept per task.
    pub log_bytes: u64,
    /// First and longest restart delay.
    pub backoff: (Duration, Duration),
    /// Failures within the window that make a task `failed`.
    pub max_failures: u32,
    /// The directory the worker was started in, `{worker_dir}` in templates.
    pub worker_dir: PathBuf,
    /// The window.
    pub failure_window: Duration,
    /// The task agent, which gives each run its secret and its last checkpoint.
    pub agent: Option<super::agent::Agent>,
}

impl Policy {
    /// The policy of `config` for `node_id`.
    pub fn new(config: &WorkerConfig, node_id: &str) -> Self {
        let data_dir = config
            .data_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("crawler-{node_id}")));
        Self {
            node_id: node_id.to_owned(),
            runners: config.runners.clone(),
            data_dir,
            stop_grace: Duration::from_millis(config.stop_grace_ms),
            log_bytes: config.log_bytes,
            backoff: (
                Duration::from_millis(config.restart_backoff_ms),
                Duration::from_millis(config.restart_backoff_max_ms),
            ),
            max_failures: config.max_failures,
            failure_window: Duration::from_secs(config.failure_window_secs),
            worker_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            agent: None,
        }
    }

    /// The directory of task `name` (a validated resource name, so a plain file name).
    pub fn task_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("tasks").join(name)
    }

    /// The output log of task `name`.
    pub fn log_of(&self, name: &str) -> TaskLog {
        TaskLog::new(&self.task_dir(name), self.log_bytes)
    }
}
