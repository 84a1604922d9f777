//! The cluster: who leads, who this master is, which masters take part in the election, the
//! scheduling policy's state, and the operator's thaw of a storm freeze.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::status_view::rfc3339;
use super::views::{SchedulingView, scheduling};
use super::{ApiError, AppState};

/// A master.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasterView {
    /// Master id.
    pub id: u16,
    /// URL it is reached on.
    pub url: String,
}

/// This master and its role.
#[derive(Debug, Serialize, ToSchema)]
pub struct SelfView {
    /// Master id.
    pub id: u16,
    /// `leader`, `follower` (a leader is known) or `candidate` (none is).
    pub role: &'static str,
}

/// The cluster as this master sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The leader, or null while none is elected.
    pub leader: Option<MasterView>,
    /// This master.
    #[serde(rename = "self")]
    pub me: SelfView,
    /// Masters in the election, oldest campaign first.
    pub masters: Vec<MasterView>,
    /// The scheduling policy's state: the storm guard, departed workers in their grace
    /// period, cordons.
    pub scheduling: SchedulingView,
}

/// The leader, this master's role and the masters in the election.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster", operation_id = "get_cluster",
    responses((status = 200, description = "The cluster", body = ClusterView)))]
pub async fn get(State(state): State<AppState>) -> Json<ClusterView> {
    let leader = state.known_leader().map(|c| MasterView {
        id: c.id,
        url: c.url,
    });
    let role = if state.leader.leadership().is_leader() {
        "leader"
    } else if leader.is_some() {
        "follower"
    } else {
        "candidate"
    };
    let masters = state.candidates.with(|objects, _| {
        let mut all: Vec<_> = objects.values().collect();
        all.sort_by_key(|e| e.create_revision);
        all.iter()
            .map(|e| MasterView {
                id: e.value.id,
                url: e.value.url.clone(),
            })
            .collect()
    });
    Json(ClusterView {
        leader,
        me: SelfView {
            id: state.me.id,
            role,
        },
        masters,
        scheduling: scheduling(&state),
    })
}

/// Ends a storm freeze now; reassignment resumes at the reassignment rate. Without a freeze,
/// nothing changes.
#[utoipa::path(post, path = "/api/v1/cluster/thaw", tag = "cluster", operation_id = "thaw_cluster",
    responses((status = 200, description = "Not frozen (any more)", body = SchedulingView)))]
pub async fn thaw(State(state): State<AppState>) -> Result<Json<SchedulingView>, ApiError> {
    let storm = state
        .leader
        .thaw()
        .await
        .map_err(|e| state.write_error("cluster", "", e))?;
    let mut view = scheduling(&state);
    // This master's cache may not have the write yet: the answer shows what was written.
    if let Some(s) = storm {
        view.frozen = s.frozen;
        view.thawed_at = s.thawed_at_ms.map(rfc3339);
        view.thawed_by = s.thawed_by;
    }
    Ok(Json(view))
}
