//! The leader's view of who holds what: each worker's load, and which resources need a worker.
//!
//! It keeps counts, not copies (see [`Placement`]); the take-over's copy of the cache starts
//! the sequence of changes it applies, each once. Writes in flight count as *reservations* on
//! their worker until the batch carrying them is applied, so concurrent creates see each
//! other's choices. An absent worker's resources are handed out only once the leader releases
//! it (grace over, no storm) and the workers cache has caught up with the revision that
//! orphaned them. One code path plans every move (`plan.rs`): orphans, a drain, rebalancing,
//! preemption, and a dry run on a clone.
//!
//! Where a task may run (`wants.rs`) bears on every choice: a move never breaks a selector or a
//! dedication, waiting tasks are placed by priority, and a task that fits nowhere says why.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::etcd::cache::{Entry, Event, Name, Store};
use crate::master::assigner::Assigner;
use crate::model::constraints::Labels;
use crate::model::resource::Resource;
use crate::model::schedule::Reason;

mod plan;
mod queue;
mod spread;
mod wants;

pub use plan::Preview;
pub use wants::{Wants, WantsMemo};

/// Movable resources of a donor among which rebalancing picks the youngest.
const REBALANCE_CANDIDATES: usize = 64;

/// A worker chosen for one resource, counted in its load until released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Token to confirm or cancel it.
    pub token: u64,
    /// The worker's node id.
    pub worker: String,
    /// The worker's address.
    pub address: String,
}

/// A resource that needs a worker, with the worker chosen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The resource name.
    pub name: String,
    /// Revision since which it needed a worker (0 for drains and rebalancing).
    pub since: i64,
    /// The worker it leaves, if any.
    pub from: Option<String>,
    /// The chosen worker.
    pub to: Reservation,
    /// Why it moves.
    pub reason: Reason,
    /// A running task of lower priority it displaces from `to` (preemption): that one is
    /// unassigned in the same write, and waits.
    pub evicts: Option<String>,
}

/// A reservation's worker, the revision of its write once it succeeded, and what the resource
/// written asks (for its spread group).
type Held = (String, Option<i64>, Option<Arc<Wants>>);

/// What a worker holds, present or not: resources assigned to it, and how many of those
/// completed their task there.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    assigned: u32,
    done: u32,
}

impl Count {
    /// What these resources weigh on their worker: the ones whose task did not complete.
    fn load(self) -> u32 {
        self.assigned.saturating_sub(self.done)
    }
}

/// Loads, assignments and the resources waiting for a worker.
///
/// It keeps counts, not copies: which resources a worker holds is read from the resources
/// cache's index, and each load changes by the old and new values of the changes it applies. The cache may run ahead of what was applied; a choice read from it is written with
/// a compare on the resource's revision, and each resource's change, once applied, settles its
/// counts and whether it waits.
#[derive(Debug, Clone)]
pub struct Placement {
    assigner: Assigner,
    /// The resources cache: each worker's resources, by its index.
    resources: Store<Resource>,
    /// Worker → what it holds, as of the changes applied. Its keys are the shared copies of
    /// the worker ids.
    held: HashMap<Name, Count>,
    /// Resources with no present worker, by priority and the revision at which that became so.
    needs: queue::Queue,
    /// What the resources with constraints ask (the others ask nothing).
    wants: HashMap<Name, Arc<Wants>>,
    /// What the spread groups hold, reservations included.
    spreads: spread::Spreads,
    /// Writes in flight: token → (worker, revision of the write once it succeeded, what the
    /// resource written asks).
    reservations: HashMap<u64, Held>,
    next_token: u64,
    /// Highest revision applied from the resources cache.
    applied: i64,
    /// Resources whose task completed at their current assignment → that worker: they stay
    /// with it but no longer count against its capacity.
    done: HashMap<Name, Name>,
    /// Absent workers whose resources may be handed out (their grace period is over).
    released: HashSet<String>,
    /// Cordoned workers: present or not, they take no new resource.
    cordoned: HashSet<String>,
    /// True while a take-over fills the placement from a copy of the cache: loads are counted
    /// per worker only, and handed to the assigner once each (see [`Placement::end_fill`]).
    filling: bool,
    /// Resources moving off a present worker (drain, rebalance) → that worker, until the move
    /// is applied or fails.
    in_flight: HashMap<String, String>,
}

impl Placement {
    /// An empty placement of the resources `resources` holds, once their changes are applied.
    pub fn new(resources: Store<Resource>) -> Self {
        Self {
            assigner: Assigner::default(),
            resources,
            held: HashMap::new(),
            needs: queue::Queue::default(),
            wants: HashMap::new(),
            spreads: spread::Spreads::default(),
            reservations: HashMap::new(),
            next_token: 0,
            applied: 0,
            done: HashMap::new(),
            released: HashSet::new(),
            cordoned: HashSet::new(),
            in_flight: HashMap::new(),
            filling: false,
        }
    }

    /// Starts filling the placement from a copy of the cache: until [`Placement::end_fill`],
    /// applying a resource counts it on its worker but leaves the worker where it is among the
    /// assigner's buckets, instead of moving it one bucket per resource.
    pub fn begin_fill(&mut self) {
        self.filling = true;
    }

    /// Ends the fill: each present worker's load is set once, from what it holds.
    pub fn end_fill(&mut self) {
        self.filling = false;
        let mut reserved: HashMap<&str, u32> = HashMap::new();
        for (worker, ..) in self.reservations.values() {
            *reserved.entry(worker.as_str()).or_default() += 1;
        }
        for (worker, c) in &self.held {
            let load = c.load() + reserved.get(&**worker).copied().unwrap_or(0);
            self.assigner.set_load(worker, load);
        }
    }

    /// Changes worker `id`'s load by `delta`, unless a fill counts it at its end.
    fn count_load(&mut self, id: &str, delta: i64) {
        if !self.filling {
            self.assigner.adjust(id, delta);
        }
    }

    /// The revision of the resources the placement reflects.
    pub fn applied(&self) -> i64 {
        self.applied
    }

    /// Adds a worker or updates it. Its resources stop needing a worker.
    pub fn upsert_worker(
        &mut self,
        id: &str,
        address: &str,
        capacity: Option<u32>,
        labels: Arc<Labels>,
    ) {
        let held = self.held.get(id).map_or(0, |c| c.load());
        let reserved = self.reservations.values().filter(|r| r.0 == id).count();
        let old = self.assigner.labels(id).cloned();
        if old.as_deref() != Some(&*labels) {
            self.spreads.relabel(id, old.as_deref(), Some(&labels));
        }
        let shared = self.worker_id(id);
        self.assigner
            .upsert(shared, address, capacity, held + reserved as u32, labels);
        self.assigner.set_eligible(id, !self.cordoned.contains(id));
        self.released.remove(id);
        self.needs.remove_worker(id);
    }

    /// Removes a worker at `revision`: its resources need a new one.
    pub fn remove_worker(&mut self, id: &str, revision: i64) {
        let old = self.assigner.labels(id).cloned();
        self.spreads.relabel(id, old.as_deref(), None);
        self.assigner.remove(id);
        let worker = self.worker_id(id);
        // The cache may hold a change not applied yet; applying it settles that resource again.
        for name in self.names_on(id) {
            let priority = self.priority(&name);
            self.needs
                .insert(&name, revision, priority, true, Some(&worker));
        }
    }

    /// The resources the cache shows on worker `id`, sorted.
    fn names_on(&self, id: &str) -> Vec<Name> {
        self.resources.with_index(|_, index, _| {
            index
                .names(id)
                .map(|names| names.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// True when `id` is a present worker.
    pub fn has_worker(&self, id: &str) -> bool {
        self.assigner.contains(id)
    }

    /// Number of present workers.
    pub fn present_workers(&self) -> usize {
        self.assigner.len()
    }

    /// Lets the resources of absent worker `id` be handed out (its grace period is over).
    pub fn release(&mut self, id: &str) {
        if !self.assigner.contains(id) {
            self.released.insert(id.to_owned());
        }
    }

    /// True when absent worker `id` was released.
    pub fn is_released(&self, id: &str) -> bool {
        self.released.contains(id)
    }

    /// Cordons worker `id` (present or not), or lifts its cordon.
    pub fn set_cordoned(&mut self, id: &str, cordoned: bool) {
        if cordoned {
            self.cordoned.insert(id.to_owned());
        } else {
            self.cordoned.remove(id);
        }
        self.assigner.set_eligible(id, !cordoned);
    }

    /// Absent workers that hold resources and were not released: those in their grace period,
    /// and any the leader has not seen leave.
    pub fn absent_holders(&self) -> HashSet<String> {
        // Per worker, not per resource: this runs after every batch of changes.
        self.held
            .keys()
            .filter(|w| !self.assigner.contains(w) && !self.released.contains(&***w))
            .map(|w| w.to_string())
            .collect()
    }

    /// Resources assigned to worker `id`, present or not.
    pub fn held_by(&self, id: &str) -> usize {
        self.held.get(id).map_or(0, |c| c.assigned as usize)
    }

    /// The shared string of worker id `id`.
    fn worker_id(&self, id: &str) -> Name {
        self.held
            .get_key_value(id)
            .map_or_else(|| Name::from(id), |(w, _)| Name::clone(w))
    }

    /// Applies one change of the resources cache, at `revision`: `name` went from `before`'s
    /// state to `after`'s, each `Some(worker)` when the resource exists (`Some(None)`:
    /// unassigned) and `None` when it does not; it now asks `wants` of its worker. `before` is
    /// what the placement applied last for `name` (an event's old value), so every change is
    /// applied once.
    pub fn set_resource(
        &mut self,
        name: &Name,
        before: Option<Option<&str>>,
        after: Option<Option<&str>>,
        wants: Option<Arc<Wants>>,
        revision: i64,
    ) {
        let (old, new) = (before.flatten(), after.flatten());
        self.count_group(name, old, -1);
        match wants.filter(|_| after.is_some()) {
            Some(w) => {
                self.wants.insert(Name::clone(name), w);
            }
            None => {
                self.wants.remove(&**name);
            }
        }
        self.count_group(name, new, 1);
        if old != new {
            // Moved or deleted: a completed run at the old assignment says nothing any more.
            self.set_done(name, None);
            self.in_flight.remove(&**name);
            if let Some(old) = old {
                self.count_load(old, -1);
                if let Some(c) = self.held.get_mut(old) {
                    c.assigned = c.assigned.saturating_sub(1);
                    if c.assigned == 0 {
                        self.held.remove(old);
                    }
                }
            }
            if let Some(new) = new {
                self.count_load(new, 1);
                let id = self.worker_id(new);
                self.held.entry(id).or_default().assigned += 1;
            }
        }
        match after {
            None => {
                self.needs.remove(name);
            }
            Some(Some(worker)) if self.assigner.contains(worker) => {
                self.needs.remove(name);
            }
            Some(worker) => {
                let priority = self.priority(name);
                let from = worker.map(|w| self.worker_id(w));
                self.needs
                    .insert(name, revision, priority, false, from.as_ref());
            }
        }
    }

    /// Applies one event of the resources cache at `revision`; the resource now asks `wants`.
    pub fn apply(&mut self, event: &Event<Resource>, wants: Option<Arc<Wants>>, revision: i64) {
        fn state(e: &Entry<Resource>) -> Option<Option<&str>> {
            Some(e.value.assigned_worker())
        }
        let (name, before, after) = match event {
            Event::Added { name, new } => (name, None, state(new)),
            Event::Modified { name, old, new } => (name, state(old), state(new)),
            Event::Deleted { name, old } => (name, state(old), None),
        };
        self.set_resource(name, before, after, wants, revision);
    }

    /// Records whether the task of `name` completed at its current assignment, `at` that
    /// worker (`None`: it did not, or no longer). A completed task stops counting against its
    /// worker's capacity, and counts again when it runs again or moves. The caller passes the
    /// worker of the change it applied last for `name`.
    pub fn set_done(&mut self, name: &Name, at: Option<&str>) {
        if self.done.get(&**name).map(|w| &**w) == at {
            return;
        }
        if let Some(worker) = self.done.remove(&**name) {
            self.count_load(&worker, 1);
            if let Some(c) = self.held.get_mut(&*worker) {
                c.done = c.done.saturating_sub(1);
            }
        }
        let Some(worker) = at else {
            return;
        };
        let Some((worker, c)) = self.held.get_key_value(worker) else {
            return;
        };
        let worker = Name::clone(worker);
        if c.done >= c.assigned {
            return;
        }
        self.count_load(&worker, -1);
        if let Some(c) = self.held.get_mut(&*worker) {
            c.done += 1;
        }
        self.done.insert(Name::clone(name), worker);
    }

    /// Marks every resource change up to `revision` as applied, releasing the reservations of
    /// writes at or below it.
    pub fn advance(&mut self, revision: i64) {
        self.applied = self.applied.max(revision);
        let applied = self.applied;
        let done: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, (_, rev, _))| rev.is_some_and(|r| r <= applied))
            .map(|(t, _)| *t)
            .collect();
        for token in done {
            self.cancel(token);
        }
    }

    /// Chooses a worker for a new resource that asks `wants` of it, or `None` when no worker
    /// it may use has room.
    pub fn reserve(&mut self, wants: Option<&Arc<Wants>>) -> Option<Reservation> {
        let (worker, address) = match wants {
            Some(w) => {
                let penalty = self.spread_penalty(w);
                self.assigner.pick_for(Some(&w.constraints), penalty)?
            }
            None => self.assigner.pick()?,
        };
        Some(self.reserved(worker, address, wants))
    }

    fn reserved(
        &mut self,
        worker: String,
        address: String,
        wants: Option<&Arc<Wants>>,
    ) -> Reservation {
        let token = self.next_token;
        self.next_token += 1;
        self.count_spread(wants.map(|w| &**w), Some(&worker), 1);
        self.reservations
            .insert(token, (worker.clone(), None, wants.cloned()));
        Reservation {
            token,
            worker,
            address,
        }
    }

    /// The write holding `token` succeeded at `revision`; the reservation ends once the
    /// resources at that revision have been applied.
    pub fn confirm(&mut self, token: u64, revision: i64) {
        if let Some((_, rev, _)) = self.reservations.get_mut(&token) {
            *rev = Some(revision);
        }
        if revision <= self.applied {
            self.cancel(token);
        }
    }

    /// The write holding `token` failed, or its result was applied: release the reservation.
    pub fn cancel(&mut self, token: u64) {
        if let Some((worker, _, wants)) = self.reservations.remove(&token) {
            self.assigner.adjust(&worker, -1);
            self.count_spread(wants.as_deref(), Some(&worker), -1);
        }
    }

    /// A planned move was not written: release its worker. A drain's or rebalance's resource
    /// may be planned again; any other needs a worker again if, as far as the placement now
    /// knows, it still exists without a present worker.
    pub fn unplan(&mut self, m: &Move) {
        self.cancel(m.to.token);
        if let Some(victim) = &m.evicts {
            self.in_flight.remove(victim);
        }
        if self.in_flight.remove(&m.name).is_some() {
            return;
        }
        // The cache may be ahead of what was applied: then applying its change settles this
        // resource again.
        let Some(entry) = self.resources.get(&m.name) else {
            return;
        };
        let worker = entry.value.assigned_worker();
        if worker.is_none_or(|w| !self.assigner.contains(w)) {
            let name = Name::clone(&entry.value.name);
            let priority = self.priority(&name);
            let from = worker.map(|w| self.worker_id(w));
            self.needs
                .insert(&name, m.since, priority, true, from.as_ref());
        }
    }

    /// True when resource `name` needs a worker.
    pub fn needs(&self, name: &str) -> bool {
        self.needs.contains(name)
    }

    /// Number of resources that need a worker.
    pub fn pending(&self) -> usize {
        self.needs.len()
    }

    /// The load of a present worker, reservations included.
    pub fn load(&self, worker: &str) -> Option<u32> {
        self.assigner.load(worker)
    }

    /// The absent worker a waiting resource `name` is assigned to, if any.
    pub fn waits_on(&self, name: &str) -> Option<&str> {
        self.needs.from(name).map(|w| &**w)
    }
}

#[cfg(test)]
mod counting;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
