//! The label sets of the metrics: each a small struct, so that a family's labels are typed.

use prometheus_client::encoding::EncodeLabelSet;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, e.g. `/api/v1/resources/{name}`.
    pub route: String,
    /// The method.
    pub method: String,
    /// The status code.
    pub status: u16,
}

/// Labels naming a route and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route.
    pub route: String,
    /// The method.
    pub method: String,
}

/// Labels naming a cache.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `workers`, `resources` or `masters`.
    pub cache: String,
}

/// Labels naming a worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// Node id.
    pub worker: String,
}

/// Labels naming a politeness domain (the busiest ones, then `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    /// The domain, or `other`.
    pub domain: String,
}

/// Labels naming a task state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `running`, `failed`, ..., or `unknown`.
    pub state: String,
}

/// Labels naming why a resource was assigned.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A move's reason (`created`, `worker-left`, `drained`, `rebalanced`, `pinned`,
    /// `restarted`, `constrained`, `preempted`), or why a task waits.
    pub reason: String,
}

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error` (forwarded writes); `started`, `skipped`, `missed` or `replaced`
    /// (schedules' slots); `applied` or `refused` (TLS reloads).
    pub outcome: String,
}

/// Labels of one caller's requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    /// The token's name, or `anonymous`.
    pub caller: String,
    /// `admitted`, `delayed` (over its rate, served after waiting its turn), or `limited`
    /// (429: its rate or its streams).
    pub outcome: String,
}
