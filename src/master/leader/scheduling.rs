//! The leader's side of the scheduling policy: it gathers the inputs of [`crate::master::policy`]
//! (departures, operators' controls, the storm record, the time), acts on its decisions
//! through the placement, and keeps etcd holding what a new leader needs to continue:
//! departure records (so the grace period survives a leader change), the storm record, and the
//! controls, which operators' requests write (`operators.rs`).
//!
//! One step runs after every batch of cache changes and at least once a second, in order:
//! record departures, decide the storm guard, release workers whose grace is over, then move
//! orphans (`reassign.rs`), drain, and rebalance, all three drawing on one token bucket.

use std::collections::{HashMap, HashSet, VecDeque};

use etcd_client::TxnOp;
use tracing::{info, warn};

use super::{BATCH, Leader, MOVES, WriteError};
use crate::master::leadership::Fence;
use crate::master::policy::{self, TokenBucket};
use crate::model::schedule::{Control, Storm};
use crate::model::status::now_ms;

/// The scheduling as the leader keeps it during a term; loaded from etcd by the take-over.
#[derive(Debug)]
pub struct Scheduling {
    /// Absent workers → when they left (Unix ms).
    pub departed: HashMap<String, i64>,
    /// Departures stored in etcd.
    pub recorded: HashSet<String>,
    /// Operators' controls by node id.
    pub controls: HashMap<String, Control>,
    /// The storm guard's record, if there ever was a storm.
    pub storm: Option<Storm>,
    /// Reassignment tokens.
    pub bucket: TokenBucket,
    /// When rebalancing last moved something, Unix ms.
    pub last_rebalance_ms: Option<i64>,
    /// A worker joined: rebalance until the spread is at most 1.
    pub rebalance_asked: bool,
    /// Resources that moved this term → when the leader saw it (Unix ms); forgotten after
    /// `min_runtime`.
    pub recent: HashMap<String, i64>,
    /// When the term started, Unix ms: the start time assumed for tasks that report none.
    pub term_started_ms: i64,
    /// When each recent preemption was written, Unix ms, oldest first.
    pub preempted_at: VecDeque<i64>,
    /// Draining workers → how many of their tasks fit no other worker, as last told.
    pub stranded: HashMap<String, usize>,
}

impl Scheduling {
    /// An empty scheduling at `now_ms`.
    pub fn new(rate: f64, now_ms: i64) -> Self {
        Self {
            departed: HashMap::new(),
            recorded: HashSet::new(),
            controls: HashMap::new(),
            storm: None,
            bucket: TokenBucket::new(rate, now_ms),
            last_rebalance_ms: None,
            rebalance_asked: false,
            recent: HashMap::new(),
            term_started_ms: now_ms,
            preempted_at: VecDeque::new(),
            stranded: HashMap::new(),
        }
    }

    /// How many preemptions the bound allows now: at most `max` in any `interval_ms`.
    pub fn preemptions_left(&mut self, max: usize, interval_ms: i64, now_ms: i64) -> usize {
        while self
            .preempted_at
            .front()
            .is_some_and(|&t| t <= now_ms - interval_ms)
        {
            self.preempted_at.pop_front();
        }
        max.saturating_sub(self.preempted_at.len())
    }

    /// True while the storm guard freezes reassignment.
    pub fn frozen(&self) -> bool {
        self.storm.as_ref().is_some_and(|s| s.frozen)
    }

    /// Adopts a thawed storm record. The grace period of the workers whose departure caused
    /// the storm, and that are still away, starts again now: a storm is more likely the
    /// masters' problem than the workers', and a thaw must not move everything at once.
    pub fn thawed(&mut self, storm: Storm, now_ms: i64) {
        for id in &storm.left {
            if let Some(at) = self.departed.get_mut(id) {
                *at = now_ms;
                self.recorded.remove(id);
            }
        }
        self.storm = Some(storm);
    }

    /// True when worker `id` is being drained.
    pub fn draining(&self, id: &str) -> bool {
        self.controls.get(id).is_some_and(|c| c.drain.is_some())
    }
}

impl Leader {
    /// Departures, the storm guard and releases; then orphans, drains and rebalancing.
    /// Only a lost fence ends the term; any other failure (etcd slow or away) is logged and
    /// the step runs again on the next change or tick.
    pub(super) async fn step(&self, fence: &Fence) -> Result<(), WriteError> {
        let tolerate = |what: &str, result: Result<(), WriteError>| match result {
            Err(WriteError::Deposed) => Err(WriteError::Deposed),
            Err(error) => {
                warn!(%error, step = what, "scheduling step failed; will retry");
                Ok(())
            }
            Ok(()) => Ok(()),
        };
        tolerate("departures", self.record_departures(fence).await)?;
        tolerate("storm guard", self.guard(fence).await)?;
        self.release_workers();
        tolerate("reassignment", self.reconcile(fence).await)?;
        tolerate("assignment keys", self.repair_assignments(fence).await)?;
        tolerate("drains", self.drain_step(fence).await)?;
        tolerate("rebalancing", self.rebalance_step(fence).await)?;
        tolerate("schedules", self.recurring_step(fence).await)?;
        tolerate("run ends", self.record_ends(fence).await)
    }

    /// Gives every absent worker holding tasks a departure time (now, when the leader did not
    /// see it leave), and makes etcd's departure records match.
    async fn record_departures(&self, fence: &Fence) -> Result<(), WriteError> {
        let now = now_ms();
        let holders = self.placement().absent_holders();
        let ops: Vec<TxnOp> = {
            let mut scheduling = self.scheduling();
            for id in holders {
                scheduling.departed.entry(id).or_insert(now);
            }
            let keys = &self.inner.config.keys;
            let mut ops = Vec::new();
            for (id, at) in &scheduling.departed {
                if !scheduling.recorded.contains(id) {
                    let value =
                        serde_json::to_vec(&crate::model::schedule::Departure { at_ms: *at })?;
                    ops.push(TxnOp::put(keys.departure_key(id), value, None));
                }
            }
            for id in &scheduling.recorded {
                if !scheduling.departed.contains_key(id) {
                    ops.push(TxnOp::delete(keys.departure_key(id), None));
                }
            }
            ops
        };
        for chunk in ops.chunks(BATCH) {
            self.write(fence, vec![], chunk.to_vec()).await?;
        }
        if !ops.is_empty() {
            let mut scheduling = self.scheduling();
            scheduling.recorded = scheduling.departed.keys().cloned().collect();
        }
        Ok(())
    }

    /// The storm guard: freezes reassignment when too many workers left at once, thaws when
    /// enough are back.
    async fn guard(&self, fence: &Fence) -> Result<(), WriteError> {
        let config = &self.inner.config.scheduling;
        let now = now_ms();
        let present = self.placement().present_workers();
        let next = {
            let scheduling = self.scheduling();
            match &scheduling.storm {
                Some(s) if s.frozen => policy::thaws(config, s, |id| {
                    scheduling.departed.contains_key(id)
                })
                .then(|| Storm {
                    frozen: false,
                    thawed_at_ms: Some(now),
                    thawed_by: Some("workers-returned".to_owned()),
                    ..s.clone()
                }),
                other => policy::storm(
                    config,
                    // A cordoned worker leaving is expected (an operator is taking it out).
                    &scheduling
                        .departed
                        .iter()
                        .filter(|(id, _)| !scheduling.controls.contains_key(*id))
                        .map(|(id, at)| (id.clone(), *at))
                        .collect(),
                    present,
                    other.as_ref().and_then(|s| s.thawed_at_ms),
                    now,
                ),
            }
        };
        let Some(next) = next else {
            return Ok(());
        };
        self.write_storm(fence, &next).await?;
        if next.frozen {
            warn!(reason = %next.reason, left = ?next.left, of = next.of,
                "storm guard: too many workers left at once; reassignment frozen");
        } else {
            info!(thawed_by = ?next.thawed_by, "storm guard: reassignment thawed");
        }
        Ok(())
    }

    /// Stores the storm record and adopts it.
    pub(super) async fn write_storm(&self, fence: &Fence, storm: &Storm) -> Result<(), WriteError> {
        let key = self.inner.config.keys.storm_key();
        self.write(
            fence,
            vec![],
            vec![TxnOp::put(key, serde_json::to_vec(storm)?, None)],
        )
        .await?;
        self.inner.metrics.frozen.set(i64::from(storm.frozen));
        let mut scheduling = self.scheduling();
        if storm.frozen {
            scheduling.storm = Some(storm.clone());
        } else {
            scheduling.thawed(storm.clone(), storm.thawed_at_ms.unwrap_or_else(now_ms));
        }
        Ok(())
    }

    /// Releases absent workers whose grace is over (or that were being drained), unless
    /// reassignment is frozen; forgets departures that no longer matter.
    fn release_workers(&self) {
        let config = &self.inner.config.scheduling;
        let now = now_ms();
        let mut placement = self.placement();
        let mut scheduling = self.scheduling();
        if scheduling.frozen() {
            return;
        }
        let window = i64::try_from(config.storm_window.as_millis()).unwrap_or(i64::MAX);
        let mut forget = Vec::new();
        for (id, at) in &scheduling.departed {
            if placement.has_worker(id) {
                continue;
            }
            if !placement.is_released(id)
                && (policy::grace_over(config, *at, now) || scheduling.draining(id))
            {
                info!(worker = %id, tasks = placement.held_by(id), "grace period over: its tasks may move");
                placement.release(id);
            }
            if placement.is_released(id) && placement.held_by(id) == 0 && now - at > window {
                forget.push(id.clone());
            }
        }
        for id in forget {
            scheduling.departed.remove(&id);
        }
        let min_runtime = i64::try_from(config.min_runtime.as_millis()).unwrap_or(i64::MAX);
        scheduling.recent.retain(|_, at| now - *at < min_runtime);
    }

    /// Moves tasks off draining workers: at the reassignment rate, or all at once past the
    /// deadline.
    async fn drain_step(&self, fence: &Fence) -> Result<(), WriteError> {
        let drains: Vec<(String, bool)> = {
            let scheduling = self.scheduling();
            let now = now_ms();
            scheduling
                .controls
                .iter()
                .filter_map(|(id, c)| {
                    let d = c.drain.as_ref()?;
                    Some((id.clone(), d.deadline_ms.is_some_and(|t| now >= t)))
                })
                .collect()
        };
        for (id, overdue) in drains {
            loop {
                if !self.placement().has_worker(&id) {
                    break;
                }
                let limit = if overdue {
                    MOVES
                } else {
                    self.tokens().min(MOVES)
                };
                if limit == 0 {
                    break;
                }
                let moves = self.choose(|p| p.plan_drain(&id, limit), Vec::len);
                if moves.is_empty() {
                    // What is left fits no other worker now: it stays, and the operator hears
                    // why once per change.
                    let left = self.placement().held_by(&id);
                    let mut scheduling = self.scheduling();
                    if left > 0 && scheduling.stranded.insert(id.clone(), left) != Some(left) {
                        warn!(worker = %id, tasks = left, "drain: these tasks fit no other worker now (their placement, or no room); they stay until one does (POST /api/v1/placement/preview says why)");
                    }
                    break;
                }
                let n = moves.len();
                let applied = self
                    .write_moves(fence, &moves, &|name| self.current(name))
                    .await?;
                self.spend(n);
                if !applied || !overdue {
                    break;
                }
            }
        }
        Ok(())
    }

    /// While rebalancing is under way, the time until its next round may run, so the loop
    /// wakes then and not at a later tick.
    pub(super) fn next_round_in(&self) -> Option<std::time::Duration> {
        let interval = self.inner.config.scheduling.rebalance_interval.as_millis();
        let scheduling = self.scheduling();
        policy::next_round_in(
            scheduling.last_rebalance_ms,
            scheduling.rebalance_asked,
            i64::try_from(interval).unwrap_or(i64::MAX),
            now_ms(),
        )
        .map(|ms| std::time::Duration::from_millis(ms as u64))
    }

    /// One rebalancing round when due: at most `rebalance_max_moves` per
    /// `rebalance_interval`, never a task younger than `min_runtime`.
    async fn rebalance_step(&self, fence: &Fence) -> Result<(), WriteError> {
        let config = &self.inner.config.scheduling;
        let now = now_ms();
        let interval = i64::try_from(config.rebalance_interval.as_millis()).unwrap_or(i64::MAX);
        let asked = {
            let scheduling = self.scheduling();
            if scheduling.frozen()
                || scheduling
                    .last_rebalance_ms
                    .is_some_and(|t| now - t < interval)
            {
                return Ok(());
            }
            scheduling.rebalance_asked
        };
        let (spread, mean) = self.placement().spread();
        if !policy::rebalance_due(config, asked, spread, mean) {
            if spread <= 1 {
                self.scheduling().rebalance_asked = false;
            }
            return Ok(());
        }
        let limit = config.rebalance_max_moves.min(self.tokens());
        if limit == 0 {
            return Ok(());
        }
        // Copied only when a round runs: this step runs after every batch of changes.
        let (recent, term_started) = {
            let scheduling = self.scheduling();
            (scheduling.recent.clone(), scheduling.term_started_ms)
        };
        let min_runtime = i64::try_from(config.min_runtime.as_millis()).unwrap_or(i64::MAX);
        let movable = |name: &str| {
            let started = self.started(name, &recent, term_started);
            (now - started >= min_runtime).then_some(started)
        };
        let moves = self.choose(|p| p.plan_rebalance(limit, movable), Vec::len);
        if moves.is_empty() {
            return Ok(());
        }
        {
            let mut scheduling = self.scheduling();
            scheduling.rebalance_asked = true;
            scheduling.last_rebalance_ms = Some(now);
        }
        info!(moves = moves.len(), spread, "rebalancing");
        // A round may hold more moves than one txn: written a txn at a time, and what a failed
        // txn leaves unwritten is released.
        let mut chunks = moves.chunks(MOVES);
        while let Some(chunk) = chunks.next() {
            if let Err(e) = self
                .write_moves(fence, chunk, &|name| self.current(name))
                .await
            {
                let mut placement = self.placement();
                for m in chunks.flatten() {
                    placement.unplan(m);
                }
                return Err(e);
            }
            self.spend(chunk.len());
        }
        Ok(())
    }

    /// When the task of resource `name` started, Unix ms: as its worker reports it for the
    /// current assignment, else when this leader saw it move, else the later of its creation
    /// and the term's start (a move under an earlier leader is not known).
    fn started(&self, name: &str, recent: &HashMap<String, i64>, term_started: i64) -> i64 {
        let entry = self.inner.resources.get(name);
        let reported = entry.as_ref().and_then(|e| {
            let status = self.inner.statuses.get(name)?;
            let s = &status.value;
            let current = Some(s.worker.as_str()) == e.value.assigned_worker()
                && s.epoch == e.value.epoch(e.mod_revision);
            current.then_some(s.started_at_ms).flatten()
        });
        let created_ms = entry
            .as_ref()
            .map_or(0, |e| e.value.creation_time / 1_000_000);
        reported
            .or_else(|| recent.get(name).copied())
            .unwrap_or(term_started.max(created_ms))
    }

    /// A resource as the resources cache holds it, with its version.
    pub(super) fn current(&self, name: &str) -> Option<(crate::model::resource::Resource, i64)> {
        let entry = self.inner.resources.get(name)?;
        Some(((*entry.value).clone(), entry.mod_revision))
    }

    /// Reassignment tokens available now.
    pub(super) fn tokens(&self) -> usize {
        self.scheduling().bucket.available(now_ms())
    }

    /// Spends `n` reassignment tokens.
    pub(super) fn spend(&self, n: usize) {
        self.scheduling().bucket.take(n);
    }

    /// How many preemptions may be planned now (0 unless `scheduling.preemption`).
    pub(super) fn preemptions_left(&self) -> usize {
        let config = &self.inner.config.scheduling;
        if !config.preemption {
            return 0;
        }
        let interval = config.preemption_interval.as_millis() as i64;
        self.scheduling()
            .preemptions_left(config.preemption_max, interval, now_ms())
    }

    /// Counts `n` preemptions planned now against the bound.
    pub(super) fn preempting(&self, n: usize) {
        let now = now_ms();
        self.scheduling()
            .preempted_at
            .extend(std::iter::repeat_n(now, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thaw_restarts_the_grace_of_the_workers_still_away() {
        let mut scheduling = Scheduling::new(10.0, 0);
        scheduling.departed.insert("a".into(), 100);
        scheduling.departed.insert("b".into(), 100);
        scheduling.departed.insert("c".into(), 50);
        scheduling.recorded = scheduling.departed.keys().cloned().collect();
        let storm = Storm {
            frozen: false,
            since_ms: 100,
            reason: "2 of 3".into(),
            left: vec!["a".into(), "b".into(), "gone-back".into()],
            of: 3,
            thawed_at_ms: Some(900),
            thawed_by: Some("operator".into()),
        };
        scheduling.thawed(storm, 900);
        assert_eq!(
            (scheduling.departed["a"], scheduling.departed["b"]),
            (900, 900)
        );
        assert_eq!(scheduling.departed["c"], 50, "not part of the storm");
        assert!(
            !scheduling.recorded.contains("a"),
            "rewritten with the new time"
        );
        assert!(scheduling.recorded.contains("c"));
        assert!(!scheduling.frozen());
        assert!(!scheduling.departed.contains_key("gone-back"));
    }
}
