//! Read-only worker listings, served from the workers cache.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiPath;
use super::{ApiError, AppState, revision_header};
use crate::model::registry::Worker;
use crate::model::schedule::Control;

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
    pub control: super::fleet::ControlView,
}

/// A list of workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    /// Workers, sorted by id.
    pub items: Vec<WorkerView>,
}

/// The API view of a worker with `load` resources and operators' `control`.
pub fn view(worker: &Worker, load: usize, control: Option<&Control>) -> WorkerView {
    WorkerView {
        control: super::fleet::control_view(control, load),
        id: worker.id.clone(),
        address: worker.address.clone(),
        metadata: worker.metadata_map(),
        version: worker.version.clone(),
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

/// Lists the registered workers, sorted by id.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", operation_id = "list_workers",
    responses((status = 200, description = "All workers", body = WorkerList,
        headers(("x-etcd-revision" = i64, description = "etcd revision the cache reflected")))))]
pub async fn list(State(state): State<AppState>) -> impl IntoResponse {
    let loads = loads(&state);
    let controls = super::fleet::controls(&state);
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
        (status = 200, description = "The worker", body = WorkerView),
        (status = 404, description = "No such worker", body = super::Problem,
            content_type = "application/problem+json")))]
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
        name: id.chars().take(200).collect(),
    })?;
    let load = loads(&state).get(&worker.id).copied().unwrap_or(0);
    let controls = super::fleet::controls(&state);
    Ok((
        [revision_header(revision)],
        Json(view(&worker, load, controls.get(&worker.id))),
    ))
}
