//! A task's checkpoint on any master: what its last run kept (size, epoch, time and the bytes),
//! read from etcd; and its clearing by an operator, a write the leader does.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiPath;
use super::resources::checked_name;
use super::status_view::rfc3339;
use super::{ApiError, AppState, revision_header};

/// A task's checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// Resource name.
    pub name: String,
    /// The worker whose run wrote it.
    pub worker: String,
    /// The assignment epoch of that run.
    pub epoch: i64,
    /// When the task gave it, RFC 3339.
    pub written_at: String,
    /// Its size in bytes.
    pub size: usize,
    /// The etcd revision of its write.
    pub revision: i64,
    /// The bytes, base64 (RFC 4648, with padding).
    pub data: String,
}

/// The task's checkpoint: what its next run, on any worker, starts with.
#[utoipa::path(get, path = "/api/v1/resources/{name}/checkpoint", tag = "resources", operation_id = "get_checkpoint",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 200, description = "Its checkpoint", body = CheckpointView)))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<CheckpointView>, ApiError> {
    let name = checked_name(&raw)?;
    let stored = state
        .leader
        .checkpoint(name)
        .await
        .map_err(|e| state.write_error("resource", name, e))?
        .ok_or_else(|| ApiError::NotFound {
            what: "checkpoint",
            name: name.to_owned(),
        })?;
    let c = stored.checkpoint;
    Ok(Json(CheckpointView {
        name: name.to_owned(),
        worker: c.header.worker,
        epoch: c.header.epoch,
        written_at: rfc3339(c.header.written_ms),
        size: c.data.len(),
        revision: stored.revision,
        data: base64::engine::general_purpose::STANDARD.encode(&c.data),
    }))
}

/// Clears the task's checkpoint, so that its next run starts over (a run going on keeps
/// what it holds, and may checkpoint again). Clearing a task without one changes nothing.
#[utoipa::path(delete, path = "/api/v1/resources/{name}/checkpoint", tag = "resources", operation_id = "clear_checkpoint",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 204, description = "It has none now",
            headers(("x-etcd-revision" = i64, description = "Revision of the write")))))]
pub async fn clear(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let name = checked_name(&raw)?;
    // The leader's cache answers: this runs on the leader, which wrote every resource there.
    if state.resources.get(name).is_none() {
        return Err(ApiError::NotFound {
            what: "resource",
            name: name.to_owned(),
        });
    }
    let cleared = state
        .leader
        .clear_checkpoint(name)
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    Ok((StatusCode::NO_CONTENT, [revision_header(cleared)]))
}
