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
//! A resource needs a worker when it has none, or when its worker is absent. The resources of
//! an absent worker are only handed out once the leader *releases* the worker (its grace
//! period ran out, and no storm freezes reassignment), and once the workers cache has caught
//! up with the revision that made them orphans, so a resource is never moved because its
//! worker's registration simply arrived later than the resource through the other cache.
//!
//! The same code plans every kind of move: orphans and unassigned resources ([`Placement::plan`]),
//! a drain ([`Placement::plan_drain`]) and rebalancing ([`Placement::plan_rebalance`]); a
//! dry run plans on a clone ([`Placement::preview`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::etcd::cache::Name;
use crate::master::assigner::Assigner;
use crate::model::schedule::Reason;

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
}

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
    /// Resources with no present worker → revision at which that became so.
    needs: BTreeMap<Name, i64>,
    /// Writes in flight: token → (worker, revision of the write once it succeeded).
    reservations: HashMap<u64, (String, Option<i64>)>,
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
    pub fn upsert_worker(&mut self, id: &str, address: &str, capacity: Option<u32>) {
        let held = self
            .members
            .get(id)
            .map_or(0, |names| names.difference(&self.done).count());
        let reserved = self.reservations.values().filter(|(w, _)| w == id).count();
        self.assigner
            .upsert(id, address, capacity, (held + reserved) as u32);
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
    /// (`Some(None)`), or deleted (`None`).
    pub fn set_resource(&mut self, name: &str, state: Option<Option<&str>>, revision: i64) {
        let shared = self
            .resources
            .get_key_value(name)
            .map_or_else(|| Name::from(name), |(k, _)| Name::clone(k));
        self.set_resource_shared(&shared, state, revision);
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
    /// copy.
    pub fn set_resource_shared(&mut self, name: &Name, state: Option<Option<&str>>, revision: i64) {
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
                self.needs.remove(&**name);
            }
            Some(Some(worker)) if self.assigner.contains(worker) => {
                self.needs.remove(&**name);
            }
            Some(_) => {
                self.needs.entry(Name::clone(name)).or_insert(revision);
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

    /// Chooses workers for up to `limit` resources that need one, of which at most
    /// `orphan_limit` belong to released workers (unassigned ones are not rate-limited).
    /// Orphans whose cause is newer than `workers_revision` wait, as do those of workers not
    /// released. Stops early when no worker has room.
    pub fn plan(&mut self, limit: usize, orphan_limit: usize, workers_revision: i64) -> Vec<Move> {
        if !self.assigner.any_room() {
            // Nothing can be placed: do not walk what waits.
            return Vec::new();
        }
        let mut orphans = 0usize;
        let mut ready: Vec<(String, i64, Option<String>)> = Vec::new();
        for (name, since) in &self.needs {
            if ready.len() >= limit {
                break;
            }
            match self.assigned(name) {
                None => ready.push((name.to_string(), *since, None)),
                Some(worker) => {
                    if orphans < orphan_limit
                        && *since <= workers_revision
                        && self.released.contains(worker)
                    {
                        orphans += 1;
                        ready.push((name.to_string(), *since, Some(worker.to_owned())));
                    }
                }
            }
        }
        let mut moves = Vec::with_capacity(ready.len());
        for (name, since, from) in ready {
            let Some(to) = self.reserve() else { break };
            self.needs.remove(name.as_str());
            let reason = if from.is_some() {
                Reason::WorkerLeft
            } else {
                Reason::Created
            };
            moves.push(Move {
                name,
                since,
                from,
                to,
                reason,
            });
        }
        moves
    }

    /// Chooses workers for up to `limit` resources of present worker `from`, which is being
    /// drained (and so cordoned).
    pub fn plan_drain(&mut self, from: &str, limit: usize) -> Vec<Move> {
        let names: Vec<String> = self
            .members
            .get(from)
            .into_iter()
            .flatten()
            .filter(|n| !self.in_flight.contains_key(&***n) && !self.needs.contains_key(&***n))
            .take(limit)
            .map(|n| n.to_string())
            .collect();
        let mut moves = Vec::with_capacity(names.len());
        for name in names {
            let Some(to) = self.reserve() else { break };
            moves.push(self.depart(name, from, to, Reason::Drained));
        }
        moves
    }

    fn depart(&mut self, name: String, from: &str, to: Reservation, reason: Reason) -> Move {
        self.in_flight.insert(name.clone(), from.to_owned());
        Move {
            name,
            since: 0,
            from: Some(from.to_owned()),
            to,
            reason,
        }
    }

    /// Loads of the present, uncordoned workers, counting what is moving off them as gone:
    /// (worker, load, weight). The weight is the capacity (the largest known one for a
    /// worker without), so loads compare as fractions of capacity.
    fn balance_loads(&self) -> Vec<(String, u32, u32)> {
        let mut leaving: HashMap<&str, u32> = HashMap::new();
        for from in self.in_flight.values() {
            *leaving.entry(from.as_str()).or_default() += 1;
        }
        let largest = self
            .assigner
            .workers()
            .filter_map(|(_, _, c, _)| c)
            .max()
            .unwrap_or(1)
            .max(1);
        self.assigner
            .workers()
            .filter(|(_, _, _, eligible)| *eligible)
            .map(|(id, load, capacity, _)| {
                let load = load.saturating_sub(leaving.get(id).copied().unwrap_or(0));
                (id.to_owned(), load, capacity.unwrap_or(largest).max(1))
            })
            .collect()
    }

    /// The difference between the most and the least loaded present, uncordoned workers, and
    /// their mean load.
    pub fn spread(&self) -> (u32, f64) {
        let loads = self.balance_loads();
        let max = loads.iter().map(|l| l.1).max().unwrap_or(0);
        let min = loads.iter().map(|l| l.1).min().unwrap_or(0);
        let mean = if loads.is_empty() {
            0.0
        } else {
            loads.iter().map(|l| f64::from(l.1)).sum::<f64>() / loads.len() as f64
        };
        (max - min, mean)
    }

    /// Plans up to `max` moves from the most to the least loaded present, uncordoned workers
    /// (as fractions of capacity), each only while it leaves the donor at least as loaded as
    /// the receiver, so moves never oscillate; with equal capacities the spread ends at most 1.
    /// `movable` gives a resource's start time (Unix ms) when it may move, and the youngest such
    /// resource of the donor moves (the least work is lost).
    pub fn plan_rebalance(
        &mut self,
        max: usize,
        movable: impl Fn(&str) -> Option<i64>,
    ) -> Vec<Move> {
        let mut loads = self.balance_loads();
        let mut moves = Vec::new();
        let mut skip: HashSet<String> = HashSet::new();
        while moves.len() < max && loads.len() > 1 {
            let ratio = |l: &(String, u32, u32)| f64::from(l.1) / f64::from(l.2);
            let donor = loads
                .iter()
                .enumerate()
                .filter(|(_, l)| !skip.contains(&l.0))
                .max_by(|a, b| ratio(a.1).total_cmp(&ratio(b.1)))
                .map(|(i, _)| i);
            let receiver = loads
                .iter()
                .enumerate()
                .filter(|(_, l)| self.assigner.has_room(&l.0))
                .min_by(|a, b| ratio(a.1).total_cmp(&ratio(b.1)))
                .map(|(i, _)| i);
            let (Some(d), Some(r)) = (donor, receiver) else {
                break;
            };
            let (dl, dw) = (f64::from(loads[d].1), f64::from(loads[d].2));
            let (rl, rw) = (f64::from(loads[r].1), f64::from(loads[r].2));
            if d == r || (dl - 1.0) / dw < (rl + 1.0) / rw {
                break;
            }
            let donor_id = loads[d].0.clone();
            let candidate = self
                .members
                .get(donor_id.as_str())
                .into_iter()
                .flatten()
                .filter(|n| {
                    !self.in_flight.contains_key(&***n)
                        && !self.done.contains(&***n)
                        && !self.needs.contains_key(&***n)
                })
                .filter_map(|n| movable(n).map(|started| (started, n)))
                // The youngest among the first candidates found, so a round costs the same
                // whether the donor holds a hundred tasks or a hundred thousand.
                .take(REBALANCE_CANDIDATES)
                .max()
                .map(|(_, n)| n.clone());
            let Some(name) = candidate else {
                // Nothing on the most loaded worker may move yet: try the next one.
                skip.insert(donor_id);
                continue;
            };
            let receiver_id = loads[r].0.clone();
            let Some(to) = self.reserve_on(&receiver_id) else {
                break;
            };
            loads[d].1 -= 1;
            loads[r].1 += 1;
            moves.push(self.depart(name.to_string(), &donor_id, to, Reason::Rebalanced));
        }
        moves
    }

    /// Reserves room on worker `id`, chosen by the caller.
    fn reserve_on(&mut self, id: &str) -> Option<Reservation> {
        let address = self.assigner.take(id)?;
        let token = self.next_token;
        self.next_token += 1;
        self.reservations.insert(token, (id.to_owned(), None));
        Some(Reservation {
            token,
            worker: id.to_owned(),
            address,
        })
    }

    /// What would move where if the workers in `remove` left for good and those in `drain`
    /// were drained, with no rate limit: planned on a clone by the code that plans real moves.
    /// Also returns how many resources would find no worker.
    pub fn preview(&self, drain: &[String], remove: &[String]) -> (Vec<Move>, usize) {
        let mut p = self.clone();
        for id in remove {
            p.remove_worker(id, 0);
            p.release(id);
        }
        for id in drain {
            p.set_cordoned(id, true);
        }
        let mut moves = p.plan(usize::MAX, usize::MAX, i64::MAX);
        for id in drain {
            moves.extend(p.plan_drain(id, usize::MAX));
        }
        let stranded = drain.iter().map(|id| {
            p.members.get(id.as_str()).map_or(0, |m| {
                m.iter()
                    .filter(|n| !p.in_flight.contains_key(&***n))
                    .count()
            })
        });
        let unplaced = p
            .needs
            .keys()
            .filter(|n| p.assigned(n).is_none_or(|w| p.released.contains(w)))
            .count()
            + stranded.sum::<usize>();
        (moves, unplaced)
    }

    /// A planned move was not written: release its worker. A drain's or rebalance's resource
    /// may be planned again; any other needs a worker again if, as far as the placement now
    /// knows, it still exists without a present worker.
    pub fn unplan(&mut self, m: &Move) {
        self.cancel(m.to.token);
        if self.in_flight.remove(&m.name).is_some() {
            return;
        }
        if let Some((name, worker)) = self.resources.get_key_value(m.name.as_str())
            && worker.as_deref().is_none_or(|w| !self.assigner.contains(w))
        {
            self.needs.insert(Name::clone(name), m.since);
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
        assert!(p.plan(10, usize::MAX, 0).is_empty(), "no worker yet");
        p.upsert_worker("w", "w:1", None);
        let moves = p.plan(10, usize::MAX, 0);
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
            p.plan(128, 128, 20).is_empty(),
            "not released: in its grace"
        );
        assert_eq!(p.absent_holders().into_iter().collect::<Vec<_>>(), ["a"]);
        p.release("a");
        assert!(p.absent_holders().is_empty());
        assert!(
            p.plan(128, 128, 19).is_empty(),
            "workers cache behind the removal"
        );
        let moves = p.plan(4, 128, 20);
        assert!(
            moves
                .iter()
                .all(|m| m.reason == Reason::WorkerLeft && m.from.as_deref() == Some("a"))
        );
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
        // Even after its release, a worker that is back is not released any more.
        p.remove_worker("a", 5);
        p.release("a");
        p.upsert_worker("a", "a:2", None);
        assert!(!p.is_released("a"));
    }

    #[test]
    fn the_rate_limit_counts_orphans_only() {
        let mut p = with_workers(&["a", "b"]);
        for i in 0..5 {
            p.set_resource(&format!("o{i}"), Some(Some("a")), 1);
            p.set_resource(&format!("u{i}"), Some(None), 1);
        }
        p.remove_worker("a", 2);
        p.release("a");
        let moves = p.plan(100, 2, 2);
        let orphans = moves
            .iter()
            .filter(|m| m.reason == Reason::WorkerLeft)
            .count();
        let created = moves.iter().filter(|m| m.reason == Reason::Created).count();
        assert_eq!((orphans, created), (2, 5));
    }

    #[test]
    fn a_cordoned_worker_takes_nothing_new_and_a_drain_empties_it() {
        let mut p = with_workers(&["a", "b", "c"]);
        for i in 0..10 {
            p.set_resource(&format!("r{i}"), Some(Some("a")), 1);
        }
        p.advance(1);
        p.set_cordoned("a", true);
        for _ in 0..20 {
            let r = p.reserve().expect("room");
            assert_ne!(r.worker, "a");
            p.cancel(r.token);
        }
        p.upsert_worker("a", "a:9", None);
        assert_ne!(
            p.reserve().map(|r| r.worker).as_deref(),
            Some("a"),
            "cordon survives re-registration"
        );
        let first = p.plan_drain("a", 4);
        assert_eq!(first.len(), 4);
        assert!(
            first
                .iter()
                .all(|m| m.reason == Reason::Drained && m.to.worker != "a")
        );
        let second = p.plan_drain("a", 100);
        assert_eq!(second.len(), 6, "in-flight moves are not planned twice");
        p.unplan(&second[0]);
        assert_eq!(
            p.plan_drain("a", 100).len(),
            1,
            "a failed move is planned again"
        );
        for (rev, m) in first.iter().chain(&second[1..]).enumerate() {
            p.set_resource(&m.name, Some(Some(&m.to.worker)), 2 + rev as i64);
        }
        p.advance(100);
        assert!(p.plan_drain("a", 100).len() <= 1);
    }

    #[test]
    fn rebalancing_converges_to_a_spread_of_one_within_the_limit() {
        let mut p = with_workers(&["a"]);
        for i in 0..301 {
            p.set_resource(&format!("r{i:03}"), Some(Some("a")), 1);
        }
        p.advance(1);
        p.upsert_worker("b", "b:1", None);
        p.upsert_worker("c", "c:1", None);
        assert_eq!(p.spread().0, 301);
        let mut rev = 2;
        let mut rounds = 0;
        loop {
            let moves = p.plan_rebalance(25, |_| Some(0));
            assert!(moves.len() <= 25);
            if moves.is_empty() {
                break;
            }
            for m in &moves {
                assert_eq!(m.reason, Reason::Rebalanced);
                p.confirm(m.to.token, rev);
                p.set_resource(&m.name, Some(Some(&m.to.worker)), rev);
                rev += 1;
            }
            p.advance(rev);
            rounds += 1;
        }
        assert!(p.spread().0 <= 1, "spread {:?}", p.spread());
        assert_eq!(rounds, 8, "200 moves at 25 a round");
        assert_eq!(
            p.load("a").unwrap_or(0) + p.load("b").unwrap_or(0) + p.load("c").unwrap_or(0),
            301
        );
    }

    #[test]
    fn rebalancing_skips_young_and_completed_tasks_and_cordoned_workers() {
        let mut p = with_workers(&["a", "b"]);
        for i in 0..6 {
            p.set_resource(&format!("r{i}"), Some(Some("a")), 1);
        }
        p.advance(1);
        p.set_done("r0", true);
        // Only r1 and r2 are old enough; r2 started later, so it goes first.
        let started = |n: &str| match n {
            "r1" => Some(10),
            "r2" => Some(20),
            "r0" => Some(0),
            _ => None,
        };
        let moves = p.plan_rebalance(10, started);
        let names: Vec<&str> = moves.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["r2", "r1"]);
        let mut q = with_workers(&["a", "b"]);
        for i in 0..6 {
            q.set_resource(&format!("r{i}"), Some(Some("a")), 1);
        }
        q.set_cordoned("b", true);
        assert!(q.plan_rebalance(10, |_| Some(0)).is_empty(), "no receiver");
        q.set_cordoned("b", false);
        q.set_cordoned("a", true);
        assert!(
            q.plan_rebalance(10, |_| Some(0)).is_empty(),
            "a cordoned worker keeps its tasks"
        );
    }

    #[test]
    fn a_preview_plans_without_moving_anything() {
        let mut p = with_workers(&["a", "b", "c"]);
        for i in 0..4 {
            p.set_resource(&format!("a{i}"), Some(Some("a")), 1);
            p.set_resource(&format!("b{i}"), Some(Some("b")), 1);
        }
        p.advance(1);
        let (moves, unplaced) = p.preview(&["a".into()], &["b".into()]);
        assert_eq!(moves.len(), 8);
        assert_eq!(unplaced, 0);
        assert!(moves.iter().all(|m| m.to.worker == "c"));
        assert_eq!(
            moves.iter().filter(|m| m.reason == Reason::Drained).count(),
            4
        );
        assert_eq!(
            (p.load("a"), p.load("b"), p.load("c")),
            (Some(4), Some(4), Some(0))
        );
        assert_eq!(
            p.plan_drain("a", 100).len(),
            4,
            "the real placement is untouched"
        );
        let (_, unplaced) = with_workers(&["a"]).preview(&["a".into()], &[]);
        assert_eq!(unplaced, 0);
        let mut lonely = with_workers(&["a"]);
        lonely.set_resource("x", Some(Some("a")), 1);
        assert_eq!(lonely.preview(&["a".into()], &[]).1, 1, "nowhere to go");
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
        assert!(p.plan(1, 1, 11).is_empty());
        p.upsert_worker("late", "l:1", None);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.assigned("r"), Some("late"));
    }
}
