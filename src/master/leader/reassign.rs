//! Keeping the placement current during a term, from the caches' change batches, and writing
//! assignments for the resources that need a worker (those of workers released after their
//! grace period, at the reassignment rate, and unassigned ones) in batched, fenced txns, each
//! assignment with its history entry.

use etcd_client::{Compare, CompareOp, TxnOp};
use tracing::{info, warn};

use super::{BATCH, Leader, MOVES, WriteError, assignment_keys};

/// Batches of moves written concurrently.
const IN_FLIGHT: usize = 4;
use crate::etcd::cache::{Change, Event};
use crate::master::leadership::Fence;
use crate::master::placement::{Move, Wants};
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::schedule::Reason;
use crate::model::status::TaskStatus;

impl Leader {
    pub(super) fn on_resources(&self, change: &Change<Resource>, loaded_at: i64) {
        // A change the snapshot of the take-over holds was verified with it. A re-list's
        // differences do not say where keys are: the keys are verified again.
        if change.revision > loaded_at {
            if change.relisted {
                self.reverify_assignments();
            } else {
                self.note_assignments(change);
            }
        }
        let mut placement = self.placement();
        // Every batch after the take-over's copy is a change from what the placement holds
        // (the copy took what was pending before it), and is applied once.
        let now = crate::model::status::now_ms();
        for event in &change.events {
            let wants = match event {
                Event::Added { new, .. } | Event::Modified { new, .. } => Wants::of(&new.value),
                Event::Deleted { .. } => None,
            };
            placement.apply(event, wants, change.revision);
            if let Event::Added { name, new } | Event::Modified { name, new, .. } = event {
                let worker = new.value.assigned_worker();
                // Moves only: a new resource's start is its creation time.
                if let Event::Modified { old, .. } = event
                    && let Some(before) = old.value.assigned_worker()
                    && worker.is_some_and(|w| w != before)
                {
                    self.scheduling().recent.insert(name.to_string(), now);
                }
                let epoch = new.value.epoch(new.mod_revision);
                placement.set_done(name, self.completed_at(name, worker, epoch));
            }
        }
        placement.advance(change.revision);
        let applied = placement.applied();
        drop(placement);
        self.inner.applied.send_replace(applied);
    }

    pub(super) fn on_workers(&self, change: &Change<Worker>, loaded_at: i64) {
        if change.revision <= loaded_at && !change.relisted {
            return;
        }
        let now = crate::model::status::now_ms();
        let mut placement = self.placement();
        let mut scheduling = self.scheduling();
        for event in &change.events {
            match event {
                Event::Added { new, .. } | Event::Modified { new, .. } => {
                    let w = &new.value;
                    let known = placement.has_worker(&w.id);
                    placement.upsert_worker(&w.id, &w.address, w.capacity(), w.labels());
                    if scheduling.departed.remove(&w.id).is_some() {
                        info!(worker = %w.id, tasks = placement.held_by(&w.id), "worker is back: it keeps its tasks");
                    } else if !known {
                        scheduling.rebalance_asked = true;
                    }
                }
                Event::Deleted { old, .. } => {
                    let id = &old.value.id;
                    placement.remove_worker(id, change.revision);
                    scheduling.departed.entry(id.clone()).or_insert(now);
                }
            }
        }
        drop(scheduling);
        if placement.pending() > 0 {
            self.inner.kick.notify_one();
        }
    }

    /// Follows task statuses: a task that completed at its current assignment frees room on
    /// its worker; one started again takes it back.
    pub(super) fn on_statuses(&self, change: &Change<TaskStatus>) {
        let mut freed = false;
        let mut placement = self.placement();
        for event in &change.events {
            let name = event.name();
            let Some(entry) = self.inner.resources.get(name) else {
                continue;
            };
            // A resource changed since the placement's last batch is settled when that change
            // is applied.
            if entry.mod_revision > placement.applied() {
                continue;
            }
            let worker = entry.value.assigned_worker();
            let epoch = entry.value.epoch(entry.mod_revision);
            let done = self.completed_at(name, worker, epoch);
            placement.set_done(&entry.value.name, done);
            freed |= done.is_some();
        }
        if freed && placement.pending() > 0 {
            self.inner.kick.notify_one();
        }
    }

    /// Writes assignments for pending resources, a batch at a time, until none can be made:
    /// unassigned ones freely, those of released workers at the reassignment rate and not while
    /// the storm guard freezes reassignment.
    pub(super) async fn reconcile(&self, fence: &Fence) -> Result<(), WriteError> {
        loop {
            if self.placement().pending() == 0 {
                return Ok(());
            }
            let workers_revision = self.inner.workers.revision();
            let mut orphans = if self.scheduling().frozen() {
                0
            } else {
                self.tokens()
            };
            let mut preemptions = self.preemptions_left();
            // Up to IN_FLIGHT batches written at once: each moves at most MOVES resources (a
            // resource and its history per move), and etcd commits concurrent txns together.
            let mut batches = Vec::with_capacity(IN_FLIGHT);
            for _ in 0..IN_FLIGHT {
                let moves = self.choose(
                    |p| p.plan(MOVES, orphans, preemptions.min(orphans), workers_revision),
                    Vec::len,
                );
                if moves.is_empty() {
                    break;
                }
                // A preemption is a move (its victim's), and counts as one.
                let preempting = moves.iter().filter(|m| m.evicts.is_some()).count();
                let limited = moves.iter().filter(|m| m.reason.rate_limited()).count() + preempting;
                self.spend(limited);
                orphans -= limited.min(orphans);
                preemptions -= preempting.min(preemptions);
                self.preempting(preempting);
                batches.push(moves);
            }
            if batches.is_empty() {
                return Ok(());
            }
            let lookup = |name: &str| self.current(name);
            let results = futures_util::future::join_all(
                batches
                    .iter()
                    .map(|moves| self.write_moves(fence, moves, &lookup)),
            )
            .await;
            let mut progress = false;
            for result in results {
                match result {
                    Ok(applied) => progress |= applied,
                    Err(WriteError::Deposed) => return Err(self.deposed(fence)),
                    Err(e) => {
                        warn!(error = %e, "reassignment failed; will retry");
                        return Ok(());
                    }
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Writes one batch of moves. Returns whether it applied; on any failure the moves are
    /// released and their resources are pending again.
    pub(super) async fn write_moves(
        &self,
        fence: &Fence,
        moves: &[Move],
        lookup: &(dyn Fn(&str) -> Option<(Resource, i64)> + Sync),
    ) -> Result<bool, WriteError> {
        let names: Vec<&str> = moves
            .iter()
            .flat_map(|m| std::iter::once(m.name.as_str()).chain(m.evicts.as_deref()))
            .collect();
        let mut histories = match self.histories(&names).await {
            Ok(h) => h,
            Err(e) => {
                let mut placement = self.placement();
                for m in moves {
                    placement.unplan(m);
                }
                return Err(e);
            }
        };
        let now = crate::model::status::now_ms();
        // Each move is a compare and three or four ops (history, resource, the new worker's
        // key, the old one's delete); moves go into txns of at most BATCH ops.
        let mut groups: Vec<(Vec<Compare>, Vec<TxnOp>, &Move, bool)> =
            Vec::with_capacity(moves.len());
        for m in moves {
            let Some((mut moved, mod_revision)) = lookup(&m.name) else {
                self.placement().unplan(m);
                continue;
            };
            let orphan = !moved.assigned_node.is_empty();
            let from = moved.assigned_worker().map(str::to_owned);
            // A drain's moves name who asked for the drain.
            let actor = match (&m.reason, &from) {
                (Reason::Drained, Some(from)) => self
                    .scheduling()
                    .controls
                    .get(from)
                    .and_then(|c| c.drain.as_ref())
                    .and_then(|d| d.by.clone()),
                _ => None,
            };
            let entry = crate::model::schedule::Assignment {
                reason: m.reason,
                at_ms: now,
                from,
                to: Some(m.to.worker.clone()),
                actor,
            };
            let stored = histories.remove(&m.name).unwrap_or_default();
            let mut history = stored.history;
            self.record_assignment(&mut history, &m.name, entry);
            let mut ops = vec![self.history_put(&m.name, &history)?];
            let before = self.key_holder(&m.name);
            moved.assigned_node = Resource::assigned_node_value(&m.to.worker, &m.to.address);
            let key = self.inner.config.keys.resource_key(&m.name);
            let mut compare = vec![
                Compare::mod_revision(key.as_bytes(), CompareOp::Equal, mod_revision),
                self.history_unchanged(&m.name, stored.version),
            ];
            let value = serde_json::to_vec(&moved)?;
            ops.extend(assignment_keys::ops(
                &self.inner.config.keys,
                &m.name,
                before.as_deref(),
                &moved,
                &value,
            ));
            ops.push(TxnOp::put(key.as_bytes(), value, None));
            if let Some(victim) = &m.evicts {
                let Some((mut evicted, version)) = lookup(victim) else {
                    self.placement().unplan(m);
                    continue;
                };
                let stored = histories.remove(victim).unwrap_or_default();
                let mut history = stored.history;
                let entry = crate::model::schedule::Assignment {
                    reason: Reason::Preempted,
                    at_ms: now,
                    from: evicted.assigned_worker().map(str::to_owned),
                    to: None,
                    actor: None,
                };
                self.record_assignment(&mut history, victim, entry);
                ops.push(self.history_put(victim, &history)?);
                let before = self.key_holder(victim);
                evicted.assigned_node = Default::default();
                let key = self.inner.config.keys.resource_key(victim);
                compare.push(Compare::mod_revision(
                    key.as_bytes(),
                    CompareOp::Equal,
                    version,
                ));
                compare.push(self.history_unchanged(victim, stored.version));
                let value = serde_json::to_vec(&evicted)?;
                ops.extend(assignment_keys::ops(
                    &self.inner.config.keys,
                    victim,
                    before.as_deref(),
                    &evicted,
                    &value,
                ));
                ops.push(TxnOp::put(key.as_bytes(), value, None));
                info!(preempted = %victim, by = %m.name, worker = %m.to.worker, "preemption planned");
            }
            groups.push((compare, ops, m, orphan));
        }
        let mut progress = false;
        let mut rest = groups.into_iter().peekable();
        while rest.peek().is_some() {
            let (mut compares, mut ops, mut writing, mut orphans) =
                (Vec::new(), Vec::new(), Vec::new(), 0u64);
            while let Some((_, group, _, _)) = rest.peek() {
                if !writing.is_empty() && ops.len() + group.len() > BATCH {
                    break;
                }
                let Some((compare, group, m, orphan)) = rest.next() else {
                    break;
                };
                compares.extend(compare);
                ops.extend(group);
                writing.push(m);
                orphans += u64::from(orphan);
            }
            let result = self.txn(fence, compares, ops).await;
            let mut placement = self.placement();
            match result {
                Ok(w) if w.applied => {
                    for m in &writing {
                        self.assigned(&m.name, Some(&m.to.worker));
                        if let Some(victim) = &m.evicts {
                            self.assigned(victim, None);
                            self.inner.metrics.moved(Reason::Preempted.as_str(), 1);
                        }
                        placement.confirm(m.to.token, w.revision);
                        self.inner.metrics.moved(m.reason.as_str(), 1);
                    }
                    info!(
                        count = writing.len(),
                        moved = orphans,
                        revision = w.revision,
                        "resources assigned"
                    );
                    self.inner.metrics.assignments.inc_by(writing.len() as u64);
                    self.inner.metrics.reassignments.inc_by(orphans);
                    progress = true;
                }
                other => {
                    // This txn's moves and those not written yet are pending again.
                    for m in writing.iter().copied().chain(rest.map(|(_, _, m, _)| m)) {
                        placement.unplan(m);
                    }
                    return other.map(|_| progress);
                }
            }
        }
        Ok(progress)
    }
}
