//! A dry run of the leader's placement: what would move where if workers were drained or
//! removed, planned by the same code that moves tasks.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::{ApiError, AppState};
use crate::master::leader::WriteError;

/// Most workers one preview may name.
pub(super) const MAX_PREVIEW_WORKERS: usize = 1_000;
/// Most moves a preview lists (all are counted).
const MAX_PREVIEW_MOVES: usize = 1_000;

/// What to preview.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Workers to drain (node ids).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub drain: Vec<String>,
    /// Workers to take away for good (node ids).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub remove: Vec<String>,
}

/// One planned move.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedMove {
    /// Resource name.
    pub name: String,
    /// The worker it leaves (null: it has none).
    pub from: Option<String>,
    /// The worker it would go to.
    pub to: String,
    /// `drained`, `worker-left` or `created`.
    pub reason: &'static str,
    /// Why that worker: what the task asks of it, then the least loaded.
    pub why: String,
}

/// A resource that would find no worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnplacedView {
    /// Resource name.
    pub name: String,
    /// Why, e.g. `no worker matches region=eu (3 workers have region=us)`.
    pub why: String,
}

/// What would move where.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewAnswer {
    /// Moves, at most 1,000 (see `total`).
    pub moves: Vec<PlannedMove>,
    /// All planned moves.
    pub total: usize,
    /// Planned moves per receiving worker.
    pub to: BTreeMap<String, usize>,
    /// The labels of each receiving worker (its registration metadata).
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Resources that would find no worker with room.
    pub unplaced: usize,
    /// Those resources, at most 1,000, each with why.
    pub waiting: Vec<UnplacedView>,
}

/// What would move where if the named workers were drained or removed, as the leader's
/// placement code plans it, without moving anything.
#[utoipa::path(post, path = "/api/v1/placement/preview", tag = "cluster", operation_id = "preview_placement",
    request_body(content = PreviewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The plan", body = PreviewAnswer)))]
pub async fn preview(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<Json<PreviewAnswer>, ApiError> {
    for (field, list) in [("drain", &request.drain), ("remove", &request.remove)] {
        if list.len() > MAX_PREVIEW_WORKERS {
            return Err(ApiError::bad_field(field, "at most 1000 workers"));
        }
        if list.iter().any(String::is_empty) {
            return Err(ApiError::bad_field(field, "a worker id is never empty"));
        }
    }
    let plan = state
        .leader
        .preview(&request.drain, &request.remove)
        .map_err(|e| match e {
            WriteError::UnknownWorker(id) => {
                let field = if request.drain.contains(&id) {
                    "drain"
                } else {
                    "remove"
                };
                ApiError::StateConflict {
                    slug: "unknown-worker",
                    title: "No such worker",
                    detail: format!(
                        "no worker {:?} is registered or holds tasks",
                        super::error::shown(&id)
                    ),
                    field: Some(field.to_owned()),
                }
            }
            other => state.write_error("cluster", "", other),
        })?;
    let mut to = BTreeMap::new();
    for m in &plan.moves {
        *to.entry(m.to.worker.clone()).or_insert(0) += 1;
    }
    let labels = state.workers.with(|objects, _| {
        objects
            .values()
            .filter(|e| to.contains_key(&e.value.id))
            .map(|e| (e.value.id.clone(), e.value.metadata_map()))
            .collect()
    });
    let total = plan.moves.len();
    let moves = plan
        .moves
        .into_iter()
        .zip(plan.why)
        .take(MAX_PREVIEW_MOVES)
        .map(|(m, why)| PlannedMove {
            name: m.name,
            from: m.from,
            to: m.to.worker,
            reason: m.reason.as_str(),
            why,
        })
        .collect();
    let unplaced = plan.unplaced.len();
    let waiting = plan
        .unplaced
        .into_iter()
        .take(MAX_PREVIEW_MOVES)
        .map(|(name, why)| UnplacedView { name, why })
        .collect();
    Ok(Json(PreviewAnswer {
        moves,
        total,
        to,
        labels,
        unplaced,
        waiting,
    }))
}
