//! Where a task may run, in the API: the `placement` a client gives at creation, replaces with
//! PUT and merges with PATCH (`null` removes it), checked before anything touches etcd (a bad
//! one is a 422 that names its field); and why an unassigned task waits, judged on any master
//! from its own caches by the rules the leader's placement uses.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::model::constraints::{Constraints, Invalid, Labels};
use crate::model::resource::Resource;
use crate::model::schedule::Record;
use crate::model::waiting::{Candidate, Wait, explain};

/// A constraint error as a 422 naming its field.
pub fn unprocessable(e: Invalid) -> ApiError {
    ApiError::Unprocessable {
        detail: e.detail,
        field: Some(e.field.into()),
    }
}

/// The constraints in a client's `placement` (null: none), checked.
pub fn checked(value: &Value) -> Result<Constraints, ApiError> {
    if value.is_null() {
        return Ok(Constraints::default());
    }
    Constraints::parse(value).map_err(unprocessable)
}

/// `current` with the merge patch `patch` applied (RFC 7396), checked. Lists (expressions,
/// tolerations, preferences) are replaced whole, as a merge patch does.
pub fn merged(current: Option<&Constraints>, patch: &Value) -> Result<Constraints, Invalid> {
    let mut target = current
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Null);
    super::schedules::merge(&mut target, patch);
    if target.is_null() {
        return Ok(Constraints::default());
    }
    Constraints::parse(&target)
}

/// Why a task waits for a worker.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitingView {
    /// `no_workers`, `no_match`, `dedicated`, `cordoned`, `full`, `queued` or `grace`.
    pub reason: &'static str,
    /// In words, e.g. `no worker matches region=eu (3 workers have region=us)`.
    pub message: String,
}

/// The present workers as one master's caches show them: labels, cordon, and room (its
/// assigned tasks against its capacity). Built once per request.
pub struct Fleet {
    workers: Vec<(String, Labels, bool, bool)>,
    /// Absent workers → when their grace period ends, Unix ms.
    grace_ends: std::collections::HashMap<String, i64>,
}

impl Fleet {
    /// The fleet now.
    pub fn now(state: &AppState) -> Self {
        let grace = state.scheduling.reassign_after.as_millis() as i64;
        let mut cordoned = std::collections::HashSet::new();
        let mut grace_ends = std::collections::HashMap::new();
        state.schedule.with(|objects, _| {
            for e in objects.values() {
                match &*e.value {
                    Record::Control(id, _) => {
                        cordoned.insert(id.clone());
                    }
                    Record::Departed(id, d) => {
                        grace_ends.insert(id.clone(), d.at_ms + grace);
                    }
                    Record::Storm(_) => {}
                }
            }
        });
        let loads: Vec<(String, Labels, Option<u32>)> = state.workers.with(|objects, _| {
            objects
                .values()
                .map(|e| {
                    (
                        e.value.id.clone(),
                        e.value.metadata_map(),
                        e.value.capacity(),
                    )
                })
                .collect()
        });
        let workers = state.resources.with_index(|_, index, _| {
            loads
                .into_iter()
                .map(|(id, labels, capacity)| {
                    let load = index.count(&id);
                    let room = capacity.is_none_or(|c| load < c as usize);
                    let cordon = cordoned.contains(&id);
                    (id, labels, cordon, room)
                })
                .collect()
        });
        Self {
            workers,
            grace_ends,
        }
    }

    /// Why one resource `r` waits, or `None` when a present worker holds it: a read of one
    /// task looks the fleet over only when its worker is not there.
    pub fn why_one(state: &AppState, r: &Resource) -> Option<WaitingView> {
        Self::why_lazily(state, r, &mut None)
    }

    /// Like [`Fleet::why_one`] for each of many resources: the fleet is built into `fleet` by
    /// the first one whose worker is not there, and only then, so a page of tasks that all have
    /// their workers costs what it returns, not what the fleet holds.
    pub fn why_lazily(
        state: &AppState,
        r: &Resource,
        fleet: &mut Option<Fleet>,
    ) -> Option<WaitingView> {
        if let Some(worker) = r.assigned_worker()
            && state
                .workers
                .get(worker)
                .is_some_and(|e| e.value.id == worker)
        {
            return None;
        }
        fleet.get_or_insert_with(|| Self::now(state)).why(r)
    }

    /// Why resource `r` waits, or `None` when a present worker holds it.
    pub fn why(&self, r: &Resource) -> Option<WaitingView> {
        if let Some(worker) = r.assigned_worker() {
            if self.workers.iter().any(|w| w.0 == worker) {
                return None;
            }
            let ends = self.grace_ends.get(worker).copied();
            if ends.is_none_or(|at| at > crate::model::status::now_ms()) {
                return Some(WaitingView {
                    reason: Wait::Grace.as_str(),
                    message: format!(
                        "its worker {worker} is gone; it moves once the grace period has run out"
                    ),
                });
            }
        }
        let none = Constraints::default();
        let (wait, message) = explain(
            r.constraints().unwrap_or(&none),
            self.workers
                .iter()
                .map(|(_, labels, cordoned, room)| Candidate {
                    labels,
                    cordoned: *cordoned,
                    room: *room,
                }),
        );
        Some(WaitingView {
            reason: wait.as_str(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_changes_the_fields_it_names() {
        let c = checked(&json!({"selector": {"match_labels": {"region": "eu"}}, "priority": 5}))
            .expect("valid");
        let raised = merged(Some(&c), &json!({"priority": 9})).expect("valid");
        assert_eq!(raised.priority, 9);
        assert_eq!(raised.selector, c.selector);
        let moved = merged(
            Some(&c),
            &json!({"selector": {"match_labels": {"region": "us"}}}),
        )
        .expect("valid");
        assert_eq!(moved.selector.describe(), "region=us");
        assert!(merged(Some(&c), &Value::Null).expect("valid").is_empty());
        let bad = merged(Some(&c), &json!({"priority": 5000})).expect_err("range");
        assert_eq!(
            unprocessable(bad).problem().field.as_deref(),
            Some("placement.priority")
        );
        assert!(checked(&Value::Null).expect("none").is_empty());
    }
}
