//! Least-loaded choice of a worker, with capacities, labels and random tie-breaking.
//!
//! Workers with room are kept in buckets by load ([`buckets`]), so a choice is the lowest
//! bucket's random member: O(log W) per assignment, with no re-sorting. Bulk assignment of
//! thousands of resources is therefore near-linear. A full worker leaves the buckets until it
//! has room.
//!
//! One set of buckets holds the workers any task may use. Workers are also pooled by their
//! set of labels, each pool with its own buckets: a task with constraints is judged once per
//! pool (selector, dedication, preferences and spread all depend on labels alone), and takes
//! the least loaded worker of the best pool. That is O(P log W) for P distinct label sets,
//! whatever the number of workers; a label unique to each worker makes P equal W.

mod buckets;

use std::sync::Arc;

use foldhash::HashMap;
use rand::RngExt;

use crate::model::constraints::{Constraints, DEDICATED_LABEL, Labels};
use crate::object::Name;
use buckets::Buckets;

/// One worker as the assigner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    address: String,
    capacity: Option<u32>,
    load: u32,
    /// False while cordoned: it keeps its load but is never chosen.
    eligible: bool,
    /// Its labels (registration metadata).
    labels: Arc<Labels>,
}

impl Slot {
    fn has_room(&self) -> bool {
        self.eligible && self.capacity.is_none_or(|c| self.load < c)
    }

    /// True when any task may use it: not dedicated.
    fn general(&self) -> bool {
        !self.labels.contains_key(DEDICATED_LABEL)
    }
}

/// How a pool ranks for a task, best highest: preference score, spread, load (both negated).
type Rank = (i32, i64, i64);

/// Loads of the present workers, and the choice of the least loaded.
#[derive(Debug, Default, Clone)]
pub struct Assigner {
    /// Present workers; each id is one string shared with the buckets.
    slots: HashMap<Name, Slot>,
    /// Workers with room that any task may use.
    general: Buckets,
    /// Workers with room, by their set of labels; a pool with none is removed.
    pools: HashMap<Arc<Labels>, Buckets>,
}

impl Assigner {
    /// An assigner with no workers.
    pub fn new() -> Self {
        Self::default()
    }

    fn unbucket(&mut self, id: &str) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        self.general.remove(id, slot.load);
        if let Some(pool) = self.pools.get_mut(&*slot.labels) {
            pool.remove(id, slot.load);
            if pool.is_empty() {
                self.pools.remove(&*slot.labels);
            }
        }
    }

    fn bucket(&mut self, id: &str) {
        let Some((id, slot)) = self.slots.get_key_value(id) else {
            return;
        };
        if !slot.has_room() {
            return;
        }
        if slot.general() {
            self.general.insert(id, slot.load);
        }
        self.pools
            .entry(Arc::clone(&slot.labels))
            .or_default()
            .insert(id, slot.load);
    }

    /// Adds a worker, or updates its address, capacity and labels. `load` is what it holds
    /// now. A new worker is eligible; an updated one keeps its eligibility. `id` is kept as
    /// given: the placement passes its shared string.
    pub fn upsert(
        &mut self,
        id: impl Into<Name>,
        address: &str,
        capacity: Option<u32>,
        load: u32,
        labels: Arc<Labels>,
    ) {
        let id: Name = id.into();
        self.unbucket(&id);
        let eligible = self.slots.get(&*id).is_none_or(|s| s.eligible);
        self.slots.insert(
            Name::clone(&id),
            Slot {
                address: address.to_owned(),
                capacity,
                load,
                eligible,
                labels,
            },
        );
        self.bucket(&id);
    }

    /// The labels of a present worker.
    pub fn labels(&self, id: &str) -> Option<&Arc<Labels>> {
        self.slots.get(id).map(|s| &s.labels)
    }

    /// Makes a present worker eligible for new resources, or not (cordoned).
    pub fn set_eligible(&mut self, id: &str, eligible: bool) {
        self.unbucket(id);
        if let Some(slot) = self.slots.get_mut(id) {
            slot.eligible = eligible;
        }
        self.bucket(id);
    }

    /// True when some worker is eligible and has room.
    pub fn any_room(&self) -> bool {
        !self.pools.is_empty()
    }

    /// Number of distinct label sets among the workers with room: what a constrained choice
    /// costs.
    #[cfg(test)]
    fn pools(&self) -> usize {
        self.pools.len()
    }

    /// The best worker with room for a task with constraints `c` (none: any general worker):
    /// among those it admits, the highest preference score, then the lowest `spread` penalty,
    /// then the least loaded, ties at random. Counts one more resource on it and returns its id
    /// and address.
    pub fn pick_for(
        &mut self,
        c: Option<&Constraints>,
        spread: impl Fn(&Labels) -> u32,
    ) -> Option<(String, String)> {
        if !c.is_some_and(Constraints::chooses) {
            return self.pick();
        }
        let c = c?;
        let mut best: Option<(Rank, &[Name])> = None;
        // Tied pools are chosen in proportion to their least-loaded workers, so that every
        // tied worker is equally likely.
        let mut tied = 0usize;
        let mut rng = rand::rng();
        for (labels, pool) in &self.pools {
            if !c.admits(labels) {
                continue;
            }
            let Some((load, ids)) = pool.least() else {
                continue;
            };
            let key = (
                c.score(labels),
                -i64::from(spread(labels)),
                -i64::from(load),
            );
            match &best {
                Some((b, _)) if key < *b => continue,
                Some((b, _)) if key == *b => {
                    tied += ids.len();
                    if rng.random_range(0..tied) >= ids.len() {
                        continue;
                    }
                }
                _ => tied = ids.len(),
            }
            best = Some((key, ids));
        }
        let ids = best?.1;
        let id = ids[rng.random_range(0..ids.len())].to_string();
        let address = self.take(&id)?;
        Some((id, address))
    }

    /// True when worker `id` is present, eligible, has room, and admits a task with `c`.
    pub fn admits(&self, id: &str, c: Option<&Constraints>) -> bool {
        self.slots.get(id).is_some_and(|s| {
            s.has_room()
                && match c {
                    Some(c) => c.admits(&s.labels),
                    None => s.general(),
                }
        })
    }

    /// The preference score a task with `c` gives worker `id` (0 when absent or none).
    pub fn score(&self, id: &str, c: Option<&Constraints>) -> i32 {
        match (self.slots.get(id), c) {
            (Some(s), Some(c)) => c.score(&s.labels),
            _ => 0,
        }
    }

    /// Present workers with their labels, whether cordoned, and whether they have room.
    pub fn candidates(&self) -> impl Iterator<Item = (&str, &Labels, bool, bool)> {
        self.slots.iter().map(|(id, s)| {
            (
                &**id,
                &*s.labels,
                !s.eligible,
                s.capacity.is_none_or(|c| s.load < c),
            )
        })
    }

    /// True when `id` is present, eligible and has room.
    pub fn has_room(&self, id: &str) -> bool {
        self.slots.get(id).is_some_and(Slot::has_room)
    }

    /// Present workers: id, load, capacity, and whether eligible.
    pub fn workers(&self) -> impl Iterator<Item = (&str, u32, Option<u32>, bool)> {
        self.slots
            .iter()
            .map(|(id, s)| (&**id, s.load, s.capacity, s.eligible))
    }

    /// Counts one more resource on the present worker `id`, chosen by the caller, and returns
    /// its address.
    pub fn take(&mut self, id: &str) -> Option<String> {
        let address = self.slots.get(id)?.address.clone();
        self.adjust(id, 1);
        Some(address)
    }

    /// Removes a worker.
    pub fn remove(&mut self, id: &str) {
        self.unbucket(id);
        self.slots.remove(id);
    }

    /// True when `id` is a present worker.
    pub fn contains(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    /// The load of a present worker.
    pub fn load(&self, id: &str) -> Option<u32> {
        self.slots.get(id).map(|s| s.load)
    }

    /// Sets a present worker's load. Unknown workers are ignored.
    pub fn set_load(&mut self, id: &str, load: u32) {
        if self.slots.get(id).is_none_or(|s| s.load == load) {
            return;
        }
        self.unbucket(id);
        if let Some(slot) = self.slots.get_mut(id) {
            slot.load = load;
        }
        self.bucket(id);
    }

    /// Changes a present worker's load by `delta` (saturating at 0). Unknown workers are
    /// ignored: the load of an absent worker does not matter until it returns.
    pub fn adjust(&mut self, id: &str, delta: i64) {
        if let Some(slot) = self.slots.get(id) {
            let load = (i64::from(slot.load) + delta).clamp(0, i64::from(u32::MAX)) as u32;
            self.set_load(id, load);
        }
    }

    /// Chooses the least-loaded worker with room (ties at random) and counts one more resource
    /// on it. Returns its id and address, or `None` when no worker has room.
    pub fn pick(&mut self) -> Option<(String, String)> {
        let (_, ids) = self.general.least()?;
        let id = ids[rand::rng().random_range(0..ids.len())].to_string();
        self.adjust(&id, 1);
        let address = self.slots.get(id.as_str()).map(|s| s.address.clone())?;
        Some((id, address))
    }

    /// Number of present workers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no worker is present.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn picks_the_least_loaded() {
        let mut a = Assigner::new();
        a.upsert("old", "h:1", None, 2, Arc::default());
        a.upsert("new", "h:2", None, 0, Arc::default());
        let picks: Vec<String> = (0..4).filter_map(|_| a.pick().map(|(id, _)| id)).collect();
        let new = picks.iter().filter(|p| *p == "new").count();
        assert_eq!(new, 3, "{picks:?}");
        assert_eq!(a.load("old"), Some(3));
        assert_eq!(a.load("new"), Some(3));
    }

    #[test]
    fn respects_capacity_and_reports_none_when_full() {
        let mut a = Assigner::new();
        a.upsert("small", "h:1", Some(1), 0, Arc::default());
        a.upsert("big", "h:2", Some(3), 0, Arc::default());
        let picks: Vec<String> = std::iter::from_fn(|| a.pick().map(|(id, _)| id)).collect();
        assert_eq!(picks.len(), 4);
        assert_eq!(picks.iter().filter(|p| *p == "small").count(), 1);
        assert!(a.pick().is_none());
        a.adjust("small", -1);
        assert_eq!(a.pick().map(|(id, _)| id).as_deref(), Some("small"));
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let mut a = Assigner::new();
            for id in ["a", "b", "c", "d"] {
                a.upsert(id, "h", None, 0, Arc::default());
            }
            let (id, _) = a.pick().expect("a worker");
            *counts.entry(id).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4, "every tied worker gets chosen: {counts:?}");
    }

    #[test]
    fn stays_balanced_over_many_assignments_and_removals() {
        let mut a = Assigner::new();
        for i in 0..100 {
            a.upsert(format!("w{i}").as_str(), "h", None, 0, Arc::default());
        }
        for _ in 0..10_000 {
            a.pick().expect("a worker");
        }
        for i in 0..100 {
            assert_eq!(a.load(&format!("w{i}")), Some(100));
        }
        a.remove("w0");
        assert!(!a.contains("w0"));
        assert_eq!(a.len(), 99);
        a.adjust("w0", 1);
        a.upsert("w0", "h", Some(100), 100, Arc::default());
        for _ in 0..99 {
            assert_ne!(a.pick().map(|(id, _)| id).as_deref(), Some("w0"));
        }
    }

    #[test]
    fn an_ineligible_worker_keeps_its_load_and_is_never_chosen() {
        let mut a = Assigner::new();
        a.upsert("cordoned", "h:1", None, 0, Arc::default());
        a.upsert("busy", "h:2", None, 50, Arc::default());
        a.set_eligible("cordoned", false);
        a.upsert("cordoned", "h:1b", None, 0, Arc::default());
        for _ in 0..10 {
            assert_eq!(a.pick().map(|(id, _)| id).as_deref(), Some("busy"));
        }
        assert!(!a.has_room("cordoned"));
        assert_eq!(a.take("cordoned").as_deref(), Some("h:1b"));
        assert_eq!(a.load("cordoned"), Some(1));
        a.set_eligible("cordoned", true);
        assert_eq!(a.pick().map(|(id, _)| id).as_deref(), Some("cordoned"));
    }

    #[test]
    fn upsert_moves_a_worker_between_buckets() {
        let mut a = Assigner::new();
        a.upsert("a", "h:1", None, 5, Arc::default());
        a.upsert("b", "h:2", None, 1, Arc::default());
        a.upsert("b", "h:3", None, 9, Arc::default());
        assert_eq!(a.pick(), Some(("a".into(), "h:1".into())));
        assert!(!a.is_empty());
    }

    fn labelled(pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_constrained_choice_takes_the_least_loaded_admitted_worker_of_any_pool() {
        let mut a = Assigner::new();
        let eu = labelled(&[("region", "eu")]);
        let us = labelled(&[("region", "us")]);
        let acme = labelled(&[("region", "eu"), ("dedicated", "acme")]);
        for i in 0..50 {
            a.upsert(format!("eu{i}").as_str(), "h", Some(2), 1, Arc::clone(&eu));
            a.upsert(format!("us{i}").as_str(), "h", None, 0, Arc::clone(&us));
        }
        a.upsert("acme", "h", None, 0, acme);
        assert_eq!(a.pools(), 3);
        let c = Constraints::parse(
            &serde_json::json!({"selector": {"match_labels": {"region": "eu"}}}),
        )
        .expect("constraints");
        let picks: Vec<String> =
            std::iter::from_fn(|| a.pick_for(Some(&c), |_| 0).map(|(id, _)| id)).collect();
        assert_eq!(
            picks.len(),
            50,
            "one more on each eu worker, then they are full"
        );
        assert!(picks.iter().all(|id| id.starts_with("eu")), "{picks:?}");
        assert_eq!(a.pools(), 2, "a pool with no room leaves");
        a.adjust("eu7", -1);
        assert_eq!(
            a.pick_for(Some(&c), |_| 0).map(|(id, _)| id).as_deref(),
            Some("eu7")
        );
        // The unconstrained choice never takes the dedicated worker.
        for _ in 0..200 {
            assert_ne!(a.pick().map(|(id, _)| id).as_deref(), Some("acme"));
        }
    }

    #[test]
    fn tied_pools_share_the_choice_by_their_workers() {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let c = Constraints::parse(&serde_json::json!({"selector": {"match_expressions": [{"key": "region", "operator": "Exists"}]}}))
            .expect("constraints");
        for _ in 0..600 {
            let mut a = Assigner::new();
            a.upsert("eu", "h", None, 0, labelled(&[("region", "eu")]));
            a.upsert("us1", "h", None, 0, labelled(&[("region", "us")]));
            a.upsert("us2", "h", None, 0, labelled(&[("region", "us")]));
            let (id, _) = a.pick_for(Some(&c), |_| 0).expect("a worker");
            *counts.entry(id).or_default() += 1;
        }
        for id in ["eu", "us1", "us2"] {
            let n = counts.get(id).copied().unwrap_or(0);
            assert!(
                (120..=280).contains(&n),
                "each tied worker about a third: {counts:?}"
            );
        }
    }
}
