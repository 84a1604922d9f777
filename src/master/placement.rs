//! The leader's view of who holds what: which worker each resource is assigned to, each
//! worker's load, and which resources need a worker.
//!
//! It is fed by the caches' change batches, and every update says what a resource's state now
//! *is* (assigned to a worker, or not), so applying a batch twice, or a re-list's derived
//! batch, is harmless. The leader's own writes that are still in flight are counted as
//! *reservations*: a reservation adds to its worker's load from the moment the worker is chosen
//! until the batch carrying the write has been applied (or the write failed), so concurrent
//! creates see each other's choices and no load is ever counted twice.
//!
//! A resource needs a worker when it has none, or when its worker is absent. An orphan is only
//! handed out once the workers cache has caught up with the revision that made it an orphan,
//! so a resource is never moved because its worker's registration simply arrived later than
//! the resource through the other cache.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::master::assigner::Assigner;

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
    /// Revision since which it needed a worker.
    pub since: i64,
    /// The chosen worker.
    pub to: Reservation,
}

/// Loads, assignments and the resources waiting for a worker.
#[derive(Debug, Default)]
pub struct Placement {
    assigner: Assigner,
    /// Resource → the worker etcd says it is assigned to (`None`: unassigned).
    resources: HashMap<String, Option<String>>,
    /// Worker → the resources assigned to it (present or not).
    members: HashMap<String, HashSet<String>>,
    /// Resources with no present worker → revision at which that became so.
    needs: BTreeMap<String, i64>,
    /// Writes in flight: token → (worker, revision of the write once it succeeded).
    reservations: HashMap<u64, (String, Option<i64>)>,
    next_token: u64,
    /// Highest revision applied from the resources cache.
    applied: i64,
    /// Resources whose task completed at their current assignment: they stay with their
    /// worker but no longer count against its capacity.
    done: HashSet<String>,
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
    pub fn upsert_worker(&mut self, id: &str, address: &str, capacity: Option<u32>) {
        let held = self
            .members
            .get(id)
            .map_or(0, |names| names.difference(&self.done).count());
        let reserved = self.reservations.values().filter(|(w, _)| w == id).count();
        self.assigner
            .upsert(id, address, capacity, (held + reserved) as u32);
        if let Some(names) = self.members.get(id) {
            for name in names {
                self.needs.remove(name);
            }
        }
    }

    /// Removes a worker at `revision`: its resources need a new one.
    pub fn remove_worker(&mut self, id: &str, revision: i64) {
        self.assigner.remove(id);
        if let Some(names) = self.members.get(id) {
            for name in names {
                self.needs.insert(name.clone(), revision);
            }
        }
    }

    /// True when `id` is a present worker.
    pub fn has_worker(&self, id: &str) -> bool {
        self.assigner.contains(id)
    }

    /// Records what etcd says of resource `name` at `revision`: assigned to `worker`, unassigned
    /// (`Some(None)`), or deleted (`None`).
    pub fn set_resource(&mut self, name: &str, state: Option<Option<&str>>, revision: i64) {
        let before = self.resources.get(name).and_then(|w| w.as_deref());
        let after = state.flatten();
        if before != after {
            // Moved or deleted: a completed run at the old assignment says nothing any more.
            self.set_done(name, false);
        }
        let before = self.resources.get(name).and_then(|w| w.as_deref());
        if before != after {
            if let Some(old) = before.map(str::to_owned) {
                self.assigner.adjust(&old, -1);
                if let Some(set) = self.members.get_mut(&old) {
                    set.remove(name);
                    if set.is_empty() {
                        self.members.remove(&old);
                    }
                }
            }
            if let Some(new) = after {
                self.assigner.adjust(new, 1);
                self.members
                    .entry(new.to_owned())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
        match state {
            None => self.resources.remove(name),
            Some(worker) => self
                .resources
                .insert(name.to_owned(), worker.map(str::to_owned)),
        };
        match state {
            None => {
                self.needs.remove(name);
            }
            Some(Some(worker)) if self.assigner.contains(worker) => {
                self.needs.remove(name);
            }
            Some(_) => {
                self.needs.entry(name.to_owned()).or_insert(revision);
            }
        }
    }

    /// Records whether the task of `name` completed at its current assignment; a completed
    /// task stops counting against its worker's capacity, and counts again when it runs again.
    pub fn set_done(&mut self, name: &str, done: bool) {
        let changed = if done {
            self.done.insert(name.to_owned())
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
            .filter(|(_, (_, rev))| rev.is_some_and(|r| r <= applied))
            .map(|(t, _)| *t)
            .collect();
        for token in done {
            self.cancel(token);
        }
    }

    /// Chooses a worker for a new resource, or `None` when no worker has room.
    pub fn reserve(&mut self) -> Option<Reservation> {
        let (worker, address) = self.assigner.pick()?;
        let token = self.next_token;
        self.next_token += 1;
        self.reservations.insert(token, (worker.clone(), None));
        Some(Reservation {
            token,
            worker,
            address,
        })
    }

    /// The write holding `token` succeeded at `revision`; the reservation ends once the
    /// resources at that revision have been applied.
    pub fn confirm(&mut self, token: u64, revision: i64) {
        if let Some((_, rev)) = self.reservations.get_mut(&token) {
            *rev = Some(revision);
        }
        if revision <= self.applied {
            self.cancel(token);
        }
    }

    /// The write holding `token` failed, or its result was applied: release the reservation.
    pub fn cancel(&mut self, token: u64) {
        if let Some((worker, _)) = self.reservations.remove(&token) {
            self.assigner.adjust(&worker, -1);
        }
    }

    /// Chooses workers for up to `limit` resources that need one. Orphans whose cause is newer
    /// than `workers_revision` wait. Stops early when no worker has room.
    pub fn plan(&mut self, limit: usize, workers_revision: i64) -> Vec<Move> {
        let ready: Vec<(String, i64)> = self
            .needs
            .iter()
            .filter(|(name, since)| {
                // Unassigned resources can go at once; orphans wait for the workers cache.
                self.resources.get(*name).is_none_or(Option::is_none) || **since <= workers_revision
            })
            .map(|(name, since)| (name.clone(), *since))
            .take(limit)
            .collect();
        let mut moves = Vec::with_capacity(ready.len());
        for (name, since) in ready {
            let Some(to) = self.reserve() else { break };
            self.needs.remove(&name);
            moves.push(Move { name, since, to });
        }
        moves
    }

    /// A planned move was not written: release its worker, and the resource needs one again
    /// if, as far as the placement now knows, it still exists without a present worker.
    pub fn unplan(&mut self, m: &Move) {
        self.cancel(m.to.token);
        if let Some(worker) = self.resources.get(&m.name)
            && worker.as_deref().is_none_or(|w| !self.assigner.contains(w))
        {
            self.needs.insert(m.name.clone(), m.since);
        }
    }

    /// True when resource `name` needs a worker.
    pub fn needs(&self, name: &str) -> bool {
        self.needs.contains_key(name)
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
mod tests {
    use super::*;

    fn with_workers(ids: &[&str]) -> Placement {
        let mut p = Placement::new();
        for id in ids {
            p.upsert_worker(id, &format!("{id}:1"), None);
        }
        p
    }

    #[test]
    fn loads_follow_events_and_are_idempotent() {
        let mut p = with_workers(&["a", "b"]);
        p.set_resource("r1", Some(Some("a")), 2);
        p.set_resource("r1", Some(Some("a")), 2);
        p.set_resource("r2", Some(Some("a")), 3);
        assert_eq!(p.load("a"), Some(2));
        p.set_resource("r2", Some(Some("b")), 4);
        assert_eq!((p.load("a"), p.load("b")), (Some(1), Some(1)));
        p.set_resource("r1", None, 5);
        p.set_resource("r1", None, 5);
        assert_eq!(p.load("a"), Some(0));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn reservations_count_until_their_revision_is_applied() {
        let mut p = with_workers(&["a", "b"]);
        p.set_resource("x", Some(Some("a")), 3);
        p.advance(3);
        let r = p.reserve().expect("room");
        assert_eq!(r.worker, "b");
        // A concurrent create sees b's reservation and goes to... either, both at 1.
        assert_eq!(p.load("b"), Some(1));
        p.confirm(r.token, 7);
        assert_eq!(
            p.load("b"),
            Some(1),
            "still reserved until revision 7 is applied"
        );
        p.set_resource("new", Some(Some("b")), 7);
        assert_eq!(
            p.load("b"),
            Some(2),
            "event and reservation overlap briefly"
        );
        p.advance(7);
        assert_eq!(p.load("b"), Some(1), "counted once");
        let failed = p.reserve().expect("room");
        p.cancel(failed.token);
        assert_eq!(p.load("a").unwrap_or(0) + p.load("b").unwrap_or(0), 2);
    }

    #[test]
    fn confirm_after_the_event_was_applied_releases_at_once() {
        let mut p = with_workers(&["a"]);
        let r = p.reserve().expect("room");
        p.set_resource("n", Some(Some("a")), 9);
        p.advance(9);
        p.confirm(r.token, 9);
        assert_eq!(p.load("a"), Some(1));
    }

    #[test]
    fn unassigned_resources_wait_for_a_worker() {
        let mut p = Placement::new();
        p.set_resource("seed1", Some(None), 2);
        p.set_resource("seed2", Some(None), 2);
        assert_eq!(p.pending(), 2);
        assert!(p.plan(10, 0).is_empty(), "no worker yet");
        p.upsert_worker("w", "w:1", None);
        let moves = p.plan(10, 0);
        assert_eq!(moves.len(), 2);
        assert!(moves.iter().all(|m| m.to.worker == "w"));
    }

    #[test]
    fn a_dead_workers_resources_move_once_the_workers_cache_caught_up() {
        let mut p = with_workers(&["a", "b", "c"]);
        for i in 0..6 {
            p.set_resource(&format!("r{i}"), Some(Some("a")), 10);
        }
        p.remove_worker("a", 20);
        assert_eq!(p.pending(), 6);
        assert!(
            p.plan(128, 19).is_empty(),
            "workers cache behind the removal"
        );
        let moves = p.plan(4, 20);
        assert_eq!(moves.len(), 4, "limited batch");
        let to_b = moves.iter().filter(|m| m.to.worker == "b").count();
        assert_eq!(to_b, 2, "spread evenly: {moves:?}");
        assert_eq!(p.pending(), 2, "planned moves are in flight, not pending");
        p.unplan(&moves[0]);
        assert_eq!(p.pending(), 3, "a failed move is pending again");
        p.set_resource(&moves[1].name, None, 21);
        p.unplan(&moves[1]);
        assert_eq!(p.pending(), 3, "a deleted resource is not");
    }

    #[test]
    fn a_returning_worker_keeps_its_resources() {
        let mut p = with_workers(&["a"]);
        p.set_resource("r", Some(Some("a")), 3);
        p.remove_worker("a", 4);
        assert_eq!(p.pending(), 1);
        p.upsert_worker("a", "a:2", None);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.load("a"), Some(1));
    }

    #[test]
    fn completed_tasks_free_their_workers_room_until_they_run_again() {
        let mut p = Placement::new();
        p.upsert_worker("w1", "a1", Some(1));
        p.set_resource("done", Some(Some("w1")), 1);
        p.advance(1);
        assert_eq!(p.load("w1"), Some(1));
        assert!(p.reserve().is_none(), "full");
        p.set_done("done", true);
        assert_eq!(p.load("w1"), Some(0));
        p.set_done("done", true);
        assert_eq!(p.load("w1"), Some(0), "idempotent");
        // A worker re-registering counts only what still runs.
        p.upsert_worker("w1", "a1", Some(1));
        assert_eq!(p.load("w1"), Some(0));
        // Restarted: it counts again.
        p.set_done("done", false);
        assert_eq!(p.load("w1"), Some(1));
        // Moved while completed: the old worker is not charged twice.
        p.set_done("done", true);
        p.upsert_worker("w2", "a2", Some(5));
        p.set_resource("done", Some(Some("w2")), 2);
        assert_eq!((p.load("w1"), p.load("w2")), (Some(0), Some(1)));
        p.set_resource("done", None, 3);
        assert_eq!(p.load("w2"), Some(0));
    }

    #[test]
    fn resources_of_an_unknown_worker_wait_for_the_workers_cache() {
        let mut p = with_workers(&["b"]);
        p.set_resource("r", Some(Some("late")), 12);
        assert!(p.plan(1, 11).is_empty());
        p.upsert_worker("late", "l:1", None);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.assigned("r"), Some("late"));
    }
}
