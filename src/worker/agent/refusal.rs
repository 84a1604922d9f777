//! Why the agent refuses a request, as problem+json (RFC 9457), and who a request's bearer
//! token says it is: none is 401, one no live run holds is 403, and one whose run no longer
//! holds the task's current assignment here is 409.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Agent, Ticket};

/// Why the agent refused a request; each is one problem+json answer (RFC 9457).
#[derive(Debug)]
pub(super) enum Refusal {
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
    /// A field of the request breaks a rule.
    Invalid { field: &'static str, detail: String },
    /// No such permit held by this run.
    NoPermit,
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
                format!("this body may hold at most {limit} bytes (a checkpoint: worker.checkpoint_bytes)"),
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
            Self::Invalid { field, detail } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field}: {detail}"),
            ),
            Self::NoPermit => (
                StatusCode::NOT_FOUND,
                "this run holds no such permit (released, taken back after politeness.hold_limit, or another run's)"
                    .to_owned(),
            ),
        };
        let mut body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Self::Invalid { field, .. } = &self {
            body["field"] = json!(field);
        }
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
pub(super) fn authorized(agent: &Agent, req: &Request) -> Result<Ticket, Refusal> {
    authorized_run(agent, req).map(|(_, ticket)| ticket)
}

/// The bearer token of a request.
fn bearer(req: &Request) -> Result<&str, Refusal> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Refusal::NoToken)
}

/// The secret of a live run here, whether or not it still holds its task.
pub(super) fn live_token(agent: &Agent, req: &Request) -> Result<String, Refusal> {
    let token = bearer(req)?;
    match agent.ticket(token) {
        None => Err(Refusal::NotARun),
        Some(_) => Ok(token.to_owned()),
    }
}

/// The secret and the live run it names, still holding its task here.
pub(super) fn authorized_run(agent: &Agent, req: &Request) -> Result<(String, Ticket), Refusal> {
    let token = bearer(req)?;
    match agent.ticket(token) {
        None => Err(Refusal::NotARun),
        Some(Err(ticket)) => Err(Refusal::Stale {
            name: ticket.name,
            epoch: ticket.epoch,
        }),
        Some(Ok(ticket)) => Ok((token.to_owned(), ticket)),
    }
}
