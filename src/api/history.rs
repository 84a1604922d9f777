//! A resource's assignment history, read from etcd on any master; it survives leader changes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiPath;
use super::status_view::rfc3339;
use super::{ApiError, AppState};
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
    let name = super::resources::checked_name(&raw)?;
    let stored = state
        .leader
        .history(name)
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    let Some(items) = stored else {
        return Err(ApiError::NotFound {
            what: "resource",
            name: name.to_owned(),
        });
    };
    Ok(Json(HistoryView {
        name: name.to_owned(),
        items: items.into_iter().map(item).collect(),
    }))
}

fn item(a: Assignment) -> HistoryItem {
    HistoryItem {
        reason: a.reason.as_str(),
        at: rfc3339(a.at_ms),
        from: a.from,
        to: a.to,
    }
}
