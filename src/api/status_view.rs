//! What the API says about a task's run: the status its worker reported, judged against the
//! resource's current assignment.
//!
//! A status is `stale` when it was reported for an older assignment epoch than the resource's
//! current one (the worker has not caught up yet), and the state is `unknown` when the assigned
//! worker reports nothing: a Go worker, which never reports, or a worker that has not started
//! the task yet. A status left behind by a worker the task no longer belongs to is not shown.

use serde::Serialize;
use utoipa::ToSchema;

use crate::etcd::cache::{Entry, Store};
use crate::model::resource::Resource;
use crate::model::status::{TaskState, TaskStatus};

/// The state `unknown`: no report from the assigned worker.
pub const UNKNOWN: &str = "unknown";

/// A task's status, as every master shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusView {
    /// `starting`, `running`, `backoff`, `completed`, `failed`, `stopping`, or `unknown` when
    /// the assigned worker reports nothing (Go workers never do).
    pub state: String,
    /// True when the report is about an older assignment epoch than the current one.
    pub stale: bool,
    /// The assignment epoch the report is about (the resource's mod revision then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The process id, while one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the current (or last) process started, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Times the process was started again after failing.
    pub restarts: u32,
    /// Exit code of the last process that ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// One line about the state.
    pub message: String,
    /// The one line the runner reported about its last run (`summary` in its work directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When the worker wrote the report, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// RFC 3339 of Unix milliseconds, clamped to years 1970 to 9999 (a worker's status is outside
/// input: a bogus time must not fail the read).
pub fn rfc3339(ms: i64) -> String {
    /// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
    const LAST_MS: i64 = 253_402_300_799_999;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.clamp(0, LAST_MS) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

impl StatusView {
    /// Nothing reported.
    pub fn unknown(message: &str) -> Self {
        Self {
            state: UNKNOWN.to_owned(),
            stale: false,
            epoch: None,
            pid: None,
            started_at: None,
            restarts: 0,
            exit_code: None,
            message: message.to_owned(),
            summary: None,
            updated_at: None,
        }
    }

    /// The view of `resource` (at `mod_revision`) given what its worker reported, if anything.
    pub fn judge(resource: &Resource, mod_revision: i64, reported: Option<&TaskStatus>) -> Self {
        let Some(worker) = resource.assigned_worker() else {
            return Self::unknown("no worker is assigned");
        };
        let Some(status) = reported.filter(|s| s.worker == worker) else {
            return Self::unknown("the assigned worker has not reported yet (Go workers never do)");
        };
        Self {
            state: status.state.as_str().to_owned(),
            stale: status.epoch < resource.epoch(mod_revision),
            epoch: Some(status.epoch),
            pid: status.pid,
            started_at: status.started_at_ms.map(rfc3339),
            restarts: status.restarts,
            exit_code: status.exit_code,
            message: status.message.clone(),
            summary: status.summary.clone(),
            updated_at: Some(rfc3339(status.updated_at_ms)),
        }
    }

    /// The state `judge` would show, without building the view.
    pub fn state_of(resource: &Resource, reported: Option<&TaskStatus>) -> &'static str {
        match (resource.assigned_worker(), reported) {
            (Some(worker), Some(status)) if status.worker == worker => status.state.as_str(),
            _ => UNKNOWN,
        }
    }

    /// The view of the resource `entry`, looking its report up in `statuses`.
    pub fn of(entry: &Entry<Resource>, statuses: &Store<TaskStatus>) -> Self {
        let reported = statuses.get(&entry.value.name);
        Self::judge(
            &entry.value,
            entry.mod_revision,
            reported.as_ref().map(|e| &*e.value),
        )
    }
}

/// A `?state=` filter value: one of the task states or `unknown`.
pub fn parse_state(text: &str) -> Option<String> {
    (text == UNKNOWN || TaskState::parse(text).is_some()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(node: &str) -> Resource {
        Resource {
            id: 1.into(),
            name: "t".into(),
            assigned_node: node.into(),
            creation_time: 0,
            extra: Default::default(),
        }
    }

    fn report(worker: &str, epoch: i64) -> TaskStatus {
        TaskStatus {
            worker: worker.into(),
            epoch,
            state: TaskState::Running,
            pid: Some(9),
            started_at_ms: Some(1_000),
            restarts: 1,
            exit_code: None,
            message: String::new(),
            summary: None,
            updated_at_ms: 2_000,
        }
    }

    #[test]
    fn a_report_is_judged_against_the_assignment() {
        let r = resource("w1|127.0.0.1:1");
        let fresh = StatusView::judge(&r, 10, Some(&report("w1", 10)));
        assert_eq!((fresh.state.as_str(), fresh.stale), ("running", false));
        let stale = StatusView::judge(&r, 11, Some(&report("w1", 10)));
        assert_eq!((stale.state.as_str(), stale.stale), ("running", true));
        // A report left behind by the previous worker is not this assignment's.
        let other = StatusView::judge(&r, 11, Some(&report("w0", 10)));
        assert_eq!(other.state, UNKNOWN);
        // A Go worker never reports.
        assert_eq!(StatusView::judge(&r, 11, None).state, UNKNOWN);
        assert_eq!(StatusView::judge(&resource(""), 11, None).state, UNKNOWN);
        // The list's state filter judges the state alone, the same way.
        for (r, reported) in [
            (&r, Some(report("w1", 10))),
            (&r, Some(report("w0", 10))),
            (&r, None),
            (&resource(""), Some(report("w1", 10))),
        ] {
            assert_eq!(
                StatusView::state_of(r, reported.as_ref()),
                StatusView::judge(r, 11, reported.as_ref()).state
            );
        }
    }

    #[test]
    fn state_filters() {
        assert_eq!(parse_state("failed").as_deref(), Some("failed"));
        assert_eq!(parse_state("unknown").as_deref(), Some("unknown"));
        assert_eq!(parse_state("bogus"), None);
    }
}

#[cfg(test)]
mod clamp_tests {
    #[test]
    fn any_time_formats() {
        assert_eq!(super::rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(super::rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_000), "1970-01-01T00:00:01.000Z");
    }
}
