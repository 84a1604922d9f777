//! The agent's routes: `PUT /agent/v1/checkpoint` and `GET /agent/v1/run`. Every request
//! carries its run's secret as a bearer token: none is 401, one no live run holds is 403, and
//! one whose run no longer holds the task's current assignment here is 409.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::checkpoints::Outcome;
use super::{Agent, BASE_PATH, Ticket};
use crate::body::{Read, drain, read_up_to};

pub(super) fn routes(agent: Agent) -> Router {
    Router::new()
        .route(&format!("{BASE_PATH}/checkpoint"), put(put_checkpoint))
        .route(&format!("{BASE_PATH}/run"), get(get_run))
        .fallback(|| async { Refusal::NoRoute })
        .with_state(agent)
}

/// Why the agent refused a request; each is one problem+json answer (RFC 9457).
#[derive(Debug)]
enum Refusal {
    /// No such route.
    NoRoute,
    /// No bearer token.
    NoToken,
    /// A token no live run here holds.
    NotARun,
    /// The run no longer holds its task's current assignment here.
    Stale { name: String, epoch: i64 },
    /// Over `worker.checkpoint_bytes`; `drained` when the rest of the body was read.
    TooLarge { limit: usize, drained: bool },
    /// The body could not be read.
    Unreadable(String),
    /// etcd refused the write: the assignment is gone.
    Moved,
    /// etcd did not answer.
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, detail) = match &self {
            Self::NoRoute => (StatusCode::NOT_FOUND, "no such route".to_owned()),
            Self::NoToken => (
                StatusCode::UNAUTHORIZED,
                "send this run's CRAWLER_AGENT_TOKEN as 'Authorization: Bearer <token>'".to_owned(),
            ),
            Self::NotARun => (
                StatusCode::FORBIDDEN,
                "this token belongs to no live run on this worker (the run ended, or it is another's)"
                    .to_owned(),
            ),
            Self::Stale { name, epoch } => (
                StatusCode::CONFLICT,
                format!(
                    "task {name:?} at epoch {epoch} no longer runs here: it moved, was restarted or deleted; stop"
                ),
            ),
            Self::TooLarge { limit, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a checkpoint holds at most {limit} bytes (worker.checkpoint_bytes)"),
            ),
            Self::Unreadable(error) => (
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {error}"),
            ),
            Self::Moved => (
                StatusCode::CONFLICT,
                "refused: this task's assignment to this worker is gone (it moved or was deleted); \
                 the new run's checkpoint stands; stop"
                    .to_owned(),
            ),
            Self::Unavailable(error) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("etcd did not answer, nothing was written: {error}"),
            ),
        };
        let body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Self::NoToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooLarge { drained: false, .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The live run the request's secret names, still holding its task here.
fn authorized(agent: &Agent, req: &Request) -> Result<Ticket, Refusal> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Refusal::NoToken)?;
    match agent.ticket(token) {
        None => Err(Refusal::NotARun),
        Some(Err(ticket)) => Err(Refusal::Stale {
            name: ticket.name,
            epoch: ticket.epoch,
        }),
        Some(Ok(ticket)) => Ok(ticket),
    }
}

/// What a run is.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The task's name.
    pub task: String,
    /// The assignment epoch it runs at.
    pub epoch: i64,
    /// Most bytes a checkpoint may hold.
    pub checkpoint_bytes: usize,
}

/// Who this run is, as the agent knows it: a way for a task to check its secret.
#[utoipa::path(get, path = "/agent/v1/run", tag = "agent", operation_id = "agent_run",
    security(("run_token" = [])),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 401, description = "No token"),
        (status = 403, description = "Not a live run's token"),
        (status = 409, description = "The run no longer holds its task here")))]
async fn get_run(State(agent): State<Agent>, req: Request) -> Result<Json<RunView>, Refusal> {
    let ticket = authorized(&agent, &req)?;
    Ok(Json(RunView {
        task: ticket.name,
        epoch: ticket.epoch,
        checkpoint_bytes: agent.inner.checkpoint_bytes,
    }))
}

/// How a checkpoint was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredView {
    /// The etcd revision of the write that stored it.
    pub revision: i64,
    /// Bytes given.
    pub bytes: usize,
    /// True when later bytes of the same run replaced these before the write (coalesced: the
    /// last write wins).
    pub superseded: bool,
}

/// Stores the request body as the task's checkpoint, fenced on its assignment here: the next
/// run of the task, on any worker, starts with it in `CRAWLER_CHECKPOINT_FILE`. Waits for the
/// write; writes closer than `worker.checkpoint_interval` are coalesced.
#[utoipa::path(put, path = "/agent/v1/checkpoint", tag = "agent", operation_id = "agent_put_checkpoint",
    security(("run_token" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored", body = StoredView),
        (status = 401, description = "No token"),
        (status = 403, description = "Not a live run's token"),
        (status = 409, description = "The task's assignment here is gone: the write was refused; stop"),
        (status = 413, description = "Over worker.checkpoint_bytes"),
        (status = 503, description = "etcd did not answer; nothing was written")))]
async fn put_checkpoint(
    State(agent): State<Agent>,
    req: Request,
) -> Result<Json<StoredView>, Refusal> {
    let limit = agent.inner.checkpoint_bytes;
    let ticket = authorized(&agent, &req);
    let mut stream = req.into_body().into_data_stream();
    // The body is read (or drained) before any answer, so no answer resets the connection.
    let data = match read_up_to(&mut stream, limit).await {
        Read::Whole(data) => data,
        Read::Over => {
            let drained = drain(stream).await;
            return Err(Refusal::TooLarge { limit, drained });
        }
        Read::Broken(error) => return Err(Refusal::Unreadable(error)),
    };
    let ticket = ticket?;
    let bytes = data.len();
    match agent.checkpoint(ticket, data).await {
        Outcome::Stored {
            revision,
            superseded,
        } => Ok(Json(StoredView {
            revision,
            bytes,
            superseded,
        })),
        Outcome::Moved => Err(Refusal::Moved),
        Outcome::Unavailable(error) => Err(Refusal::Unavailable(error)),
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "crawler task agent", description = "What a worker serves its own task processes on loopback, at CRAWLER_AGENT_URL, with CRAWLER_AGENT_TOKEN as the bearer token."),
    paths(get_run, put_checkpoint),
    components(schemas(RunView, StoredView)),
    modifiers(&RunToken)
)]
/// The agent's OpenAPI document (`openapi/agent.json`).
pub struct AgentApi;

struct RunToken;

impl utoipa::Modify for RunToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "run_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
