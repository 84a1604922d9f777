//! The Prometheus scrape: the process's counters, and gauges read from the caches when it is
//! scraped.

use axum::extract::State;

use super::AppState;
use super::status_view::{StatusView, UNKNOWN};
use super::views::{controls, loads, scheduling_with};
use crate::metrics::{CacheLabels, Metrics, ReasonLabels, StateLabels, WorkerLabels};

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "application/openmetrics-text", body = String)))]
pub async fn render(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let text = state.metrics.render(|m| {
        for (cache, stats, len, revision) in [
            (
                "schedule",
                state.schedule.stats(),
                state.schedule.len(),
                state.schedule.revision(),
            ),
            (
                "workers",
                state.workers.stats(),
                state.workers.len(),
                state.workers.revision(),
            ),
            (
                "resources",
                state.resources.stats(),
                state.resources.len(),
                state.resources.revision(),
            ),
            (
                "statuses",
                state.statuses.stats(),
                state.statuses.len(),
                state.statuses.revision(),
            ),
            (
                "masters",
                state.candidates.stats(),
                state.candidates.len(),
                state.candidates.revision(),
            ),
        ] {
            let labels = CacheLabels {
                cache: cache.to_owned(),
            };
            m.cache_objects.get_or_create(&labels).set(len as i64);
            m.cache_revision.get_or_create(&labels).set(revision);
            Metrics::catch_up(&m.watch_events.get_or_create(&labels), stats.events);
            Metrics::catch_up(&m.relists.get_or_create(&labels), stats.lists);
            Metrics::catch_up(&m.coalesced.get_or_create(&labels), stats.coalesced);
            Metrics::catch_up(&m.malformed.get_or_create(&labels), stats.malformed);
        }
        m.is_leader
            .set(i64::from(state.leader.leadership().is_leader()));
        m.ready.set(i64::from(state.is_ready()));
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        m.runtime_tasks.set(tasks as i64);
        // One pass over the resources for every figure that needs loads.
        let loads = loads(&state);
        let scheduling = scheduling_with(&state, Some(&loads));
        m.frozen.set(i64::from(scheduling.frozen));
        m.cordoned.set(scheduling.cordoned as i64);
        m.departed.set(scheduling.departed.len() as i64);
        let draining = controls(&state)
            .iter()
            .filter(|(id, c)| c.drain.is_some() && loads.get(*id).copied().unwrap_or(0) > 0)
            .count();
        m.draining.set(draining as i64);
        m.workers.set(state.workers.len() as i64);
        m.worker_load.clear();
        for (worker, load) in loads {
            m.worker_load
                .get_or_create(&WorkerLabels { worker })
                .set(load as i64);
        }
        let mut by_state: std::collections::BTreeMap<String, i64> =
            crate::model::status::TaskState::ALL
                .iter()
                .map(|s| s.as_str())
                .chain([UNKNOWN])
                .map(|s| (s.to_owned(), 0))
                .collect();
        let mut restarts = 0i64;
        state.resources.with(|objects, _| {
            for entry in objects.values() {
                let view = StatusView::of(entry, &state.statuses);
                restarts += i64::from(view.restarts);
                *by_state.entry(view.state).or_insert(0) += 1;
            }
        });
        for (task_state, count) in by_state {
            m.tasks
                .get_or_create(&StateLabels { state: task_state })
                .set(count);
        }
        m.task_restarts.set(restarts);
        domains(&state, m);
        let waiting = state.leader.waiting();
        for wait in crate::model::waiting::Wait::ALL {
            let n = waiting.get(&wait).copied().unwrap_or(0);
            m.pending
                .get_or_create(&ReasonLabels {
                    reason: wait.as_str().to_owned(),
                })
                .set(n as i64);
        }
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Domains shown by name in the metrics; the rest are summed as `other`.
const TOP_DOMAINS: usize = 20;

/// The busiest domains' figures, then the rest as `other`: a bounded number of series however
/// many domains the fleet crawls.
fn domains(state: &AppState, m: &Metrics) {
    m.domain_granted.clear();
    m.domain_used.clear();
    m.domain_waiting.clear();
    let views = state.politeness.views(None);
    let mut other = (0.0, 0.0, 0i64, false);
    for (i, v) in views.iter().enumerate() {
        if i < TOP_DOMAINS {
            let labels = crate::metrics::DomainLabels {
                domain: v.domain.clone(),
            };
            m.domain_granted.get_or_create(&labels).set(v.granted.rate);
            m.domain_used.get_or_create(&labels).set(v.used);
            m.domain_waiting
                .get_or_create(&labels)
                .set(i64::from(v.waiting));
        } else {
            other = (
                other.0 + v.granted.rate,
                other.1 + v.used,
                other.2 + i64::from(v.waiting),
                true,
            );
        }
    }
    if other.3 {
        let labels = crate::metrics::DomainLabels {
            domain: "other".to_owned(),
        };
        m.domain_granted.get_or_create(&labels).set(other.0);
        m.domain_used.get_or_create(&labels).set(other.1);
        m.domain_waiting.get_or_create(&labels).set(other.2);
    }
}
