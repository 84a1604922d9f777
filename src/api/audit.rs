//! The audit trail through the API: the leader drafts an entry for each write it serves (who,
//! what, when, from where, the request id), which the write's own txn stores
//! ([`crate::master::leader::audit`]), or which is stored after the answer with its status
//! when the write stored nothing or was refused; and `GET /api/v1/audit` pages through it.
//!
//! Quota refusals (429) are counted in the metrics, not stored: a flood must not become etcd
//! writes. Other refusals are stored at most [`REFUSALS_PER_SEC`] a second on each leader, and
//! those beyond are counted (`crawler_caller_requests_total{outcome="unrecorded"}`). A
//! follower stores nothing: the writes it forwards are recorded by the leader, and what it
//! refuses itself is in its logs and metrics.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, page_limit};
use super::{ApiError, AppState, proxy, roles};
use crate::master::leader::audit::Pending;
use crate::model::audit::Entry;
use crate::model::status::now_ms;

/// Refused writes recorded a second, at most, by one leader.
pub const REFUSALS_PER_SEC: u32 = 50;

/// An entry drafted for a write this master serves as the leader.
pub struct Draft {
    key: String,
    entry: Entry,
}

/// The segment of `path` that the route's first `{...}` stands for.
fn target(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| r.starts_with('{'))
        .map(|(_, p)| p.chars().take(256).collect())
}

impl Draft {
    /// The draft for `req`, when this master leads and `req` is a write through the API.
    pub fn of(state: &AppState, req: &Request, request_id: &str) -> Option<Self> {
        let path = req.uri().path();
        if !proxy::is_write(req.method())
            || roles::is_open(path)
            || !state.leader.leadership().is_leader()
        {
            return None;
        }
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(path, |p| p.as_str())
            .to_owned();
        let headers = req.headers();
        let request_id = request_id.to_owned();
        let at_ms = now_ms();
        let entry = Entry {
            at_ms,
            caller: "anonymous".into(),
            method: req.method().to_string(),
            target: target(&route, path),
            route,
            peer: req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or_else(|| "unknown".into(), |c| c.0.ip().to_string()),
            forwarded_for: headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect()),
            request_id,
            outcome: "applied".into(),
            status: None,
        };
        Some(Self {
            key: state.leader.audit_key(at_ms, &entry.request_id),
            entry,
        })
    }

    /// Names the caller, once its token is known.
    pub fn caller(&mut self, name: &str) {
        self.entry.caller = name.to_owned();
    }

    /// Runs the handler with the entry pending, so the write's txn stores it; stores it after
    /// the answer when that txn did not.
    pub async fn around(
        self,
        state: &AppState,
        handler: impl Future<Output = Response>,
    ) -> Response {
        let pending = Pending::new(self.key.clone(), &self.entry);
        let response = pending.clone().scope(handler).await;
        if !pending.recorded() {
            self.after(state, response.status().as_u16());
        }
        response
    }

    /// Stores the entry, in the background, with the answer's `status`.
    pub fn after(mut self, state: &AppState, status: u16) {
        let success = (200..300).contains(&status);
        if status == 429 {
            return;
        }
        if !success && !refusals_admitted() {
            state.metrics.caller(&self.entry.caller, "unrecorded");
            return;
        }
        self.entry.outcome = if success { "answered" } else { "refused" }.into();
        self.entry.status = Some(status);
        let leader = state.leader.clone();
        tokio::spawn(async move {
            if let Err(error) = leader.record(self.key, &self.entry).await {
                tracing::warn!(%error, request_id = %self.entry.request_id, "an audit entry was not stored");
            }
        });
    }
}

fn refusals_admitted() -> bool {
    static LIMIT: OnceLock<governor::DefaultDirectRateLimiter> = OnceLock::new();
    let per_sec = NonZeroU32::new(REFUSALS_PER_SEC).unwrap_or(NonZeroU32::MIN);
    LIMIT
        .get_or_init(|| governor::RateLimiter::direct(governor::Quota::per_second(per_sec)))
        .check()
        .is_ok()
}

/// Query of the audit trail.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Most entries, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Entries older than this cursor (a page's `next`).
    #[param(pattern = "^[!-~]{1,128}$")]
    pub before: Option<String>,
    /// Only this caller's entries.
    pub caller: Option<String>,
    /// Only entries naming this resource, worker or domain.
    pub target: Option<String>,
    /// Only `applied`, `answered` or `refused` entries.
    pub outcome: Option<String>,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<Entry>,
    /// The cursor of the next (older) page, when there may be one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Entries of the audit trail, newest first, read from etcd by any master. Filters apply to
/// the entries scanned for a page (at most ten times `limit`): a page may hold fewer than
/// `limit` and still have a `next`.
#[utoipa::path(get, path = "/api/v1/audit", tag = "cluster", operation_id = "audit_trail",
    params(AuditQuery),
    responses((status = 200, description = "Entries, newest first", body = AuditPage)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = page_limit(query.limit, 100, 1000)?;
    if let Some(before) = &query.before
        && (before.is_empty()
            || before.len() > 128
            || !before.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ApiError::bad_field(
            "before",
            "before must be a page's next cursor",
        ));
    }
    let (scanned, more) = state
        .leader
        .audit_page(query.before.as_deref(), limit * 10)
        .await
        .map_err(|e| state.write_error("cluster", "audit", e))?;
    let keep = |e: &Entry| {
        query.caller.as_ref().is_none_or(|c| *c == e.caller)
            && query
                .target
                .as_ref()
                .is_none_or(|t| Some(t) == e.target.as_ref())
            && query.outcome.as_ref().is_none_or(|o| *o == e.outcome)
    };
    let total = scanned.len();
    let mut entries = Vec::with_capacity(limit);
    let mut consumed: Option<String> = None;
    let mut read = 0;
    for (key, entry) in scanned {
        if entries.len() == limit {
            break;
        }
        read += 1;
        if keep(&entry) {
            entries.push(entry);
        }
        consumed = Some(key);
    }
    // The next page starts below the last entry this one read, if any is left.
    let next = consumed.filter(|_| more || read < total);
    Ok(Json(AuditPage { entries, next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_path_segment_the_route_names() {
        assert_eq!(
            target("/api/v1/resources/{name}", "/api/v1/resources/a-1"),
            Some("a-1".into())
        );
        assert_eq!(
            target("/api/v1/workers/{id}/drain", "/api/v1/workers/w-2/drain"),
            Some("w-2".into())
        );
        assert_eq!(target("/api/v1/resources", "/api/v1/resources"), None);
    }
}
