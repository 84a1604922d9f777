//! How a resource is shown: the resource joined with its worker's report, and why it waits.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::constraints::{self, WaitingView};
use super::schedules::ScheduleView;
use super::status_view::StatusView;
use crate::model::resource::Resource;
use crate::model::status::TaskStatus;

/// The worker a resource is assigned to.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignedNode {
    /// Node id, e.g. `go.micro.server.worker-2`.
    pub id: String,
    /// The worker's address when it was assigned.
    pub address: String,
}

/// A resource, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceView {
    /// Snowflake id, as a decimal string.
    pub id: String,
    /// Name, unique.
    pub name: String,
    /// The worker it is assigned to, or null while no worker has room.
    pub assigned_node: Option<AssignedNode>,
    /// Creation time, RFC 3339.
    pub creation_time: String,
    /// Free-form labels set by users.
    pub labels: BTreeMap<String, String>,
    /// Its schedule, when it recurs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleView>,
    /// Where it may run (see `CreateResource.placement`), when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub placement: Option<serde_json::Value>,
    /// Why it waits for a worker, when it does (absent on event-stream objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingView>,
    /// How its run goes, as its worker reports it (absent on event-stream objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
}

impl ResourceView {
    /// The view of a stored resource.
    pub fn of(r: &Resource) -> Self {
        let created = UNIX_EPOCH + Duration::from_nanos(r.creation_time.max(0) as u64);
        Self {
            id: r.id.to_string(),
            name: r.name.to_string(),
            assigned_node: r.assignment().map(|(id, address)| AssignedNode {
                id: id.to_owned(),
                address: address.to_owned(),
            }),
            creation_time: humantime::format_rfc3339_nanos(created).to_string(),
            labels: r.labels(),
            schedule: r.schedule().map(ScheduleView::of),
            placement: r.constraints().and_then(|c| serde_json::to_value(c).ok()),
            waiting: None,
            status: None,
        }
    }

    /// The view of `r` at `mod_revision` joined with its worker's report (judged against the
    /// assignment) and why it waits.
    pub fn joined(
        r: &Resource,
        mod_revision: i64,
        reported: Option<&TaskStatus>,
        waiting: Option<WaitingView>,
    ) -> Self {
        Self {
            waiting,
            status: Some(StatusView::judge(r, mod_revision, reported)),
            ..Self::of(r)
        }
    }

    /// The view of a resource just written at `revision`, with its status judged and why it
    /// waits, if it does.
    pub fn written(state: &AppState, r: &Resource, revision: i64) -> Self {
        let reported = state.statuses.get(&r.name);
        Self::joined(
            r,
            revision,
            reported.as_ref().map(|e| &*e.value),
            constraints::Fleet::why_one(state, r),
        )
    }
}

/// A page of resources.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceList {
    /// Resources, sorted by name.
    pub items: Vec<ResourceView>,
    /// Token for the next page, absent on the last one.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}
