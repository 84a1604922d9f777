//! The workers: read-only listings from the workers cache, and operators' commands on one
//! worker (cordon, uncordon, drain), which are writes that followers forward to the leader.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiPath, optional_json, parse_deadline};
use super::views::{ControlView, WorkerView, control_view, controls, loads, view};
use super::{ApiError, AppState, revision_header};
use crate::model::schedule::Control;

/// A list of workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    /// Workers, sorted by id.
    pub items: Vec<WorkerView>,
}

/// Lists the registered workers, sorted by id.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", operation_id = "list_workers",
    responses((status = 200, description = "All workers", body = WorkerList,
        headers(("x-etcd-revision" = i64, description = "etcd revision the cache reflected")))))]
pub async fn list(State(state): State<AppState>) -> impl IntoResponse {
    let loads = loads(&state);
    let controls = controls(&state);
    let (items, revision) = state.workers.with(|objects, revision| {
        let mut items: Vec<WorkerView> = objects
            .values()
            .map(|e| {
                let id = &e.value.id;
                view(
                    &e.value,
                    loads.get(id).copied().unwrap_or(0),
                    controls.get(id),
                )
            })
            .collect();
        items.sort_by(|a, b| a.id.cmp(&b.id));
        (items, revision)
    });
    ([revision_header(revision)], Json(WorkerList { items }))
}

/// One worker by node id.
#[utoipa::path(get, path = "/api/v1/workers/{id}", tag = "workers", operation_id = "get_worker",
    params(("id" = String, Path, description = "Node id, e.g. go.micro.server.worker-2")),
    responses(
        (status = 200, description = "The worker", body = WorkerView)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let revision = state.workers.revision();
    let found = state.workers.with(|objects, _| {
        objects
            .get(id.as_str())
            .map(|e| e.value.clone())
            .or_else(|| {
                objects
                    .values()
                    .find(|e| e.value.id == id)
                    .map(|e| e.value.clone())
            })
    });
    let worker = found.ok_or_else(|| ApiError::NotFound {
        what: "worker",
        name: super::error::shown(&id),
    })?;
    let load = loads(&state).get(&worker.id).copied().unwrap_or(0);
    let controls = controls(&state);
    Ok((
        [revision_header(revision)],
        Json(view(&worker, load, controls.get(&worker.id))),
    ))
}
/// The answer to cordon, uncordon and drain: the worker's id and operators' state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlAnswer {
    /// Node id.
    pub id: String,
    /// Its state.
    #[serde(flatten)]
    pub control: ControlView,
}

fn answer(state: &AppState, id: &str, control: Option<&Control>) -> Json<ControlAnswer> {
    let load = loads(state).get(id).copied().unwrap_or(0);
    Json(ControlAnswer {
        id: id.to_owned(),
        control: control_view(control, load),
    })
}

/// Cordons a worker: it takes no new task; what it holds stays.
#[utoipa::path(post, path = "/api/v1/workers/{id}/cordon", tag = "workers", operation_id = "cordon_worker",
    params(("id" = String, Path, description = "Node id of a registered worker")),
    responses(
        (status = 200, description = "Cordoned", body = ControlAnswer)))]
pub async fn cordon(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ControlAnswer>, ApiError> {
    let control = state
        .leader
        .cordon(&id)
        .await
        .map_err(|e| state.write_error("worker", &id, e))?;
    Ok(answer(&state, &id, Some(&control)))
}

/// Lifts a worker's cordon, and stops its drain.
#[utoipa::path(post, path = "/api/v1/workers/{id}/uncordon", tag = "workers", operation_id = "uncordon_worker",
    params(("id" = String, Path, description = "Node id of a registered or cordoned worker")),
    responses(
        (status = 200, description = "Ready again", body = ControlAnswer)))]
pub async fn uncordon(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ControlAnswer>, ApiError> {
    state
        .leader
        .uncordon(&id)
        .await
        .map_err(|e| state.write_error("worker", &id, e))?;
    Ok(answer(&state, &id, None))
}

/// A drain request. The body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// How long until the remaining tasks move regardless of the reassignment rate: a
    /// duration such as `90s`, `5m` or `1h 30m`, or a whole number of seconds (longer than
    /// 366 days counts as 366 days). Without one, the drain goes at the rate until done.
    #[schema(value_type = Option<String>, example = "5m")]
    pub deadline: Option<serde_json::Value>,
}

/// Drains a worker: it is cordoned and its tasks move to other workers at the reassignment
/// rate (all of them once the deadline passes). The drain is done when the worker holds none.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", operation_id = "drain_worker",
    params(("id" = String, Path, description = "Node id of a registered worker")),
    request_body(content = DrainRequest, description = "Optional: a deadline", content_type = "application/json"),
    responses(
        (status = 200, description = "Draining", body = ControlAnswer)))]
pub async fn drain(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Result<Json<ControlAnswer>, ApiError> {
    let request = optional_json::<DrainRequest>(&state, req).await?;
    let deadline = parse_deadline(request.deadline.as_ref())?;
    let control = state
        .leader
        .drain(&id, deadline)
        .await
        .map_err(|e| state.write_error("worker", &id, e))?;
    Ok(answer(&state, &id, Some(&control)))
}
