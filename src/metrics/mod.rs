//! Prometheus metrics, through prometheus-client (the Prometheus project's Rust client), one
//! registry per master so that several masters in one test process keep theirs apart.
//!
//! Request metrics are recorded as requests happen; cache, leadership and worker figures are
//! read from their owners when `/metrics` is scraped, so nothing on a hot path keeps them.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod labels;
mod tls;
pub use labels::*;
pub use tls::TlsMetrics;

/// Every metric of one master.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by route and method.
    pub latency: Family<RouteLabels, Histogram>,
    /// Writes forwarded to the leader, by outcome.
    pub proxied: Family<OutcomeLabels, Counter>,
    /// API requests by caller (a token's name) and whether its quotas admitted them.
    pub callers: Family<CallerLabels, Counter>,
    /// The API's TLS.
    pub tls: TlsMetrics,
    /// Objects per cache.
    pub cache_objects: Family<CacheLabels, Gauge>,
    /// Revision per cache.
    pub cache_revision: Family<CacheLabels, Gauge>,
    /// Watch events applied per cache.
    pub watch_events: Family<CacheLabels, Counter>,
    /// Full lists per cache (the first one and every re-list).
    pub relists: Family<CacheLabels, Counter>,
    /// Malformed values skipped per cache.
    pub malformed: Family<CacheLabels, Counter>,
    /// Changes merged into one already pending for a slow subscriber, per cache.
    pub coalesced: Family<CacheLabels, Counter>,
    /// 1 while this master leads.
    pub is_leader: Gauge,
    /// 1 while this master is ready (what `/readyz` answers).
    pub ready: Gauge,
    /// Terms this master won.
    pub leader_changes: Counter,
    /// Resources assigned by this master as leader (creates and moves).
    pub assignments: Counter,
    /// Resources moved off a worker that left.
    pub reassignments: Counter,
    /// Time the leader spent choosing workers.
    pub placement_seconds: Counter<f64, AtomicU64>,
    /// Workers the leader chose (for creates and moves).
    pub placements: Counter,
    /// Latency of the leader's etcd writes.
    pub etcd_latency: Histogram,
    /// Failed leader etcd writes.
    pub etcd_errors: Counter,
    /// Writes per leader txn (group commit).
    pub txn_writes: Histogram,
    /// Batches etcd refused whole and the leader sent again one write per txn.
    pub txn_splits: Counter,
    /// Batches that waited so long for etcd that the next one was sent beside them.
    pub txn_stuck: Counter,
    /// Compactions of etcd's history this master made (about one master per interval does).
    pub compactions: Counter,
    /// The revision etcd's history was last compacted to by this master.
    pub compacted_revision: Gauge,
    /// Registered workers.
    pub workers: Gauge,
    /// Resources assigned per worker.
    pub worker_load: Family<WorkerLabels, Gauge>,
    /// Requests/s granted to the busiest domains' shares, and to the rest as `other`.
    pub domain_granted: Family<DomainLabels, Gauge<f64, AtomicU64>>,
    /// Requests/s tasks used, likewise.
    pub domain_used: Family<DomainLabels, Gauge<f64, AtomicU64>>,
    /// Requests waiting for a slot, likewise.
    pub domain_waiting: Family<DomainLabels, Gauge>,
    /// Tasks by the state their workers report (`unknown`: no report).
    pub tasks: Family<StateLabels, Gauge>,
    /// Restarts of the tasks now reported, summed.
    pub task_restarts: Gauge,
    /// Time from a task's assignment (as this master saw it) to its process running.
    pub task_start: Histogram,
    /// Assignments written by this master as leader, by reason.
    pub moves: Family<ReasonLabels, Counter>,
    /// 1 while the storm guard freezes reassignment (as this master's cache shows it).
    pub frozen: Gauge,
    /// Workers cordoned (draining ones included).
    pub cordoned: Gauge,
    /// Workers being drained that still hold tasks.
    pub draining: Gauge,
    /// Absent workers in their grace period, holding their tasks.
    pub departed: Gauge,
    /// Live tokio tasks in this process: a leak shows as growth.
    pub runtime_tasks: Gauge,
    /// Schedules' slots decided by this master as leader, by outcome.
    pub schedule_runs: Family<OutcomeLabels, Counter>,
    /// Time from a slot to its decision.
    pub schedule_lateness: Histogram,
    /// Tasks waiting for a worker, by why (the leader's placement; 0 on followers).
    pub pending: Family<ReasonLabels, Gauge>,
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crawler");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
        let proxied = Family::<OutcomeLabels, Counter>::default();
        let callers = Family::<CallerLabels, Counter>::default();
        let tls = TlsMetrics::default();
        tls.register(&mut registry);
        let cache_objects = Family::<CacheLabels, Gauge>::default();
        let cache_revision = Family::<CacheLabels, Gauge>::default();
        let watch_events = Family::<CacheLabels, Counter>::default();
        let relists = Family::<CacheLabels, Counter>::default();
        let malformed = Family::<CacheLabels, Counter>::default();
        let coalesced = Family::<CacheLabels, Counter>::default();
        let is_leader = Gauge::default();
        let ready = Gauge::default();
        let leader_changes = Counter::default();
        let assignments = Counter::default();
        let reassignments = Counter::default();
        let placement_seconds = Counter::<f64, AtomicU64>::default();
        let placements = Counter::default();
        let etcd_latency = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let etcd_errors = Counter::default();
        let txn_writes = Histogram::new(exponential_buckets(1.0, 2.0, 8));
        let txn_splits = Counter::default();
        let txn_stuck = Counter::default();
        let compactions = Counter::default();
        let compacted_revision = Gauge::default();
        let workers = Gauge::default();
        let worker_load = Family::<WorkerLabels, Gauge>::default();
        let domain_granted = Family::<DomainLabels, Gauge<f64, AtomicU64>>::default();
        let domain_used = Family::<DomainLabels, Gauge<f64, AtomicU64>>::default();
        let domain_waiting = Family::<DomainLabels, Gauge>::default();
        let tasks = Family::<StateLabels, Gauge>::default();
        let task_restarts = Gauge::default();
        let task_start = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let moves = Family::<ReasonLabels, Counter>::default();
        let frozen = Gauge::default();
        let cordoned = Gauge::default();
        let draining = Gauge::default();
        let departed = Gauge::default();
        let runtime_tasks = Gauge::default();
        let schedule_runs = Family::<OutcomeLabels, Counter>::default();
        let schedule_lateness = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let pending = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "pending_tasks",
            "Tasks waiting for a worker, by why: no_workers, no_match, dedicated, cordoned, full, \
             queued or grace (counted by the leader)",
            pending.clone(),
        );
        registry.register(
            "schedule_runs",
            "Schedules' slots decided, by outcome",
            schedule_runs.clone(),
        );
        registry.register(
            "schedule_lateness_seconds",
            "Time from a schedule's slot to the leader's decision",
            schedule_lateness.clone(),
        );
        registry.register(
            "runtime_tasks",
            "Live tokio tasks in this process",
            runtime_tasks.clone(),
        );
        registry.register("moves", "Assignments written, by reason", moves.clone());
        registry.register(
            "reassignment_frozen",
            "1 while the storm guard freezes reassignment",
            frozen.clone(),
        );
        registry.register("workers_cordoned", "Cordoned workers", cordoned.clone());
        registry.register(
            "workers_draining",
            "Workers being drained that still hold tasks",
            draining.clone(),
        );
        registry.register(
            "workers_departed",
            "Absent workers in their grace period",
            departed.clone(),
        );
        registry.register("http_requests", "HTTP requests", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "proxied_requests",
            "Writes forwarded to the leader",
            proxied.clone(),
        );
        registry.register(
            "caller_requests",
            "API requests by caller and whether its quotas admitted them",
            callers.clone(),
        );
        registry.register("cache_objects", "Objects in a cache", cache_objects.clone());
        registry.register(
            "cache_revision",
            "etcd revision a cache reflects",
            cache_revision.clone(),
        );
        registry.register("watch_events", "Watch events applied", watch_events.clone());
        registry.register(
            "cache_lists",
            "Full lists (first list and re-lists)",
            relists.clone(),
        );
        registry.register(
            "cache_coalesced_changes",
            "Changes merged into one already pending for a slow subscriber (how far subscribers \
             fall behind; they never lag)",
            coalesced.clone(),
        );
        registry.register(
            "malformed_values",
            "Malformed values skipped",
            malformed.clone(),
        );
        registry.register("is_leader", "1 while this master leads", is_leader.clone());
        registry.register(
            "ready",
            "1 while this master is ready: its caches synced, not shutting down (/readyz)",
            ready.clone(),
        );
        registry.register(
            "leader_changes",
            "Terms this master won",
            leader_changes.clone(),
        );
        registry.register(
            "etcd_compactions",
            "Compactions of etcd's history this master made",
            compactions.clone(),
        );
        registry.register(
            "etcd_compacted_revision",
            "Revision etcd's history was last compacted to by this master",
            compacted_revision.clone(),
        );
        registry.register(
            "assignments",
            "Resources assigned to a worker",
            assignments.clone(),
        );
        registry.register(
            "reassignments",
            "Resources moved off a worker that left",
            reassignments.clone(),
        );
        registry.register(
            "placement_seconds",
            "Time the leader spent choosing workers for resources",
            placement_seconds.clone(),
        );
        registry.register(
            "placements",
            "Workers the leader chose for resources (creates and moves)",
            placements.clone(),
        );
        registry.register(
            "etcd_write_duration_seconds",
            "Latency of the leader's etcd writes",
            etcd_latency.clone(),
        );
        registry.register(
            "etcd_write_errors",
            "Failed leader etcd writes",
            etcd_errors.clone(),
        );
        registry.register(
            "leader_txn_writes",
            "Writes per leader etcd txn: writes that queue while a txn is in flight share the next",
            txn_writes.clone(),
        );
        registry.register(
            "leader_txn_splits",
            "Batches of leader writes etcd refused whole (a key written twice, too many \
             operations, too large) and the leader sent again one write per txn",
            txn_splits.clone(),
        );
        registry.register(
            "leader_txn_stuck",
            "Batches of leader writes still unanswered after 200 ms, which let the next batch go \
             beside them (etcd's raft leader lost, with the proposals it held)",
            txn_stuck.clone(),
        );
        registry.register("workers", "Registered workers", workers.clone());
        registry.register(
            "worker_load",
            "Resources assigned to a worker",
            worker_load.clone(),
        );
        registry.register(
            "domain_granted_rate",
            "Requests/s of politeness shares granted, for the busiest domains and the rest (other)",
            domain_granted.clone(),
        );
        registry.register(
            "domain_used_rate",
            "Requests/s tasks took, for the busiest domains and the rest (other)",
            domain_used.clone(),
        );
        registry.register(
            "domain_waiting",
            "Requests waiting for a politeness slot, for the busiest domains and the rest (other)",
            domain_waiting.clone(),
        );
        registry.register(
            "tasks",
            "Tasks by the state their workers report",
            tasks.clone(),
        );
        registry.register(
            "task_restarts",
            "Restarts of the tasks now reported, summed",
            task_restarts.clone(),
        );
        registry.register(
            "task_start_seconds",
            "Time from a task's assignment to its process running",
            task_start.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            proxied,
            callers,
            tls,
            cache_objects,
            cache_revision,
            watch_events,
            relists,
            malformed,
            coalesced,
            is_leader,
            ready,
            leader_changes,
            assignments,
            reassignments,
            placement_seconds,
            placements,
            etcd_latency,
            etcd_errors,
            txn_writes,
            txn_splits,
            txn_stuck,
            compactions,
            compacted_revision,
            workers,
            worker_load,
            domain_granted,
            domain_used,
            domain_waiting,
            tasks,
            task_restarts,
            task_start,
            moves,
            frozen,
            cordoned,
            draining,
            departed,
            runtime_tasks,
            schedule_runs,
            schedule_lateness,
            pending,
            scrape: Mutex::new(()),
        }
    }

    /// Records one HTTP request.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one API request of `caller`, `admitted` or `limited`.
    pub fn caller(&self, caller: &str, outcome: &str) {
        self.callers
            .get_or_create(&CallerLabels {
                caller: caller.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts `n` assignments written for `reason`.
    pub fn moved(&self, reason: &str, n: u64) {
        self.moves
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts `n` schedule slots decided with `outcome`.
    pub fn scheduled(&self, outcome: &str, n: u64) {
        self.schedule_runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    /// Brings a counter up to `total` (counters mirrored from an owner's monotonic total).
    pub fn catch_up(counter: &Counter, total: u64) {
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// The text exposition, after `refresh` has updated the scrape-time figures.
    pub fn render(&self, refresh: impl FnOnce(&Self)) -> String {
        let _one_scrape_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        refresh(self);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request("/api/v1/resources", "GET", 200, Duration::from_millis(2));
        Metrics::catch_up(&m.assignments, 5);
        Metrics::catch_up(&m.assignments, 3);
        let text = m.render(|m| {
            m.workers.set(2);
        });
        assert!(text.contains(
            "crawler_http_requests_total{route=\"/api/v1/resources\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains("crawler_assignments_total 5"));
        assert!(text.contains("crawler_workers 2"));
        assert!(text.contains("# EOF"));
    }
}
