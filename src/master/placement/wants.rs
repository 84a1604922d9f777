//! What a resource asks of its worker, as the placement keeps it: its constraints, and the
//! spread group it belongs to. Only resources that ask something are kept, so a fleet without
//! constraints costs nothing here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::Placement;
use crate::etcd::cache::Name;
use crate::model::constraints::{Constraints, DEDICATED_LABEL, Labels};
use crate::model::resource::Resource;
use crate::model::waiting::{Candidate, Wait, explain};

/// A resource's constraints and spread group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wants {
    /// What it asks.
    pub constraints: Constraints,
    /// `by=value` when it spreads with the resources sharing that label.
    pub group: Option<Arc<str>>,
}

impl Wants {
    /// What resource `r` asks, or `None` when it asks nothing.
    pub fn of(r: &Resource) -> Option<Arc<Self>> {
        Self::new(r.constraints()?, &r.labels())
    }

    /// What a resource with constraints `c` and `labels` asks, or `None` for nothing.
    pub fn new(c: Constraints, labels: &BTreeMap<String, String>) -> Option<Arc<Self>> {
        if c.is_empty() {
            return None;
        }
        let group = c.spread.as_ref().and_then(|s| {
            labels
                .get(&s.by)
                .map(|v| Arc::from(format!("{}={v}", s.by)))
        });
        Some(Arc::new(Self {
            constraints: c,
            group,
        }))
    }
}

impl Placement {
    /// The priority of resource `name` (0 unless it asks for one).
    pub(super) fn priority(&self, name: &str) -> i32 {
        self.wants.get(name).map_or(0, |w| w.constraints.priority)
    }

    /// What resource `name` asks, if anything.
    pub fn wants(&self, name: &str) -> Option<&Arc<Wants>> {
        self.wants.get(name)
    }

    /// Counts `name` (with its current wants) `delta` times on `worker` in its spread group.
    pub(super) fn count_group(&mut self, name: &str, worker: Option<&str>, delta: i32) {
        let (Some(worker), Some(group)) =
            (worker, self.wants.get(name).and_then(|w| w.group.clone()))
        else {
            return;
        };
        let per_worker = self.groups.entry(group.clone()).or_default();
        let count = per_worker.entry(Name::from(worker)).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            per_worker.remove(worker);
            if per_worker.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// For a resource that spreads, how many of its group each value of the spread label
    /// holds (reservations included), as a function of a worker's labels; 0 for the others.
    pub(super) fn spread_penalty(&self, w: &Wants) -> impl Fn(&Labels) -> u32 + use<> {
        let mut by_value: HashMap<String, u32> = HashMap::new();
        let over = w.constraints.spread.as_ref().map(|s| s.over.clone());
        if let (Some(over), Some(group)) = (&over, &w.group) {
            let value_of = |worker: &str| {
                self.assigner
                    .labels(worker)
                    .and_then(|l| l.get(over).cloned())
                    .unwrap_or_default()
            };
            for (worker, n) in self.groups.get(group).into_iter().flatten() {
                *by_value.entry(value_of(worker)).or_default() += n;
            }
            for (worker, _, g) in self.reservations.values() {
                if g.as_ref() == Some(group) {
                    *by_value.entry(value_of(worker)).or_default() += 1;
                }
            }
        }
        move |labels: &Labels| match &over {
            Some(over) => by_value
                .get(labels.get(over).map_or("", String::as_str))
                .copied()
                .unwrap_or(0),
            None => 0,
        }
    }

    /// True when a task asking `wants` may stay on worker `id`: its labels admit it (room
    /// aside). A worker the placement does not know is not judged.
    pub fn fits(&self, id: &str, wants: Option<&Wants>) -> bool {
        self.assigner.labels(id).is_none_or(|labels| match wants {
            Some(w) => w.constraints.admits(labels),
            None => !labels.contains_key(DEDICATED_LABEL),
        })
    }

    /// Why resource `name` waits for a worker, and the sentence that says so; `None` when it
    /// does not wait.
    pub fn why_waiting(&self, name: &str) -> Option<(Wait, String)> {
        if !self.needs.contains(name) {
            return None;
        }
        if let Some(worker) = self.assigned(name)
            && !self.released.contains(worker)
        {
            return Some((
                Wait::Grace,
                format!("its worker {worker} left; the grace period runs before it moves"),
            ));
        }
        let none = Constraints::default();
        let c = self.wants.get(name).map_or(&none, |w| &w.constraints);
        Some(self.explain(c))
    }

    pub(super) fn explain(&self, c: &Constraints) -> (Wait, String) {
        explain(
            c,
            self.assigner
                .candidates()
                .map(|(_, labels, cordoned, room)| Candidate {
                    labels,
                    cordoned,
                    room,
                }),
        )
    }

    /// How many resources wait, by why: each distinct set of constraints is judged once.
    pub fn waiting(&self) -> BTreeMap<Wait, usize> {
        let mut counts = BTreeMap::new();
        let mut judged: HashMap<Option<&Constraints>, Wait> = HashMap::new();
        for (name, _, _) in self.needs.iter() {
            let wait = match self.assigned(name) {
                Some(worker) if !self.released.contains(worker) => Wait::Grace,
                _ => {
                    let c = self.wants.get(&**name).map(|w| &w.constraints);
                    *judged
                        .entry(c)
                        .or_insert_with(|| self.explain(c.unwrap_or(&Constraints::default())).0)
                }
            };
            *counts.entry(wait).or_default() += 1;
        }
        counts
    }
}
