//! The HTTP API: a router over the shared [`AppState`].
//!
//! Reads are served from the local caches. Tests drive it with `router(state).oneshot(..)`.

pub mod audit;
pub mod auth;
pub mod body;
pub mod checkpoints;
pub mod cluster;
pub mod compat;
pub mod consistency;
pub mod constraints;
pub mod dashboard;
pub mod domains;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod history;
pub mod labels;
pub mod listing;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod placement;
pub mod proxy;
pub mod quotas;
pub mod rendered;
pub mod resource_view;
pub mod resources;
pub mod roles;
pub mod schedules;
pub mod status_view;
pub mod tasks;
pub mod trends;
pub mod views;
pub mod workers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::etcd::cache::Store;
use crate::master::election::{Candidate, leader_of};
use crate::master::leader::{Leader, WriteError};
use crate::master::leadership::Term;
use crate::model::registry::Worker;
use crate::model::resource::Resource;

pub use error::{ApiError, Problem};
pub use pipeline::REQUEST_ID;

/// Header carrying the etcd revision the serving cache reflected.
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("x-etcd-revision");

/// What every handler can reach: one `Arc`, so the clone each extractor and middleware makes
/// per request costs one atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// State over `shared`.
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    /// This master.
    pub me: Candidate,
    /// Workers, from the registry prefix.
    pub workers: Store<Worker>,
    /// Resources, from the resources prefix.
    pub resources: Store<Resource>,
    /// Masters taking part in the election, from the election prefix.
    pub candidates: Store<Candidate>,
    /// Task statuses as workers report them, from the status prefix.
    pub statuses: Store<crate::model::status::TaskStatus>,
    /// The scheduling state (cordons, drains, departures, the storm guard).
    pub schedule: Store<crate::model::schedule::Record>,
    /// Politeness budgets, demands and shares.
    pub politeness: domains::Politeness,
    /// The scheduling policy's settings (for the grace period shown with departures).
    pub scheduling: crate::config::SchedulingConfig,
    /// The leader's duties (refuse unless this master leads).
    pub leader: Leader,
    /// Changes for the event stream.
    pub feed: events::Feed,
    /// Each task's view as JSON, rendered once per change.
    pub rendered: rendered::Rendered,
    /// The last hour's samples, for the dashboard's trends.
    pub trends: crate::master::trends::Trends,
    /// Client that forwards writes to the leader.
    pub forwarder: proxy::Forwarder,
    /// Who may use the API.
    pub auth: auth::Auth,
    /// What one caller may take of this master.
    pub quotas: quotas::Quotas,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// HTTP settings.
    pub http: crate::config::HttpConfig,
    /// Cancelled once shutdown starts: `/readyz` turns 503 and event streams end before the
    /// listener closes.
    pub draining: CancellationToken,
}

impl AppParts {
    /// True when the caches are synced, shutdown has not started, and, on the leader, the
    /// take-over is done.
    pub fn is_ready(&self) -> bool {
        self.workers.is_ready()
            && self.resources.is_ready()
            && self.schedule.is_ready()
            && !self.draining.is_cancelled()
            && !matches!(self.leader.leadership().term(), Term::Won(_))
    }

    /// The leader as the candidates cache shows it (the oldest campaign key that names a
    /// master). When that is this master but it does not lead, an older key this cache cannot
    /// read holds the election: no leader is known.
    pub fn known_leader(&self) -> Option<Candidate> {
        leader_of(&self.candidates)
            .map(|(_, c, _)| c)
            .filter(|c| c.url != self.me.url || self.leader.leadership().is_leader())
    }

    /// The leader's URL, when one is known.
    pub fn leader_url(&self) -> Option<String> {
        self.known_leader().map(|c| c.url)
    }

    /// The API error for a failed leader write on the `what` (`resource`, `worker`,
    /// `cluster`) named `name`.
    pub fn write_error(&self, what: &'static str, name: &str, error: WriteError) -> ApiError {
        let leader = self.leader_url().filter(|u| *u != self.me.url);
        error::from_write(error, what, name, leader)
    }
}

/// The revision header value for a cache revision.
pub fn revision_header(revision: i64) -> (HeaderName, HeaderValue) {
    (REVISION_HEADER, HeaderValue::from(revision))
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.http.cors_origins);
    let limit = state.http.max_body_bytes;
    Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/workers", get(workers::list))
        .route("/api/v1/workers/{id}", get(workers::get_one))
        .route("/api/v1/workers/{id}/cordon", post(workers::cordon))
        .route("/api/v1/workers/{id}/uncordon", post(workers::uncordon))
        .route("/api/v1/workers/{id}/drain", post(workers::drain))
        .route("/api/v1/cluster/thaw", post(cluster::thaw))
        .route("/api/v1/placement/preview", post(placement::preview))
        .route("/api/v1/resources/{name}/history", get(history::history))
        .route("/api/v1/resources/{name}/runs", get(history::runs))
        .route(
            "/api/v1/resources",
            get(listing::list).post(resources::create),
        )
        .route(
            "/api/v1/resources/{name}",
            get(resources::get_one)
                .put(resources::replace)
                .patch(resources::patch)
                .delete(resources::delete),
        )
        .route("/api/v1/resources/{name}/logs", get(tasks::logs))
        .route(
            "/api/v1/resources/{name}/checkpoint",
            get(checkpoints::get).delete(checkpoints::clear),
        )
        .route(
            "/api/v1/resources/{name}/restart",
            axum::routing::post(tasks::restart),
        )
        .route("/api/v1/domains", get(domains::list))
        .route("/api/v1/domains/{domain}", get(domains::get_one))
        .route(
            "/api/v1/domains/{domain}/budget",
            get(domains::get_budget)
                .put(domains::set)
                .delete(domains::clear),
        )
        .route("/api/v1/cluster", get(cluster::get))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/summary", get(listing::summary))
        .route("/api/v1/trends", get(trends::trends))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/events", get(events::stream))
        .route(
            "/crawler/resource",
            post(compat::add).delete(compat::remove),
        )
        .merge(openapi::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(state.clone(), pipeline::pipeline))
        .layer(cors)
        // Failures are 503s this code chose and logged with their cause; a bug's 500 is logged
        // at error by `ApiError`. The trace layer's own failure log is therefore debug.
        .layer(
            TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Unknown routes get the same JSON error shape as everything else.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        what: "route",
        name: error::shown(uri.path()),
    }
}

/// CORS for the configured origins only (none by default). The exposed headers let browser
/// code read versions, revisions and who served a response.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            REVISION_HEADER,
            consistency::SERVED_BY,
            consistency::LEADER,
            consistency::STALE,
            REQUEST_ID,
        ])
}
