//! A task's run, through any master: its log (fetched from the worker that runs it: a read,
//! so a follower serves it itself) and a restart (a write, so a follower forwards it).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiPath, ApiQuery};
use super::resources::{checked_name, updated};
use super::{ApiError, AppState};
use crate::model::resource::RESTARTED_FIELD;
use crate::model::status::now_ms;

/// Query of a task's log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Last lines to send, 1 to 10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub tail: Option<usize>,
    /// Keep the response open and send new output as it comes.
    pub follow: Option<bool>,
}

/// The tail of a task's output, from the worker that runs it.
#[utoipa::path(get, path = "/api/v1/resources/{name}/logs", tag = "resources", operation_id = "get_resource_logs",
    params(("name" = String, Path, description = "Resource name"), LogQuery),
    responses(
        (status = 200, description = "The last lines of the task's output (text/plain); with follow=true the response stays open and new output follows", body = String, content_type = "text/plain")))]
pub async fn logs(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let name = checked_name(&raw)?;
    let tail = query.tail.unwrap_or(100);
    if !(1..=10_000).contains(&tail) {
        return Err(ApiError::bad_field(
            "tail",
            "tail must be between 1 and 10000",
        ));
    }
    let entry = state
        .resources
        .get(name)
        .ok_or_else(|| ApiError::NotFound {
            what: "resource",
            name: name.to_owned(),
        })?;
    let Some((worker, address)) = entry.value.assignment() else {
        return Err(ApiError::StateConflict {
            slug: "not-assigned",
            title: "Not assigned",
            detail: format!("no worker runs {name:?} yet, so it has no log"),
            field: None,
        });
    };
    let follow = query.follow.unwrap_or(false);
    let url = format!("http://{address}/tasks/{name}/logs?tail={tail}&follow={follow}");
    let answer = state.forwarder.get_stream(&url).await.map_err(|error| {
        tracing::warn!(%worker, %address, %error, "could not fetch a task log");
        ApiError::unavailable(format!("worker {worker} did not answer; retry"))
    })?;
    match answer.status().as_u16() {
        // The stream ends cleanly when the worker's does, or breaks (the worker stopped): the
        // reader gets what there was, never a broken response.
        200 => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from_stream(
                answer
                    .bytes_stream()
                    .take_while(|chunk| std::future::ready(chunk.is_ok())),
            ),
        )
            .into_response()),
        404 => Err(ApiError::NotFound {
            what: "log of task",
            name: name.to_owned(),
        }),
        status => Err(ApiError::unavailable(format!(
            "worker {worker} answered {status} for the log; retry"
        ))),
    }
}

/// Starts a task again from scratch (a failed one, say): its worker stops the process, if one
/// runs, and starts a new one. The resource keeps its ID and worker.
#[utoipa::path(post, path = "/api/v1/resources/{name}/restart", tag = "resources", operation_id = "restart_resource",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 200, description = "Restarted: the resource with its new version", body = super::resources::ResourceView,
            headers(("x-etcd-revision" = i64, description = "Revision of the write"),
                    ("etag" = String, description = "The new version")))))]
pub async fn restart(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let name = checked_name(&raw)?;
    let at = now_ms();
    let written = state
        .leader
        .update(
            name,
            |r| {
                r.extra
                    .insert(RESTARTED_FIELD.to_owned(), serde_json::Value::from(at));
                Ok(())
            },
            None,
            None,
        )
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    updated(&state, written)
}
