//! What a client can rely on when it talks to any master.
//!
//! - Every response names the master that served it (`X-Served-By`) and the leader as this
//!   master sees it (`X-Leader`), and carries an `X-Etcd-Revision`: for reads, the revision the
//!   serving cache reflected; for writes, the revision of the write (set by the handler).
//! - A response served while the cache's watch is down says so: `X-Cache-Stale: true`.
//! - `?min_revision=N` on any GET waits, bounded, until the serving cache has reached N, so a
//!   client that wrote through one master and reads through another sees its write. When the
//!   cache does not get there in time the answer is 503 with `Retry-After`, never stale data.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::response::Response;

use super::{ApiError, AppState, REVISION_HEADER};

/// The master that served the response (its id).
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");
/// The leader's URL as the serving master sees it; absent while none is known.
pub const LEADER: HeaderName = HeaderName::from_static("x-leader");
/// Present (`true`) when the serving cache's watch is down: what it serves may be stale.
pub const STALE: HeaderName = HeaderName::from_static("x-cache-stale");

/// The cache a path's reads come from, whose revision its answers carry and `min_revision`
/// waits for: a write's revision is reached by the cache that holds the key it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Workers (`/api/v1/workers...`).
    Workers,
    /// Politeness budgets set through the API (`/api/v1/domains...`).
    Budgets,
    /// Resources: everything else.
    Resources,
}

impl Serving {
    /// Which cache serves `path`.
    pub fn of(path: &str) -> Serving {
        if path.starts_with("/api/v1/workers") {
            Serving::Workers
        } else if path.starts_with("/api/v1/domains") {
            Serving::Budgets
        } else {
            Serving::Resources
        }
    }

    /// The revision that cache reflects, and whether its watch is live.
    fn state(self, state: &AppState) -> (i64, bool) {
        match self {
            Serving::Workers => (state.workers.revision(), state.workers.is_live()),
            Serving::Budgets => {
                let budgets = &state.politeness.budgets;
                (budgets.revision(), budgets.is_live())
            }
            Serving::Resources => (state.resources.revision(), state.resources.is_live()),
        }
    }

    /// Waits, at most `wait`, until that cache reflects `wanted`; whether it did.
    async fn reaches(self, state: &AppState, wanted: i64, wait: Duration) -> bool {
        match self {
            Serving::Workers => state.workers.wait_for_revision(wanted, wait).await,
            Serving::Budgets => {
                let budgets = &state.politeness.budgets;
                budgets.wait_for_revision(wanted, wait).await
            }
            Serving::Resources => state.resources.wait_for_revision(wanted, wait).await,
        }
    }
}

fn min_revision(query: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "min_revision" {
            return value
                .parse::<i64>()
                .ok()
                .filter(|r| *r >= 0)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_field("min_revision", "min_revision must be a revision (>= 0)")
                });
        }
    }
    Ok(None)
}

/// Before a read: with `min_revision`, waits (bounded) until the serving cache reflects it.
pub async fn wait_if_asked(state: &AppState, method: &Method, uri: &Uri) -> Result<(), ApiError> {
    if method != Method::GET {
        return Ok(());
    }
    match min_revision(uri.query())? {
        None => Ok(()),
        Some(wanted) => wait_for(state, Serving::of(uri.path()), wanted).await,
    }
}

/// Waits until the serving cache reflects `wanted`. A revision etcd has not reached is no
/// revision any client was given (a client of another cluster, or of an etcd restored from an
/// older backup): 409 at once, since the request is well-formed but the cluster's state
/// conflicts with it. Otherwise the wait is bounded: 503.
async fn wait_for(state: &AppState, serving: Serving, wanted: i64) -> Result<(), ApiError> {
    if serving.state(state).0 >= wanted {
        return Ok(());
    }
    if let Ok(current) = state.leader.current_revision().await
        && wanted > current
    {
        return Err(ApiError::StateConflict {
            slug: "revision-ahead",
            title: "Revision not reached",
            detail: format!(
                "revision {wanted} does not exist yet (etcd is at {current}); pass a revision \
                 this cluster handed out"
            ),
            field: Some("min_revision".to_owned()),
        });
    }
    let wait = Duration::from_millis(state.http.min_revision_wait_ms);
    if serving.reaches(state, wanted, wait).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            detail: format!("this master's cache has not reached revision {wanted} yet; retry"),
            retry_after: 1,
        })
    }
}

/// The visibility headers, on every response; `serving` names the cache that served it.
pub fn stamp(state: &AppState, response: &mut Response, serving: Serving) {
    let headers = response.headers_mut();
    if !headers.contains_key(SERVED_BY) {
        headers.insert(SERVED_BY, HeaderValue::from(state.me.id));
    }
    if !headers.contains_key(LEADER)
        && let Some(url) = state.leader_url()
        && let Ok(value) = HeaderValue::from_str(&url)
    {
        headers.insert(LEADER, value);
    }
    let (revision, live) = serving.state(state);
    if !headers.contains_key(REVISION_HEADER) {
        headers.insert(REVISION_HEADER, HeaderValue::from(revision));
    }
    if !live && !headers.contains_key(STALE) {
        headers.insert(STALE, HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_is_served_by_the_cache_its_writes_reach() {
        assert_eq!(Serving::of("/api/v1/workers/w-1"), Serving::Workers);
        assert_eq!(
            Serving::of("/api/v1/domains/a.org/budget"),
            Serving::Budgets
        );
        assert_eq!(Serving::of("/api/v1/domains"), Serving::Budgets);
        assert_eq!(Serving::of("/api/v1/resources/a"), Serving::Resources);
        assert_eq!(Serving::of("/crawler/resource"), Serving::Resources);
    }

    #[test]
    fn min_revision_is_parsed_or_refused() {
        assert_eq!(min_revision(None).ok(), Some(None));
        assert_eq!(min_revision(Some("limit=1")).ok(), Some(None));
        assert_eq!(
            min_revision(Some("a=1&min_revision=42")).ok(),
            Some(Some(42))
        );
        assert!(min_revision(Some("min_revision=x")).is_err());
        assert!(min_revision(Some("min_revision=-1")).is_err());
        assert!(min_revision(Some("min_revision")).is_err());
    }
}
