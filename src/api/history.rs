//! A resource's history, read from etcd on any master; it survives leader changes: its
//! assignments, and its runs with the slots its schedule passed without one.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiPath;
use super::status_view::rfc3339;
use super::{ApiError, AppState};
use crate::model::history::{History, Passed, Run};
use crate::model::schedule::Assignment;

/// A resource's assignment history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// Resource name.
    pub name: String,
    /// The last 20 assignments, oldest first.
    pub items: Vec<HistoryItem>,
}

/// One assignment.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// `created`, `worker-left`, `drained`, `rebalanced`, `pinned` or `restarted`.
    pub reason: &'static str,
    /// When, RFC 3339.
    pub at: String,
    /// The worker it left.
    pub from: Option<String>,
    /// The worker it went to (null: none had room).
    pub to: Option<String>,
    /// Who asked for it through the API (a token's name); absent for the leader's own moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The last 20 assignments of a resource, with their reasons; they survive leader changes.
#[utoipa::path(get, path = "/api/v1/resources/{name}/history", tag = "resources", operation_id = "resource_history",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 200, description = "Its history", body = HistoryView)))]
pub async fn history(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<HistoryView>, ApiError> {
    let (name, stored) = stored(&state, &raw).await?;
    Ok(Json(HistoryView {
        name: name.to_owned(),
        items: stored.assignments.into_iter().map(item).collect(),
    }))
}

/// The stored history of the resource `raw` names; 404 when it has none.
async fn stored<'a>(state: &AppState, raw: &'a str) -> Result<(&'a str, History), ApiError> {
    let name = super::resources::checked_name(raw)?;
    let stored = state
        .leader
        .history(name)
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    let history = stored.ok_or_else(|| ApiError::NotFound {
        what: "resource",
        name: name.to_owned(),
    })?;
    Ok((name, history))
}

/// A resource's runs, and the slots its schedule passed without one.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsView {
    /// Resource name.
    pub name: String,
    /// The last runs (`scheduling.runs_kept`), oldest first.
    pub items: Vec<RunView>,
    /// The last slots its schedule passed without a run, oldest first.
    pub passed: Vec<PassedView>,
}

/// One run: one epoch of the task.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The epoch (the revision of the write that started it).
    pub epoch: Option<i64>,
    /// Why it started: `created`, `scheduled`, `catch-up`, `restarted`, `moved` or `updated`.
    pub reason: &'static str,
    /// The slot it ran for, RFC 3339, when its schedule started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// The worker it was assigned to (node id).
    pub worker: Option<String>,
    /// When the leader started it, RFC 3339.
    pub started_at: String,
    /// When it ended, RFC 3339; absent while it goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// How long it took, in milliseconds, once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// `completed`, `failed`, `stopped` (a newer run took its place), or `going`.
    pub state: &'static str,
    /// Exit code of its last process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Times its process was started again after failing.
    pub restarts: u32,
    /// The one line its runner reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A slot passed without a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassedView {
    /// The slot, RFC 3339 (the first, when it stands for several).
    pub slot: String,
    /// `skipped` (a run still going) or `missed` (decided too late, or during an outage).
    pub outcome: &'static str,
    /// Slots it stands for.
    pub count: u64,
    /// When the leader decided it, RFC 3339.
    pub decided_at: String,
}

/// The last runs of a resource (why each started, where, how it ended) and the slots its
/// schedule passed without one; they survive leader changes.
#[utoipa::path(get, path = "/api/v1/resources/{name}/runs", tag = "resources", operation_id = "resource_runs",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 200, description = "Its runs", body = RunsView)))]
pub async fn runs(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<RunsView>, ApiError> {
    let (name, stored) = stored(&state, &raw).await?;
    Ok(Json(RunsView {
        name: name.to_owned(),
        items: stored.runs.into_iter().map(run).collect(),
        passed: stored.passed.into_iter().map(passed).collect(),
    }))
}

fn run(r: Run) -> RunView {
    RunView {
        epoch: r.epoch,
        reason: r.reason.as_str(),
        scheduled_for: r.scheduled_ms.map(rfc3339),
        worker: r.worker,
        started_at: rfc3339(r.started_ms),
        ended_at: r.ended_ms.map(rfc3339),
        duration_ms: r.ended_ms.map(|end| (end - r.started_ms).max(0)),
        state: r.end.map_or("going", |e| e.as_str()),
        exit_code: r.exit_code,
        restarts: r.restarts,
        summary: r.summary,
    }
}

fn passed(p: Passed) -> PassedView {
    PassedView {
        slot: rfc3339(p.slot_ms),
        outcome: p.outcome.as_str(),
        count: p.count,
        decided_at: rfc3339(p.at_ms),
    }
}

fn item(a: Assignment) -> HistoryItem {
    HistoryItem {
        reason: a.reason.as_str(),
        at: rfc3339(a.at_ms),
        from: a.from,
        to: a.to,
        actor: a.actor,
    }
}
