//! A resource's history, one document under `/crawler/history/<name>`: its assignments (why,
//! when, from where, to where), its runs (each epoch of its task: why it started, on which
//! worker, how it ended) and the schedule's slots that passed without a run.
//!
//! Only the leader writes it, each time compared on the version it read. A run is recorded
//! when it starts, in the txn that starts it; that txn's revision is the run's epoch, so the
//! record leaves it out and the reader takes it from the key's mod revision until the next
//! write fills it in. A run's end is recorded when its worker reports it completed or failed,
//! or when the next run starts.

use serde::{Deserialize, Serialize};

use crate::model::recurrence::Outcome;
use crate::model::schedule::{Assignment, HISTORY_LEN, Reason};
use crate::model::status::{TaskState, TaskStatus};

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// The resource was created.
    Created,
    /// Its schedule was due.
    Scheduled,
    /// Its schedule was due while no leader could start it, or earlier slots were missed.
    CatchUp,
    /// A client restarted it.
    Restarted,
    /// It moved to another worker.
    Moved,
    /// A client changed it (its labels), which its task sees.
    Updated,
}

impl Start {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Created => "created",
            Start::Scheduled => "scheduled",
            Start::CatchUp => "catch-up",
            Start::Restarted => "restarted",
            Start::Moved => "moved",
            Start::Updated => "updated",
        }
    }

    /// The start an assignment makes.
    pub fn of(reason: Reason) -> Start {
        match reason {
            Reason::Created => Start::Created,
            Reason::Restarted => Start::Restarted,
            Reason::WorkerLeft
            | Reason::Drained
            | Reason::Rebalanced
            | Reason::Pinned
            | Reason::Constrained
            | Reason::Preempted => Start::Moved,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// Its process exited 0.
    Completed,
    /// Its process failed too often.
    Failed,
    /// A newer run took its place (a restart, a move, a change, a replacing schedule) before
    /// it ended.
    Stopped,
}

impl End {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Completed => "completed",
            End::Failed => "failed",
            End::Stopped => "stopped",
        }
    }
}

/// One run: one epoch of the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The epoch (the revision of the write that started it); absent in the record the
    /// starting txn wrote, where it is the key's mod revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Why it started.
    pub reason: Start,
    /// The slot it ran for, Unix ms, when its schedule started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_ms: Option<i64>,
    /// The worker it was assigned to (node id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the leader started it, Unix ms.
    pub started_ms: i64,
    /// When it ended, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// Exit code of its last process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Times its process was started again after failing.
    #[serde(default)]
    pub restarts: u32,
    /// The one line its runner reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Run {
    /// A run starting now for `reason` on `worker`.
    pub fn new(reason: Start, worker: Option<&str>, now_ms: i64) -> Self {
        Run {
            epoch: None,
            reason,
            scheduled_ms: None,
            worker: worker.map(str::to_owned),
            started_ms: now_ms,
            ended_ms: None,
            end: None,
            exit_code: None,
            restarts: 0,
            summary: None,
        }
    }

    fn close(&mut self, status: Option<&TaskStatus>, now_ms: i64) {
        let status = status.filter(|s| Some(s.epoch) == self.epoch);
        if let Some(s) = status {
            self.exit_code = s.exit_code;
            self.restarts = s.restarts;
            self.summary = s.summary.clone();
        }
        let end = match status.map(|s| s.state) {
            Some(TaskState::Completed) => End::Completed,
            Some(TaskState::Failed) => End::Failed,
            _ => End::Stopped,
        };
        self.end = Some(end);
        self.ended_ms = Some(match status {
            Some(s) if end != End::Stopped => s.updated_at_ms,
            _ => now_ms,
        });
    }
}

/// A slot of the schedule that passed without a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passed {
    /// The slot, Unix ms.
    pub slot_ms: i64,
    /// `skipped` or `missed`.
    pub outcome: Outcome,
    /// Slots it stands for: an outage's missed slots are one record.
    pub count: u64,
    /// When the leader decided it, Unix ms.
    pub at_ms: i64,
}

/// The document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The last [`HISTORY_LEN`] assignments, oldest first.
    #[serde(default)]
    pub assignments: Vec<Assignment>,
    /// The last runs, oldest first.
    #[serde(default)]
    pub runs: Vec<Run>,
    /// The last slots passed without a run, oldest first.
    #[serde(default)]
    pub passed: Vec<Passed>,
}

fn keep_last<T>(items: &mut Vec<T>, n: usize) {
    let excess = items.len().saturating_sub(n.max(1));
    items.drain(..excess);
}

impl History {
    /// The stored document (an older array of assignments is read as such); one that does not
    /// decode starts anew. `mod_revision` is the key's, the epoch of a run its last write
    /// started.
    pub fn decode(bytes: Option<&[u8]>, mod_revision: i64) -> Self {
        let Some(bytes) = bytes else {
            return Self::default();
        };
        let mut history = serde_json::from_slice::<History>(bytes)
            .or_else(|_| {
                serde_json::from_slice::<Vec<Assignment>>(bytes).map(|assignments| History {
                    assignments,
                    ..History::default()
                })
            })
            .unwrap_or_default();
        if let Some(last) = history.runs.last_mut()
            && last.epoch.is_none()
        {
            last.epoch = Some(mod_revision);
        }
        history
    }

    /// Appends an assignment.
    pub fn assign(&mut self, entry: Assignment) {
        self.assignments.push(entry);
        keep_last(&mut self.assignments, HISTORY_LEN);
    }

    /// The run still going (the last one, unless it ended).
    pub fn open(&self) -> Option<&Run> {
        self.runs.last().filter(|r| r.end.is_none())
    }

    /// Starts `run`, ending the one still going with what `status` says of it; keeps `keep`.
    pub fn start(&mut self, run: Run, status: Option<&TaskStatus>, now_ms: i64, keep: usize) {
        if let Some(open) = self.runs.last_mut().filter(|r| r.end.is_none()) {
            open.close(status, now_ms);
        }
        self.runs.push(run);
        keep_last(&mut self.runs, keep);
    }

    /// Records the end `status` reports of the run of its epoch; false when there is nothing
    /// new to record (no such run still going, or the status is not an end).
    pub fn end(&mut self, status: &TaskStatus, now_ms: i64) -> bool {
        if !matches!(status.state, TaskState::Completed | TaskState::Failed) {
            return false;
        }
        match self
            .runs
            .iter_mut()
            .rev()
            .find(|r| r.epoch == Some(status.epoch))
        {
            Some(run) if run.end.is_none() => {
                run.close(Some(status), now_ms);
                true
            }
            _ => false,
        }
    }

    /// Records a slot passed without a run; keeps `keep`.
    pub fn pass(&mut self, passed: Passed, keep: usize) {
        self.passed.push(passed);
        keep_last(&mut self.passed, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(epoch: i64, state: TaskState) -> TaskStatus {
        TaskStatus {
            worker: "w".into(),
            epoch,
            state,
            pid: None,
            started_at_ms: Some(1),
            restarts: 2,
            exit_code: Some(0),
            message: String::new(),
            summary: Some("12 pages".into()),
            updated_at_ms: 50,
        }
    }

    #[test]
    fn runs_take_their_epoch_from_the_write_that_started_them() {
        let mut h = History::default();
        h.start(Run::new(Start::Created, Some("w"), 10), None, 10, 20);
        let bytes = serde_json::to_vec(&h).expect("json");
        // Stored by the txn at revision 7: that is its epoch.
        let mut h = History::decode(Some(&bytes), 7);
        assert_eq!(h.open().and_then(|r| r.epoch), Some(7));
        assert!(!h.end(&status(7, TaskState::Running), 60));
        assert!(!h.end(&status(6, TaskState::Completed), 60));
        assert!(h.end(&status(7, TaskState::Completed), 60));
        assert!(
            !h.end(&status(7, TaskState::Completed), 60),
            "recorded once"
        );
        let run = &h.runs[0];
        assert_eq!(
            (run.end, run.ended_ms, run.restarts, run.summary.as_deref()),
            (Some(End::Completed), Some(50), 2, Some("12 pages"))
        );
        // A run still going when the next starts is stopped.
        h.start(Run::new(Start::Scheduled, Some("w"), 70), None, 70, 20);
        let bytes = serde_json::to_vec(&h).expect("json");
        let mut h = History::decode(Some(&bytes), 9);
        h.start(
            Run::new(Start::Restarted, Some("w"), 80),
            Some(&status(9, TaskState::Running)),
            80,
            2,
        );
        assert_eq!(h.runs.len(), 2);
        assert_eq!(
            (h.runs[0].epoch, h.runs[0].end, h.runs[0].ended_ms),
            (Some(9), Some(End::Stopped), Some(80))
        );
        assert_eq!(h.open().map(|r| r.reason), Some(Start::Restarted));
    }

    #[test]
    fn an_older_array_of_assignments_still_reads() {
        let old = br#"[{"reason":"created","at_ms":1,"from":null,"to":"w"}]"#;
        let h = History::decode(Some(old), 3);
        assert_eq!(h.assignments.len(), 1);
        assert!(h.runs.is_empty());
        assert_eq!(History::decode(Some(b"nonsense"), 3), History::default());
        let mut h = History::default();
        for at in 0..25 {
            h.assign(Assignment {
                reason: Reason::Rebalanced,
                at_ms: at,
                from: None,
                to: None,
                actor: None,
            });
        }
        assert_eq!(h.assignments.len(), HISTORY_LEN);
        assert_eq!(h.assignments[0].at_ms, 5);
    }
}
