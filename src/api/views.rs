//! How workers and the scheduling policy's state are shown: the views the worker, cluster and
//! metrics routes share, built from this master's caches.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::status_view::rfc3339;
use crate::model::registry::Worker;
use crate::model::schedule::{Control, Record, Storm};

/// A worker, as listed by the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    /// Node id, e.g. `go.micro.server.worker-2`.
    pub id: String,
    /// Address the worker advertises.
    pub address: String,
    /// Node metadata (service metadata merged under it).
    pub metadata: BTreeMap<String, String>,
    /// Version the worker registered with.
    pub version: String,
    /// Most resources it takes; absent when unbounded.
    pub capacity: Option<u32>,
    /// Resources currently assigned to it.
    pub load: usize,
    /// Operators' state: `ready`, `cordoned`, `draining` or `drained`, with details.
    #[serde(flatten)]
    pub control: ControlView,
}

/// The API view of a worker with `load` resources and operators' `control`.
pub fn view(worker: &Worker, load: usize, control: Option<&Control>) -> WorkerView {
    WorkerView {
        control: control_view(control, load),
        id: worker.id.clone(),
        address: worker.address.to_string(),
        metadata: worker.metadata_map(),
        version: worker.version.to_string(),
        capacity: worker.capacity(),
        load,
    }
}

/// Counts resources per assigned worker in one pass over the resources cache.
pub fn loads(state: &AppState) -> HashMap<String, usize> {
    state.resources.with(|objects, _| {
        let mut loads = HashMap::new();
        for entry in objects.values() {
            if let Some(worker) = entry.value.assigned_worker() {
                *loads.entry(worker.to_owned()).or_insert(0) += 1;
            }
        }
        loads
    })
}

/// A drain, as shown with its worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainView {
    /// When it started, RFC 3339.
    pub since: String,
    /// When the remaining tasks move regardless of the rate, RFC 3339; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Tasks still assigned to the worker.
    pub remaining: usize,
    /// True once the worker holds no task.
    pub done: bool,
}

/// Operators' state of a worker: `ready`, `cordoned`, `draining` or `drained`, with details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlView {
    /// `ready` (takes new tasks), `cordoned` (takes none), `draining` (its tasks are moving
    /// away) or `drained` (a drain emptied it; still cordoned).
    #[schema(example = "ready")]
    pub state: &'static str,
    /// When it was cordoned, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cordoned_at: Option<String>,
    /// The drain, if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainView>,
}

/// The view of `control` for a worker holding `load` tasks.
pub fn control_view(control: Option<&Control>, load: usize) -> ControlView {
    let Some(c) = control else {
        return ControlView {
            state: "ready",
            cordoned_at: None,
            drain: None,
        };
    };
    let drain = c.drain.as_ref().map(|d| DrainView {
        since: rfc3339(d.since_ms),
        deadline: d.deadline_ms.map(rfc3339),
        remaining: load,
        done: load == 0,
    });
    let state = match &drain {
        None => "cordoned",
        Some(d) if d.done => "drained",
        Some(_) => "draining",
    };
    ControlView {
        state,
        cordoned_at: Some(rfc3339(c.cordoned_at_ms)),
        drain,
    }
}

/// Operators' controls by node id, from this master's cache.
pub fn controls(state: &AppState) -> BTreeMap<String, Control> {
    state.schedule.with(|objects, _| {
        objects
            .values()
            .filter_map(|e| match &*e.value {
                Record::Control(id, c) => Some((id.clone(), c.clone())),
                _ => None,
            })
            .collect()
    })
}

/// An absent worker in its grace period.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepartedView {
    /// Node id.
    pub id: String,
    /// When the leader saw it leave, RFC 3339.
    pub left_at: String,
    /// When its tasks may start moving (unless reassignment is frozen), RFC 3339.
    pub reassign_at: String,
    /// Tasks still assigned to it.
    pub tasks: usize,
}

/// The scheduling policy's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulingView {
    /// True while the storm guard freezes reassignment.
    pub frozen: bool,
    /// Why it froze (the last storm, if there was one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it froze, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The workers whose departure froze it.
    pub left: Vec<String>,
    /// When it thawed, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thawed_at: Option<String>,
    /// `operator` or `workers-returned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thawed_by: Option<String>,
    /// Absent workers whose tasks wait out the grace period.
    pub departed: Vec<DepartedView>,
    /// Cordoned workers (draining ones included).
    pub cordoned: usize,
}

/// The scheduling state as this master's cache holds it. Counts resources per worker only
/// when a departed worker needs them.
pub fn scheduling(state: &AppState) -> SchedulingView {
    scheduling_with(state, None)
}

/// [`scheduling`], with the loads per worker when the caller already has them.
pub fn scheduling_with(state: &AppState, loads: Option<&HashMap<String, usize>>) -> SchedulingView {
    let (storm, departed, cordoned) = state.schedule.with(|objects, _| {
        let mut storm: Option<Storm> = None;
        let mut departed = Vec::new();
        let mut cordoned = 0;
        for e in objects.values() {
            match &*e.value {
                Record::Storm(s) => storm = Some(s.clone()),
                Record::Departed(id, d) => departed.push((id.clone(), d.at_ms)),
                Record::Control(..) => cordoned += 1,
            }
        }
        (storm, departed, cordoned)
    });
    let counted;
    let loads = match loads {
        Some(loads) => loads,
        None => {
            counted = if departed.is_empty() {
                Default::default()
            } else {
                self::loads(state)
            };
            &counted
        }
    };
    let grace = i64::try_from(state.scheduling.reassign_after.as_millis()).unwrap_or(i64::MAX);
    let departed = departed
        .into_iter()
        .filter(|(id, _)| loads.get(id).copied().unwrap_or(0) > 0)
        .map(|(id, at)| DepartedView {
            left_at: rfc3339(at),
            reassign_at: rfc3339(at.saturating_add(grace)),
            tasks: loads.get(&id).copied().unwrap_or(0),
            id,
        })
        .collect();
    SchedulingView {
        frozen: storm.as_ref().is_some_and(|s| s.frozen),
        reason: storm.as_ref().map(|s| s.reason.clone()),
        since: storm.as_ref().map(|s| rfc3339(s.since_ms)),
        left: storm.as_ref().map(|s| s.left.clone()).unwrap_or_default(),
        thawed_at: storm.as_ref().and_then(|s| s.thawed_at_ms).map(rfc3339),
        thawed_by: storm.as_ref().and_then(|s| s.thawed_by.clone()),
        departed,
        cordoned,
    }
}
