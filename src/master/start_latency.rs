//! How long a task takes from its assignment to running: `crawler_task_start_seconds`.
//!
//! This master notes when its resources cache first saw each assignment epoch; when the worker
//! reports the task `running` at that epoch, the time from then to the process's start is
//! recorded, once. An epoch whose worker never reports (a Go worker) is forgotten when the
//! resource changes or goes, or after `WAIT_LIMIT_MS`. A list or re-list is not an assignment
//! seen as it happens, so it adds no entry: the map holds only what is waiting to start.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::etcd::cache::{Event, Name, Store};
use crate::metrics::Metrics;
use crate::model::resource::Resource;
use crate::model::status::{TaskState, TaskStatus, now_ms};

/// How long an assignment waits for its task to run before it is no longer measured (the
/// histogram's buckets end at 41 s).
const WAIT_LIMIT_MS: i64 = 10 * 60 * 1000;

/// Epochs waiting for their task to run, by resource name (the cache's own string): (epoch,
/// first seen, Unix ms).
#[derive(Debug, Default)]
struct Waiting {
    epochs: HashMap<Name, (i64, i64)>,
    /// Entries after the last sweep of those past [`WAIT_LIMIT_MS`]; the next sweep comes when
    /// the map has doubled.
    swept_at: usize,
}

impl Waiting {
    fn assigned(&mut self, name: &Name, epoch: i64, at_ms: i64) {
        self.epochs.insert(Name::clone(name), (epoch, at_ms));
        if self.epochs.len() >= (2 * self.swept_at).max(1024) {
            self.epochs
                .retain(|_, (_, seen)| at_ms - *seen <= WAIT_LIMIT_MS);
            self.swept_at = self.epochs.len();
        }
    }

    fn gone(&mut self, name: &str) {
        self.epochs.remove(name);
    }

    /// Seconds from assignment to the process's start, once per epoch.
    fn running(&mut self, name: &str, status: &TaskStatus) -> Option<f64> {
        if status.state != TaskState::Running {
            return None;
        }
        let (epoch, seen) = *self.epochs.get(name)?;
        if status.epoch != epoch {
            return None;
        }
        self.epochs.remove(name);
        let started = status.started_at_ms.unwrap_or(status.updated_at_ms);
        Some((started - seen).max(0) as f64 / 1000.0)
    }
}

/// Records task start latencies until `cancel` fires.
pub async fn run(
    resources: Store<Resource>,
    statuses: Store<TaskStatus>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut resource_changes = resources.subscribe();
    let mut status_changes = statuses.subscribe();
    let mut waiting = Waiting::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            change = resource_changes.recv() => match change {
                Some(change) => {
                    for event in &change.events {
                        match event {
                            Event::Modified { old, new, .. }
                                if old.value.epoch(old.mod_revision)
                                    == new.value.epoch(new.mod_revision) => {}
                            Event::Added { name, new } | Event::Modified { name, new, .. } => {
                                if new.value.assigned_worker().is_some() && !change.relisted {
                                    let epoch = new.value.epoch(new.mod_revision);
                                    waiting.assigned(name, epoch, now_ms());
                                } else {
                                    waiting.gone(name);
                                }
                            }
                            Event::Deleted { name, .. } => waiting.gone(name),
                        }
                    }
                }
                None => return,
            },
            change = status_changes.recv() => match change {
                Some(change) => {
                    for event in &change.events {
                        if let Event::Added { name, new } | Event::Modified { name, new, .. } = event
                            && let Some(seconds) = waiting.running(name, &new.value)
                        {
                            metrics.task_start.observe(seconds);
                        }
                    }
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: TaskState, epoch: i64, started: i64) -> TaskStatus {
        TaskStatus {
            worker: "w".into(),
            epoch,
            state,
            pid: None,
            started_at_ms: Some(started),
            restarts: 0,
            exit_code: None,
            message: String::new(),
            summary: None,
            updated_at_ms: started,
        }
    }

    #[test]
    fn each_epoch_is_measured_once_from_its_assignment() {
        let mut w = Waiting::default();
        w.assigned(&"t".into(), 5, 1_000);
        assert_eq!(w.running("t", &status(TaskState::Starting, 5, 1_100)), None);
        assert_eq!(w.running("t", &status(TaskState::Running, 4, 1_100)), None);
        assert_eq!(
            w.running("t", &status(TaskState::Running, 5, 1_250)),
            Some(0.25)
        );
        assert_eq!(w.running("t", &status(TaskState::Running, 5, 1_300)), None);
        w.assigned(&"u".into(), 7, 2_000);
        w.gone("u");
        assert_eq!(w.running("u", &status(TaskState::Running, 7, 2_100)), None);
    }

    #[test]
    fn assignments_no_task_ran_for_are_swept_after_the_limit() {
        let mut w = Waiting::default();
        for i in 0..1_000 {
            w.assigned(&format!("old-{i}").into(), 1, 0);
        }
        // The 1,024th entry sweeps: the thousand old ones are past the limit.
        for i in 0..24 {
            w.assigned(&format!("new-{i}").into(), 1, WAIT_LIMIT_MS + 1);
        }
        assert_eq!(w.epochs.len(), 24);
        assert_eq!(
            w.running("new-3", &status(TaskState::Running, 1, WAIT_LIMIT_MS + 2)),
            Some(0.001)
        );
        assert_eq!(w.running("old-3", &status(TaskState::Running, 1, 5)), None);
    }
}
