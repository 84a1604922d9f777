//! Recurring runs: the leader decides each due slot of each schedule
//! ([`crate::model::recurrence`]) in a fenced txn that writes the decision into the resource
//! (and, for a run, a new epoch its worker starts) and into its history, both compared on the
//! versions the decision read. A new leader continues from the last slot written, so a leader
//! change neither skips nor doubles a slot.
//!
//! The [`Due`] queue holds each scheduled resource once, at its next due time, and follows the
//! resources cache; a step pops only what is due, so a schedule that is not due costs nothing
//! per tick.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::MutexGuard;

use etcd_client::{Compare, CompareOp, TxnOp};
use tracing::{debug, warn};

use super::{Leader, WriteError, assignment_keys};
use crate::etcd::cache::{Change, Event, Name, Snapshot};
use crate::master::leadership::Fence;
use crate::model::history::{Passed, Run, Start};
use crate::model::recurrence::{Act, Decision, Outcome, decide};
use crate::model::resource::{EPOCH_FIELD, Resource};
use crate::model::status::{TaskState, now_ms};

/// Decisions written per txn (each is a nested txn of two compares and three or four ops).
const DECISIONS: usize = 40;
/// Txns per step; what is left waits for the next.
const TXNS: usize = 8;
/// How long a decision whose write failed waits before it is tried again, ms.
const RETRY_MS: i64 = 1000;
/// How long after a slot the leader waits for the worker to report the run before it, when
/// no report says whether the run goes (a worker or the cluster coming back), ms.
const UNKNOWN_WAIT_MS: i64 = 10_000;
/// How often it looks again meanwhile, ms; a report of the task decides at once.
const UNKNOWN_POLL_MS: i64 = 2_000;

/// Whether the current run of a resource goes, as the leader knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Going {
    /// It goes, or waits for a worker.
    Yes,
    /// Its worker reported it completed or failed.
    No,
    /// Its worker has not reported this run.
    Unknown,
}

/// Scheduled resources by when they are next due.
#[derive(Debug, Default)]
pub(super) struct Due {
    heap: BinaryHeap<Reverse<(i64, Name)>>,
    at: HashMap<Name, i64>,
    /// Those waiting for their worker to report the run before (decided as soon as it does).
    waiting: HashSet<Name>,
}

impl Due {
    /// Queues `name` at `at`, or takes it out (`None`).
    fn set(&mut self, name: &Name, at: Option<i64>) {
        match at {
            Some(at) => {
                if self.at.insert(Name::clone(name), at) != Some(at) {
                    self.heap.push(Reverse((at, Name::clone(name))));
                }
            }
            None => {
                self.at.remove(&**name);
                self.waiting.remove(&**name);
            }
        }
        // Entries that changed since they were pushed are dropped as they come up; rebuilt
        // when they outnumber the live ones, so the heap stays within twice the schedules.
        if self.heap.len() > 2 * self.at.len() + 1024 {
            self.heap = self
                .at
                .iter()
                .map(|(n, at)| Reverse((*at, Name::clone(n))))
                .collect();
        }
    }

    /// The earliest due time.
    pub(super) fn next(&mut self) -> Option<i64> {
        while let Some(Reverse((at, name))) = self.heap.peek() {
            if self.at.get(&**name) == Some(at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Decides `name` at once if it waits for a report of its run (one just came).
    fn reported(&mut self, name: &str, now: i64) {
        if let Some(name) = self.waiting.take(name) {
            self.set(&name, Some(now));
        }
    }

    /// Takes up to `limit` resources due at or before `now`.
    fn pop(&mut self, now: i64, limit: usize) -> Vec<Name> {
        let mut due = Vec::new();
        while due.len() < limit {
            match self.next() {
                Some(at) if at <= now => {
                    if let Some(Reverse((_, name))) = self.heap.pop() {
                        self.at.remove(&*name);
                        self.waiting.remove(&*name);
                        due.push(name);
                    }
                }
                _ => break,
            }
        }
        due
    }

    /// Scheduled resources queued.
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }
}

/// When `r`'s schedule is next due (now or earlier when a slot waits), if ever.
fn due_at(r: &Resource, now: i64) -> Option<i64> {
    let schedule = r.schedule()?;
    let rule = schedule.rule.compile(now).ok()?;
    match decide(&rule, &schedule.progress, now, false) {
        Decision::Wait(at) => Some(at),
        Decision::Act(act) => Some(act.slot),
        Decision::Idle => None,
    }
}

impl Leader {
    pub(super) fn due(&self) -> MutexGuard<'_, Due> {
        self.inner.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues every scheduled resource of a snapshot (a term's take-over).
    pub(super) fn queue_schedules(&self, resources: &Snapshot<Resource>) {
        let now = now_ms();
        let mut due = Due::default();
        for (name, entry) in &resources.objects {
            if entry.value.schedule().is_some() {
                due.set(name, due_at(&entry.value, now));
            }
        }
        tracing::info!(schedules = due.len(), "schedules queued");
        *self.due() = due;
    }

    /// Follows one cache batch: each changed resource is queued at its next due time.
    pub(super) fn follow_schedules(&self, change: &Change<Resource>) {
        let now = now_ms();
        let mut due = self.due();
        for event in &change.events {
            match event {
                Event::Added { name, new } | Event::Modified { name, new, .. } => {
                    if new.value.schedule().is_some() || due.at.contains_key(&**name) {
                        due.set(name, due_at(&new.value, now));
                    }
                }
                Event::Deleted { name, .. } => due.set(name, None),
            }
        }
    }

    /// Follows one batch of statuses: a schedule waiting for a report of its run is decided
    /// now.
    pub(super) fn follow_reports(&self, change: &Change<crate::model::status::TaskStatus>) {
        let now = now_ms();
        let mut due = self.due();
        if due.waiting.is_empty() {
            return;
        }
        for event in &change.events {
            due.reported(event.name(), now);
        }
    }

    /// Whether the run of `r` at `epoch` goes: it waits for a worker, or its worker reported
    /// it going or ended, or has not reported it.
    fn going(&self, r: &Resource, epoch: i64) -> Going {
        let Some(worker) = r.assigned_worker() else {
            return Going::Yes;
        };
        match self.inner.statuses.get(&r.name) {
            Some(s) if s.value.worker == worker && s.value.epoch == epoch => {
                if matches!(s.value.state, TaskState::Completed | TaskState::Failed) {
                    Going::No
                } else {
                    Going::Yes
                }
            }
            _ => Going::Unknown,
        }
    }

    /// Decides the schedules that are due, a bounded number per step.
    pub(super) async fn recurring_step(&self, fence: &Fence) -> Result<(), WriteError> {
        for _ in 0..TXNS {
            let now = now_ms();
            let names = self.due().pop(now, DECISIONS);
            if names.is_empty() {
                return Ok(());
            }
            let mut acts = Vec::new();
            for name in names {
                let Some(entry) = self.inner.resources.get(&name) else {
                    continue;
                };
                let Some(schedule) = entry.value.schedule() else {
                    continue;
                };
                let Ok(rule) = schedule.rule.compile(now) else {
                    continue;
                };
                let epoch = entry.value.epoch(entry.mod_revision);
                let going = self.going(&entry.value, epoch);
                let decision = decide(&rule, &schedule.progress, now, going != Going::No);
                // A run no report speaks of is not skipped at once: its worker may be coming
                // back with the news that it ended.
                if let (Going::Unknown, Decision::Act(act)) = (going, decision)
                    && act.outcome == Outcome::Skipped
                    && now - act.slot < UNKNOWN_WAIT_MS
                {
                    let mut due = self.due();
                    due.set(&name, Some(now + UNKNOWN_POLL_MS));
                    due.waiting.insert(name);
                    continue;
                }
                match decision {
                    Decision::Act(act) => {
                        let first =
                            rule.next_after(schedule.progress.cursor(), schedule.progress.since_ms);
                        acts.push((name, (*entry.value).clone(), entry.mod_revision, act, first));
                    }
                    Decision::Wait(at) => self.due().set(&name, Some(at)),
                    Decision::Idle => {}
                }
            }
            if !acts.is_empty() {
                self.write_decisions(fence, acts, now).await?;
            }
        }
        Ok(())
    }

    async fn write_decisions(
        &self,
        fence: &Fence,
        acts: Vec<(Name, Resource, i64, Act, Option<i64>)>,
        now: i64,
    ) -> Result<(), WriteError> {
        let names: Vec<&str> = acts.iter().map(|(n, ..)| &**n).collect();
        let mut histories = match self.histories(&names).await {
            Ok(h) => h,
            Err(e) => {
                self.retry(acts.iter().map(|(n, ..)| n), now);
                return Err(e);
            }
        };
        let keys = &self.inner.config.keys;
        let kept = self.inner.config.scheduling.runs_kept;
        let mut items = Vec::with_capacity(acts.len());
        for (name, resource, mod_revision, act, first_missed) in &acts {
            let mut r = resource.clone();
            let stored = histories.remove(&**name).unwrap_or_default();
            let mut history = stored.history;
            if let Some(s) = r.extra.schedule_mut() {
                s.progress = act.apply(&s.progress);
            }
            let missed = act.missed + u64::from(act.outcome == Outcome::Missed);
            if missed > 0 {
                let slot_ms = first_missed.unwrap_or(act.slot);
                history.pass(
                    Passed {
                        slot_ms,
                        outcome: Outcome::Missed,
                        count: missed,
                        at_ms: now,
                    },
                    kept,
                );
            }
            if act.outcome.runs() {
                r.extra.remove(EPOCH_FIELD);
                let reason = if act.catch_up {
                    Start::CatchUp
                } else {
                    Start::Scheduled
                };
                let mut run = Run::new(reason, r.assigned_worker(), now);
                run.scheduled_ms = Some(act.slot);
                self.record_run(&mut history, name, run);
            } else {
                r.extra
                    .insert(EPOCH_FIELD.to_owned(), resource.epoch(*mod_revision).into());
                if act.outcome == Outcome::Skipped {
                    history.pass(
                        Passed {
                            slot_ms: act.slot,
                            outcome: Outcome::Skipped,
                            count: 1,
                            at_ms: now,
                        },
                        kept,
                    );
                }
            }
            let value = serde_json::to_vec(&r)?;
            let key = keys.resource_key(name);
            let holder = self.key_holder(name);
            let mut ops = assignment_keys::ops(keys, name, holder.as_deref(), &r, &value);
            ops.push(TxnOp::put(key.as_bytes(), value, None));
            ops.push(self.history_put(name, &history)?);
            let compares = vec![
                Compare::mod_revision(key.as_bytes(), CompareOp::Equal, *mod_revision),
                self.history_unchanged(name, stored.version),
            ];
            items.push((compares, ops));
        }
        let applied = match self.write_each(fence, items).await {
            Ok(applied) => applied,
            Err(e) => {
                self.retry(acts.iter().map(|(n, ..)| n), now);
                return Err(e);
            }
        };
        let metrics = &self.inner.metrics;
        for ((name, r, _, act, _), ok) in acts.iter().zip(applied) {
            if ok {
                self.assigned(name, r.assigned_worker());
                metrics.scheduled(act.outcome.as_str(), 1);
                if act.missed > 0 {
                    metrics.scheduled(Outcome::Missed.as_str(), act.missed);
                }
                metrics
                    .schedule_lateness
                    .observe((now - act.slot).max(0) as f64 / 1000.0);
                debug!(%name, slot = act.slot, outcome = act.outcome.as_str(), "schedule decided");
            } else {
                // The resource or its history changed since read: decided again from the
                // cache once it shows the change.
                warn!(%name, "a schedule's decision was not written; deciding again");
                self.retry(std::iter::once(name), now);
            }
        }
        Ok(())
    }

    fn retry<'a>(&self, names: impl Iterator<Item = &'a Name>, now: i64) {
        let mut due = self.due();
        for name in names {
            due.set(name, Some(now + RETRY_MS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_yields_what_is_due_once_and_forgets_what_changed() {
        let mut due = Due::default();
        let (a, b, c) = (Name::from("a"), Name::from("b"), Name::from("c"));
        due.set(&a, Some(30));
        due.set(&b, Some(10));
        due.set(&c, Some(20));
        due.set(&b, Some(40));
        due.set(&c, None);
        assert_eq!(due.next(), Some(30));
        assert_eq!(due.pop(35, 10), vec![Name::clone(&a)]);
        assert_eq!(due.pop(35, 10), Vec::<Name>::new());
        assert_eq!(due.len(), 1);
        for i in 0..5000 {
            due.set(&b, Some(100 + i));
        }
        assert!(due.heap.len() <= 2 * due.len() + 1024);
        assert_eq!(due.pop(i64::MAX, 10), vec![Name::clone(&b)]);
        assert_eq!(due.next(), None);
        // One waiting for a report is decided when it comes; others are left alone.
        due.set(&a, Some(500));
        due.waiting.insert(Name::clone(&a));
        due.set(&b, Some(900));
        due.reported("b", 50);
        due.reported("a", 50);
        assert_eq!(due.next(), Some(50));
        assert_eq!(due.pop(60, 10), vec![a]);
        assert!(due.waiting.is_empty());
        assert_eq!(due.next(), Some(900));
    }
}
