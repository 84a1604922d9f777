//! What a worker serves over HTTP: `/healthz`, its tasks a page at a time, and each task's
//! log, tailed or followed. Read from the worker's own caches; nothing here writes.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::reporter::Reports;
use super::supervisor::Policy;
use super::{HEALTHZ, is_mine};
use crate::etcd::cache::Store;
use crate::model::resource::Resource;
use crate::model::status::TaskStatus;

/// The worker's routes over `state`.
pub(super) fn routes(state: WorkerState) -> Router {
    Router::new()
        .route(HEALTHZ, get(healthz))
        .route("/tasks", get(tasks))
        .route("/tasks/{name}/logs", get(task_log))
        .with_state(state)
}

#[derive(Clone)]
pub(super) struct WorkerState {
    pub(super) node_id: String,
    pub(super) resources: Store<Resource>,
    pub(super) policy: Arc<Policy>,
    pub(super) reports: Reports,
}

/// One task assigned to this worker.
#[derive(Debug, Serialize)]
pub struct TaskView {
    /// Resource id.
    pub id: String,
    /// Resource name.
    pub name: String,
    /// Creation time, Unix nanoseconds.
    pub creation_time: i64,
    /// Its status as this worker last reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

/// The worker's current tasks, a page at a time.
#[derive(Debug, Serialize)]
pub struct TaskList {
    /// This worker's node id.
    pub worker: String,
    /// etcd revision the list reflects.
    pub revision: i64,
    /// Tasks, by name.
    pub items: Vec<TaskView>,
    /// Pass as `continue` for the next page; absent on the last.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// Default page size of `/tasks`.
const TASKS_PAGE: usize = 1000;
/// Largest page size of `/tasks`.
const TASKS_MAX_PAGE: usize = 10_000;

/// Query of `/tasks`.
#[derive(Debug, Deserialize)]
struct TasksQuery {
    /// Page size, 1 to 10000 (default 1000).
    limit: Option<usize>,
    /// The `continue` token of the previous page.
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

/// `GET /tasks`: a page of this worker's tasks in name order. Pages keep one answer small
/// however many tasks the worker holds (a worker with 33,000 tasks kept the high-water of
/// answering them all at once).
async fn tasks(State(state): State<WorkerState>, Query(query): Query<TasksQuery>) -> Response {
    let limit = query.limit.unwrap_or(TASKS_PAGE);
    if !(1..=TASKS_MAX_PAGE).contains(&limit) {
        return (
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {TASKS_MAX_PAGE}\n"),
        )
            .into_response();
    }
    let token = query.continue_token.as_deref();
    if token.is_some_and(|t| crate::model::name::validate(t).is_err()) {
        return (StatusCode::BAD_REQUEST, "not a continue token\n").into_response();
    }
    let from = token.map_or(Bound::Unbounded, Bound::Excluded);
    let (items, revision, more) = state.resources.with(|objects, revision| {
        let mut mine = objects
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(_, e)| e)
            .filter(|e| is_mine(&e.value, &state.node_id))
            .map(|e| TaskView {
                id: e.value.id.to_string(),
                name: e.value.name.to_string(),
                creation_time: e.value.creation_time,
                status: state.reports.get(&e.value.name),
            });
        let items: Vec<TaskView> = mine.by_ref().take(limit).collect();
        let more = mine.next().is_some();
        (items, revision, more)
    });
    let continue_token = more.then(|| items.last().map(|t| t.name.clone())).flatten();
    Json(TaskList {
        worker: state.node_id.clone(),
        revision,
        items,
        continue_token,
    })
    .into_response()
}

/// Healthy, with the live tokio tasks (a leak shows as growth).
async fn healthz() -> Json<serde_json::Value> {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    Json(serde_json::json!({"status": "ok", "tokio_tasks": tasks}))
}

/// Query of a task's log.
#[derive(Debug, Deserialize)]
struct LogQuery {
    /// Last lines to send (default 100, at most 10000).
    tail: Option<usize>,
    /// Keep the response open and send new output as it comes.
    #[serde(default)]
    follow: bool,
}

/// `GET /tasks/{name}/logs`: the tail of a task's output, optionally followed.
async fn task_log(
    State(state): State<WorkerState>,
    Path(name): Path<String>,
    Query(query): Query<LogQuery>,
) -> Response {
    if crate::model::name::validate(&name).is_err() {
        return (StatusCode::BAD_REQUEST, "not a task name\n").into_response();
    }
    let log = state.policy.log_of(&name);
    if !state.policy.task_dir(&name).exists() {
        return (
            StatusCode::NOT_FOUND,
            "this worker has no log of that task\n",
        )
            .into_response();
    }
    let tail = query.tail.unwrap_or(100).min(10_000);
    let head = log.tail(tail).await;
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !query.follow {
        return (text, head).into_response();
    }
    let from = log.end().await;
    let follow =
        futures_util::stream::unfold((log, from, false), |(log, at, started)| async move {
            if started {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let (chunk, next) = log.read_from(at).await;
            Some((Ok::<_, std::io::Error>(chunk), (log, next, true)))
        });
    let body = futures_util::stream::once(async move { Ok(head.into_bytes()) }).chain(follow);
    (text, axum::body::Body::from_stream(body)).into_response()
}
