//! The one middleware every request passes, its stages in the order they apply:
//!
//! 1. a request id, and the request's log span;
//! 2. the request metrics (route, method, status, latency);
//! 3. the deadline (`http.request_timeout_ms`, then 503);
//! 4. `min_revision` on reads, and the visibility headers on every answer below this point;
//! 5. the whole body, read before anything may answer ([`body`](super::body));
//! 6. the token and the caller's role ([`auth`](super::auth), [`roles`](super::roles));
//! 7. a follower's forwarding of writes to the leader ([`proxy`](super::proxy)).
//!
//! One layer rather than one per stage: each axum `from_fn` layer boxes the request's future
//! and the service below it, and on a cached read the seven layers cost more than the handler.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::{ApiError, AppState, auth, body, consistency, proxy};

/// Header carrying the request id; kept from the client or a forwarding master, else made here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Middleware: the stages above, around the route's handler.
pub async fn pipeline(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Every request gets an id (the caller's, when it sent a sane one), logged on the
    // request's span, sent back, and forwarded to the leader with a proxied write.
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path(), caller = tracing::field::Empty);
    let mut response = counted(&state, req, next).instrument(span).await;
    // A forwarded write's response already carries the id as the leader saw it.
    if !response.headers().contains_key(REQUEST_ID) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Counts the request by matched route, method and status, with its latency; a request that
/// takes longer than `http.request_timeout_ms` is answered 503.
async fn counted(state: &AppState, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let started = Instant::now();
    let limit = Duration::from_millis(state.http.request_timeout_ms);
    let response = match tokio::time::timeout(limit, stamped(state, req, next)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request took too long; retry").into_response(),
    };
    state.metrics.request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Stages 4 to 7 and the handler, the answer stamped with the visibility headers.
async fn stamped(state: &AppState, req: Request, next: Next) -> Response {
    let workers = consistency::serves_workers(req.uri().path());
    let mut response = match admitted(state, req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    };
    consistency::stamp(state, &mut response, workers);
    response
}

/// The request once every stage let it through to this master's handler, or the answer one
/// of them gave instead.
async fn admitted(state: &AppState, req: Request) -> Result<Request, Response> {
    consistency::wait_if_asked(state, req.method(), req.uri())
        .await
        .map_err(IntoResponse::into_response)?;
    let mut req = body::read_whole(state, req).await?;
    let caller = auth::check(state, &req).map_err(IntoResponse::into_response)?;
    tracing::Span::current().record("caller", &*caller.name);
    req.extensions_mut().insert(caller);
    proxy::forward_writes(state, req).await
}
