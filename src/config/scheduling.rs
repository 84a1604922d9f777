//! The leader's scheduling policy: grace period, storm guard, reassignment rate, rebalancing,
//! run history and preemption.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// The leader's scheduling policy. Durations are written like `90s`, `2m` or `1h 30m`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulingConfig {
    /// How long the tasks of a worker whose registration disappeared stay assigned to it; a
    /// worker that registers again with the same node id within it keeps them.
    #[serde(deserialize_with = "duration")]
    pub reassign_after: Duration,
    /// Reassignment freezes when more than this fraction of the workers leave within
    /// `storm_window` ...
    pub storm_fraction: f64,
    /// ... (the window) ...
    #[serde(deserialize_with = "duration")]
    pub storm_window: Duration,
    /// ... and at least this many leave.
    pub storm_min_workers: usize,
    /// Most tasks moved per second (worker left, drained, rebalanced); a token bucket holding
    /// one second's worth.
    pub reassign_rate: f64,
    /// Rebalancing starts when a worker joins, or when the most and least loaded workers differ
    /// by more than this fraction of the mean load; it stops when they differ by at most 1.
    pub rebalance_threshold: f64,
    /// Most tasks rebalancing moves per `rebalance_interval`; 0 turns rebalancing off.
    pub rebalance_max_moves: usize,
    /// See `rebalance_max_moves`.
    #[serde(deserialize_with = "duration")]
    pub rebalance_interval: Duration,
    /// Rebalancing never moves a task that started less than this ago.
    #[serde(deserialize_with = "duration")]
    pub min_runtime: Duration,
    /// Runs kept in each resource's history (and slots passed without a run).
    pub runs_kept: usize,
    /// When true, a waiting task may displace the lowest-priority running task below its own
    /// priority on a worker it fits (a move: rate-limited, never during a storm freeze).
    pub preemption: bool,
    /// Most preemptions per `preemption_interval`, so a flood of high-priority tasks cannot
    /// evict everything at once.
    pub preemption_max: usize,
    /// See `preemption_max`.
    #[serde(deserialize_with = "duration")]
    pub preemption_interval: Duration,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            reassign_after: Duration::from_secs(30),
            storm_fraction: 0.5,
            storm_window: Duration::from_secs(30),
            storm_min_workers: 2,
            reassign_rate: 50.0,
            rebalance_threshold: 0.25,
            rebalance_max_moves: 10,
            rebalance_interval: Duration::from_secs(10),
            min_runtime: Duration::from_secs(30),
            runs_kept: 20,
            preemption: false,
            preemption_max: 10,
            preemption_interval: Duration::from_secs(60),
        }
    }
}
