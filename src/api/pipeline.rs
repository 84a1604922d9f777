//! The one middleware every request passes, its stages in the order they apply:
//!
//! 1. a request id, and the request's log span;
//! 2. the request metrics (route, method, status, latency);
//! 3. the deadline (`http.request_timeout_ms`, then 503);
//! 4. `min_revision` on reads, and the visibility headers on every answer below this point;
//! 5. the whole body, read before anything may answer ([`body`](super::body));
//! 6. the token and the caller's role ([`auth`](super::auth), [`roles`](super::roles));
//! 7. the caller's quotas: its rate, and its open streams ([`quotas`](super::quotas));
//! 8. a follower's forwarding of writes to the leader ([`proxy`](super::proxy));
//! 9. on the leader, a write's audit entry, stored by its txn or after its answer
//!    ([`audit`](super::audit)).
//!
//! One layer rather than one per stage: each axum `from_fn` layer boxes the request's future
//! and the service below it, and on a cached read the seven layers cost more than the handler.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::quotas::{Admitted, StreamSlot};
use super::{ApiError, AppState, audit, auth, body, consistency, proxy, roles};

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

/// Stages 4 to 8 and the handler, the answer stamped with the visibility headers.
async fn stamped(state: &AppState, req: Request, next: Next) -> Response {
    let serving = consistency::Serving::of(req.uri().path());
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let mut draft = audit::Draft::of(state, &req, &request_id);
    let mut response = match admitted(state, req, draft.as_mut()).await {
        Ok((req, slot)) => {
            let handled = async {
                match slot {
                    None => next.run(req).await,
                    Some(slot) => held_open(next.run(req).await, slot),
                }
            };
            match draft {
                Some(draft) => draft.around(state, handled).await,
                None => handled.await,
            }
        }
        Err(refused) => {
            if let Some(draft) = draft {
                draft.after(state, refused.status().as_u16());
            }
            refused
        }
    };
    consistency::stamp(state, &mut response, serving);
    response
}

/// The request once every stage let it through to this master's handler (with the slot it
/// holds when it opens a stream), or the answer one of them gave instead.
async fn admitted(
    state: &AppState,
    req: Request,
    draft: Option<&mut audit::Draft>,
) -> Result<(Request, Option<StreamSlot>), Response> {
    consistency::wait_if_asked(state, req.method(), req.uri())
        .await
        .map_err(IntoResponse::into_response)?;
    let mut req = body::read_whole(state, req).await?;
    let caller = match auth::check(state, &req) {
        Ok(caller) => caller,
        Err(refused) => {
            if let (Some(draft), Some(name)) = (draft, auth::named(state, &req)) {
                draft.caller(&name);
            }
            return Err(refused.into_response());
        }
    };
    tracing::Span::current().record("caller", &*caller.name);
    if let Some(draft) = draft {
        draft.caller(&caller.name);
    }
    let slot = if roles::is_open(req.uri().path()) {
        None
    } else {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let admitted = state.quotas.admit(&caller, peer).await;
        let outcome = match admitted {
            Ok(Admitted::AtOnce) => "admitted",
            Ok(Admitted::AfterWaiting) => "delayed",
            Err(_) => "limited",
        };
        let slot = admitted.and_then(|_| {
            is_stream(&req)
                .then(|| state.quotas.open_stream(&caller, peer))
                .transpose()
        });
        let outcome = if slot.is_err() { "limited" } else { outcome };
        state.metrics.caller(&caller.name, outcome);
        slot.map_err(IntoResponse::into_response)?
    };
    req.extensions_mut().insert(caller);
    Ok((proxy::forward_writes(state, req).await?, slot))
}

/// True for a request that opens a stream: the event stream, or a task's logs followed.
fn is_stream(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == axum::http::Method::GET
        && (path == "/api/v1/events"
            || (path.starts_with("/api/v1/resources/")
                && path.ends_with("/logs")
                && req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "follow=true"))))
}

/// `response` with `slot` held until its body ends or the client goes.
fn held_open(response: Response, slot: StreamSlot) -> Response {
    use futures_util::StreamExt;
    response.map(|body| {
        let chunks = body.into_data_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        });
        axum::body::Body::from_stream(chunks)
    })
}
