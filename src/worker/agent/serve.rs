//! The agent's routes: `PUT /agent/v1/checkpoint`, `GET /agent/v1/run`, and the politeness
//! routes ([`super::acquire`]). Every request carries its run's secret as a bearer token
//! ([`super::refusal`]).

use axum::extract::{Request, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::checkpoints::Outcome;
use super::refusal::{Refusal, authorized};
use super::{Agent, BASE_PATH};
use crate::body::{Read, drain, read_up_to};

pub(super) fn routes(agent: Agent) -> Router {
    Router::new()
        .route(&format!("{BASE_PATH}/checkpoint"), put(put_checkpoint))
        .route(&format!("{BASE_PATH}/run"), get(get_run))
        .route(
            &format!("{BASE_PATH}/acquire"),
            post(super::acquire::acquire),
        )
        .route(
            &format!("{BASE_PATH}/release"),
            post(super::acquire::release),
        )
        .route(
            &format!("{BASE_PATH}/feedback"),
            post(super::acquire::feedback),
        )
        .fallback(|| async { Refusal::NoRoute })
        .with_state(agent)
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
    paths(get_run, put_checkpoint, super::acquire::acquire, super::acquire::release, super::acquire::feedback),
    components(schemas(RunView, StoredView, super::acquire::AcquireRequest, super::acquire::AcquireView,
        super::acquire::ReleaseRequest, super::acquire::FeedbackRequest)),
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
