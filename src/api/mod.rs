//! The HTTP API: a router over the shared [`AppState`].
//!
//! Reads are served from the local caches. Tests drive it with `router(state).oneshot(..)`.

pub mod error;
pub mod health;
pub mod openapi;
pub mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::cache::Store;
use crate::registry::Worker;
use crate::resource::Resource;

pub use error::{ApiError, Problem};

/// Header carrying the etcd revision the serving cache reflected.
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("x-etcd-revision");

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Workers, from the registry prefix.
    pub workers: Store<Worker>,
    /// Resources, from the resources prefix.
    pub resources: Store<Resource>,
    /// Set once shutdown starts, so `/readyz` turns 503 before the listener closes.
    pub shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// State over two caches.
    pub fn new(workers: Store<Worker>, resources: Store<Resource>) -> Self {
        Self {
            workers,
            resources,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True when the caches are synced and shutdown has not started.
    pub fn is_ready(&self) -> bool {
        self.workers.is_ready()
            && self.resources.is_ready()
            && !self.shutting_down.load(Ordering::Acquire)
    }
}

/// The revision header value for a cache revision.
pub fn revision_header(revision: i64) -> (HeaderName, HeaderValue) {
    (REVISION_HEADER, HeaderValue::from(revision))
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/workers", get(workers::list))
        .route("/api/v1/workers/{id}", get(workers::get_one))
        .merge(openapi::routes())
        .fallback(health::not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
