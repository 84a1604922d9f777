//! `GET /api/v1/trends`: the last hour of this master's samples, which the dashboard draws.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::master::trends::{KEEP, TOP_WORKERS};

/// One sample of the cluster as this master's caches held it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendSample {
    /// When, RFC 3339.
    pub at: String,
    /// Tasks by state (`unknown`: no status reported yet).
    pub states: BTreeMap<String, usize>,
    /// Resources no worker holds.
    pub unassigned: usize,
    /// Resources created since the sample before.
    pub creates: u64,
    /// Resources moved between workers since the sample before.
    pub moves: u64,
    /// Tasks that became `failed` since the sample before.
    pub failures: u64,
    /// Tasks held by each of the busiest workers.
    pub loads: BTreeMap<String, usize>,
}

/// This master's recent history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trends {
    /// Milliseconds between samples.
    pub interval_ms: u64,
    /// Most samples kept (an hour's worth).
    pub keep: usize,
    /// Most workers a sample's loads name (the busiest).
    pub top_workers: usize,
    /// Samples, oldest first.
    pub samples: Vec<TrendSample>,
}

/// The last hour of samples: tasks by state, creates, moves and failures per interval, and the
/// busiest workers' loads. Each master keeps its own, in memory, from its caches.
#[utoipa::path(get, path = "/api/v1/trends", tag = "cluster", operation_id = "trends",
    responses((status = 200, description = "Samples, oldest first", body = Trends)))]
pub async fn trends(State(state): State<AppState>) -> Json<Trends> {
    let samples = state
        .trends
        .samples()
        .into_iter()
        .map(|s| TrendSample {
            at: super::status_view::rfc3339(s.at_ms),
            states: s.states,
            unassigned: s.unassigned,
            creates: s.creates,
            moves: s.moves,
            failures: s.failures,
            loads: s.loads,
        })
        .collect();
    Json(Trends {
        interval_ms: u64::try_from(state.trends.every().as_millis()).unwrap_or(u64::MAX),
        keep: KEEP,
        top_workers: TOP_WORKERS,
        samples,
    })
}
