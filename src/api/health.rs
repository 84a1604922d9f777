//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};

/// Health or readiness status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok`, or what is missing.
    pub status: &'static str,
}

/// Answers while the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// 200 once the caches are synced; 503 before that and during shutdown.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready", body = Status)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    if state.is_ready() {
        (StatusCode::OK, Json(Status { status: "ok" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "not ready",
            }),
        )
    }
}

/// Unknown routes get the same JSON error shape as everything else.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        what: "route",
        name: uri.path().chars().take(200).collect(),
    }
}
