//! The leader's view of who holds what: each resource's worker, each worker's load, and which
//! resources need a worker.
//!
//! Every update states what a resource now *is*, so applying a batch twice is harmless. Writes
//! in flight count as *reservations* on their worker until the batch carrying them is applied,
//! so concurrent creates see each other's choices. An absent worker's resources are handed out
//! only once the leader releases it (grace over, no storm) and the workers cache has caught up
//! with the revision that orphaned them. One code path plans every move (`plan.rs`): orphans, a
//! drain, rebalancing, preemption, and a dry run on a clone.
//!
//! Where a task may run (`wants.rs`) bears on every choice: a move never breaks a selector or a
//! dedication, waiting tasks are placed by priority, and a task that fits nowhere says why.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::etcd::cache::Name;
use crate::master::assigner::Assigner;
use crate::model::constraints::Labels;
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

/// Loads, assignments and the resources waiting for a worker.
#[derive(Debug, Default, Clone)]
pub struct Placement {
    assigner: Assigner,
    /// Resource → the worker etcd says it is assigned to (`None`: unassigned). Names are the
    /// caches' own strings and worker ids are shared (see `worker_ids`), so a resource costs
    /// this map two pointers.
    resources: HashMap<Name, Option<Name>>,
    /// Worker → the resources assigned to it (present or not).
    members: HashMap<Name, HashSet<Name>>,
    /// One string per worker id, shared by every resource assigned to it.
    worker_ids: HashSet<Name>,
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
    /// Resources whose task completed at their current assignment: they stay with their
    /// worker but no longer count against its capacity.
    done: HashSet<Name>,
    /// Absent workers whose resources may be handed out (their grace period is over).
    released: HashSet<String>,
    /// Cordoned workers: present or not, they take no new resource.
    cordoned: HashSet<String>,
    /// Resources moving off a present worker (drain, rebalance) → that worker, until the move
    /// is applied or fails.
    in_flight: HashMap<String, String>,
}

impl Placement {
    /// An empty placement.
    pub fn new() -> Self {
        Self::default()
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
        let held = self
            .members
            .get(id)
            .map_or(0, |names| names.difference(&self.done).count());
        let reserved = self.reservations.values().filter(|r| r.0 == id).count();
        let old = self.assigner.labels(id).cloned();
        if old.as_deref() != Some(&*labels) {
            self.spreads.relabel(id, old.as_deref(), Some(&labels));
        }
        let shared = self.worker_id(id);
        self.assigner
            .upsert(shared, address, capacity, (held + reserved) as u32, labels);
        self.assigner.set_eligible(id, !self.cordoned.contains(id));
        self.released.remove(id);
        if let Some(names) = self.members.get(id) {
            for name in names {
                self.needs.remove(name);
            }
        }
    }

    /// Removes a worker at `revision`: its resources need a new one.
    pub fn remove_worker(&mut self, id: &str, revision: i64) {
        let old = self.assigner.labels(id).cloned();
        self.spreads.relabel(id, old.as_deref(), None);
        self.assigner.remove(id);
        if let Some(names) = self.members.get(id) {
            for name in names {
                let priority = self.priority(name);
                self.needs.insert(name, revision, priority, true);
            }
        }
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
        self.members
            .keys()
            .filter(|w| !self.assigner.contains(w) && !self.released.contains(&***w))
            .map(|w| w.to_string())
            .collect()
    }

    /// Resources assigned to worker `id`, present or not.
    pub fn held_by(&self, id: &str) -> usize {
        self.members.get(id).map_or(0, HashSet::len)
    }

    /// Records what etcd says of resource `name` at `revision`: assigned to `worker`, unassigned
    /// (`Some(None)`), or deleted (`None`); it asks nothing of its worker.
    pub fn set_resource(&mut self, name: &str, state: Option<Option<&str>>, revision: i64) {
        let shared = self
            .resources
            .get_key_value(name)
            .map_or_else(|| Name::from(name), |(k, _)| Name::clone(k));
        self.set_resource_shared(&shared, state, None, revision);
    }

    /// The shared string of worker id `id`.
    fn worker_id(&mut self, id: &str) -> Name {
        if let Some(w) = self.worker_ids.get(id) {
            return Name::clone(w);
        }
        let w = Name::from(id);
        self.worker_ids.insert(Name::clone(&w));
        w
    }

    /// Like [`Placement::set_resource`], keeping `name` (the cache's string) rather than a
    /// copy, with what it asks of its worker.
    pub fn set_resource_shared(
        &mut self,
        name: &Name,
        state: Option<Option<&str>>,
        wants: Option<Arc<Wants>>,
        revision: i64,
    ) {
        let held_by = self
            .resources
            .get(name)
            .and_then(|w| w.as_deref())
            .map(Name::from);
        self.count_group(name, held_by.as_deref(), -1);
        match wants.filter(|_| state.is_some()) {
            Some(w) => {
                self.wants.insert(Name::clone(name), w);
            }
            None => {
                self.wants.remove(&**name);
            }
        }
        self.count_group(name, state.flatten(), 1);
        let before = self.resources.get(name).and_then(|w| w.as_deref());
        let after = state.flatten();
        if before != after {
            // Moved or deleted: a completed run at the old assignment says nothing any more.
            self.set_done(name, false);
            self.in_flight.remove(&**name);
        }
        let before = self.resources.get(name).and_then(|w| w.as_deref());
        if before != after {
            if let Some(old) = before.map(str::to_owned) {
                self.assigner.adjust(&old, -1);
                if let Some(set) = self.members.get_mut(old.as_str()) {
                    set.remove(&**name);
                    if set.is_empty() {
                        self.members.remove(old.as_str());
                    }
                }
            }
            if let Some(new) = after {
                self.assigner.adjust(new, 1);
                let id = self.worker_id(new);
                self.members
                    .entry(id)
                    .or_default()
                    .insert(Name::clone(name));
            }
        }
        match state {
            None => self.resources.remove(&**name),
            Some(worker) => {
                let worker = worker.map(|w| self.worker_id(w));
                self.resources.insert(Name::clone(name), worker)
            }
        };
        match state {
            None => {
                self.needs.remove(name);
            }
            Some(Some(worker)) if self.assigner.contains(worker) => {
                self.needs.remove(name);
            }
            Some(_) => {
                let priority = self.priority(name);
                self.needs.insert(name, revision, priority, false);
            }
        }
    }

    /// Records whether the task of `name` completed at its current assignment; a completed
    /// task stops counting against its worker's capacity, and counts again when it runs again.
    pub fn set_done(&mut self, name: &str, done: bool) {
        let changed = if done {
            let shared = self
                .resources
                .get_key_value(name)
                .map_or_else(|| Name::from(name), |(k, _)| Name::clone(k));
            self.done.insert(shared)
        } else {
            self.done.remove(name)
        };
        if !changed {
            return;
        }
        if let Some(worker) = self.resources.get(name).and_then(|w| w.as_deref()) {
            self.assigner.adjust(worker, if done { -1 } else { 1 });
        }
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
        if let Some((name, worker)) = self.resources.get_key_value(m.name.as_str())
            && worker.as_deref().is_none_or(|w| !self.assigner.contains(w))
        {
            let name = Name::clone(name);
            let priority = self.priority(&name);
            self.needs.insert(&name, m.since, priority, true);
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

    /// The worker resource `name` is assigned to, as far as the placement knows.
    pub fn assigned(&self, name: &str) -> Option<&str> {
        self.resources.get(name).and_then(|w| w.as_deref())
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
