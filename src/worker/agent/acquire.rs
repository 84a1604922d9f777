//! The politeness routes: `POST /agent/v1/acquire` before each fetch, `POST /agent/v1/release`
//! after it, and `POST /agent/v1/feedback` when a site pushes back. Answered from the
//! worker's memory ([`super::pacer`]).

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Agent;
use super::pacer::Acquired;
use super::refusal::{Refusal, authorized_run, live_token};
use crate::body::{Read, drain, read_up_to};
use crate::model::politeness::host_of;

/// Largest body these routes read.
const BODY_LIMIT: usize = 16 * 1024;
/// Longest an acquire may wait for its slot.
pub const MAX_WAIT_MS: u64 = 30_000;

/// A request for one fetch's slot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The URL about to be fetched (its host decides the budget) ...
    #[serde(default)]
    pub url: Option<String>,
    /// ... or the host or domain, when there is no URL.
    #[serde(default)]
    pub domain: Option<String>,
    /// How long to wait for a slot before answering "not now", in ms (at most 30000; 0: answer
    /// at once).
    #[serde(default)]
    pub wait_ms: u64,
}

/// The answer to an acquire.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcquireView {
    /// True: fetch now, then release `permit`.
    pub granted: bool,
    /// The budget's domain this counts against.
    pub domain: String,
    /// The permit to release, when granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit: Option<u64>,
    /// When not granted: ask again after this many ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A permit given back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The permit an acquire granted.
    pub permit: u64,
}

/// A site's push-back, as a task saw it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The URL fetched ...
    #[serde(default)]
    pub url: Option<String>,
    /// ... or its host or domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// The HTTP status the site answered; 429 and 503 shrink the domain's budget fleet-wide.
    #[serde(default)]
    pub status: Option<u16>,
    /// The `Crawl-delay` of the site's robots.txt, in seconds: caps the domain at one request
    /// per delay, one at a time.
    #[serde(default)]
    pub crawl_delay_s: Option<f64>,
}

/// The body, read whole and parsed.
async fn parsed<T: DeserializeOwned>(req: Request) -> Result<T, Refusal> {
    let mut stream = req.into_body().into_data_stream();
    let data = match read_up_to(&mut stream, BODY_LIMIT).await {
        Read::Whole(data) => data,
        Read::Over => {
            let drained = drain(stream).await;
            return Err(Refusal::TooLarge {
                limit: BODY_LIMIT,
                drained,
            });
        }
        Read::Broken(error) => return Err(Refusal::Unreadable(error)),
    };
    serde_json::from_slice(&data).map_err(|e| Refusal::Invalid {
        field: "body",
        detail: format!("not the expected JSON: {e}"),
    })
}

/// The host a request names by `url` or `domain`, one of them.
fn host(url: Option<&str>, domain: Option<&str>) -> Result<String, Refusal> {
    let named = match (url, domain) {
        (Some(url), None) => url,
        (None, Some(domain)) => domain,
        _ => {
            return Err(Refusal::Invalid {
                field: "url",
                detail: "give exactly one of url and domain".into(),
            });
        }
    };
    host_of(named).map_err(|e| Refusal::Invalid {
        field: e.field,
        detail: e.detail,
    })
}

/// Asks for a slot of the site's politeness budget for one fetch; waits up to `wait_ms` for
/// it. Granted: fetch, then release the permit. Not granted: ask again after `wait_ms`.
#[utoipa::path(post, path = "/agent/v1/acquire", tag = "agent", operation_id = "agent_acquire",
    security(("run_token" = [])),
    request_body = AcquireRequest,
    responses(
        (status = 200, description = "Granted, or when to ask again", body = AcquireView),
        (status = 401, description = "No token"),
        (status = 403, description = "Not a live run's token"),
        (status = 409, description = "The run no longer holds its task here; stop"),
        (status = 422, description = "A bad url, domain or wait_ms, named in `field`")))]
pub(super) async fn acquire(
    State(agent): State<Agent>,
    req: Request,
) -> Result<Json<AcquireView>, Refusal> {
    let run = authorized_run(&agent, &req);
    let body: AcquireRequest = parsed(req).await?;
    let (token, ticket) = run?;
    let host = host(body.url.as_deref(), body.domain.as_deref())?;
    if body.wait_ms > MAX_WAIT_MS {
        return Err(Refusal::Invalid {
            field: "wait_ms",
            detail: format!("at most {MAX_WAIT_MS}"),
        });
    }
    let wait = Duration::from_millis(body.wait_ms);
    let view = match agent
        .pacer()
        .acquire(&host, &token, &ticket.name, wait)
        .await
    {
        Acquired::Granted { permit, domain } => AcquireView {
            granted: true,
            domain,
            permit: Some(permit),
            wait_ms: None,
        },
        Acquired::Wait { domain, wait } => AcquireView {
            granted: false,
            domain,
            permit: None,
            wait_ms: Some((wait.as_millis() as u64).max(1)),
        },
    };
    Ok(Json(view))
}

/// Gives a permit back after the fetch.
#[utoipa::path(post, path = "/agent/v1/release", tag = "agent", operation_id = "agent_release",
    security(("run_token" = [])),
    request_body = ReleaseRequest,
    responses(
        (status = 204, description = "Released"),
        (status = 401, description = "No token"),
        (status = 403, description = "Not a live run's token"),
        (status = 404, description = "This run holds no such permit"),
        (status = 422, description = "Not a release")))]
pub(super) async fn release(
    State(agent): State<Agent>,
    req: Request,
) -> Result<StatusCode, Refusal> {
    // A run whose task moved may still give its permits back.
    let token = live_token(&agent, &req);
    let body: ReleaseRequest = parsed(req).await?;
    if agent.pacer().release(body.permit, &token?) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Refusal::NoPermit)
    }
}

/// Reports a site's push-back: a 429 or 503 answer, or the `Crawl-delay` its robots.txt
/// asks for. The domain's budget shrinks fleet-wide (see the README for how it recovers).
#[utoipa::path(post, path = "/agent/v1/feedback", tag = "agent", operation_id = "agent_feedback",
    security(("run_token" = [])),
    request_body = FeedbackRequest,
    responses(
        (status = 204, description = "Taken"),
        (status = 401, description = "No token"),
        (status = 403, description = "Not a live run's token"),
        (status = 409, description = "The run no longer holds its task here; stop"),
        (status = 422, description = "A bad url, domain, status or crawl_delay_s, named in `field`")))]
pub(super) async fn feedback(
    State(agent): State<Agent>,
    req: Request,
) -> Result<StatusCode, Refusal> {
    let run = authorized_run(&agent, &req);
    let body: FeedbackRequest = parsed(req).await?;
    run?;
    let host = host(body.url.as_deref(), body.domain.as_deref())?;
    if body.status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(Refusal::Invalid {
            field: "status",
            detail: "an HTTP status, 100 to 599".into(),
        });
    }
    let delay_ms = match body.crawl_delay_s {
        None => None,
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Some((s * 1000.0) as u64),
        Some(_) => {
            return Err(Refusal::Invalid {
                field: "crawl_delay_s",
                detail: "seconds, 0 to 86400".into(),
            });
        }
    };
    let throttled = matches!(body.status, Some(429 | 503));
    agent.pacer().feedback(&host, throttled, delay_ms);
    Ok(StatusCode::NO_CONTENT)
}
