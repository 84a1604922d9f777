//! What a resource asks of its worker, as the placement keeps it: its constraints, and the
//! spread group it belongs to. Only resources that ask something are kept, so a fleet without
//! constraints costs nothing here.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use super::Placement;
use crate::model::constraints::{Constraints, DEDICATED_LABEL, Labels};
use crate::model::resource::Resource;
use crate::model::waiting::{Candidate, Wait, explain};

/// A resource's constraints and spread group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wants {
    /// What it asks, shared by the resources that ask alike.
    pub constraints: Arc<Constraints>,
    /// `by=value` when it spreads with the resources sharing that label.
    pub group: Option<Arc<str>>,
}

impl Wants {
    /// What resource `r` asks, or `None` when it asks nothing.
    pub fn of(r: &Resource) -> Option<Arc<Self>> {
        Self::with(Arc::clone(r.shared_constraints()?), |key| r.label(key))
    }

    /// What a resource with constraints `c` and `labels` asks, or `None` for nothing.
    pub fn new(c: Constraints, labels: &BTreeMap<String, String>) -> Option<Arc<Self>> {
        Self::with(Arc::new(c), |key| labels.get(key).map(String::as_str))
    }

    /// The same, reading only the label that makes its spread group through `label`.
    fn with<'a>(c: Arc<Constraints>, label: impl Fn(&str) -> Option<&'a str>) -> Option<Arc<Self>> {
        if c.is_empty() {
            return None;
        }
        // A group is its members' label and the worker label they spread over.
        let group = c
            .spread
            .as_ref()
            .and_then(|s| label(&s.by).map(|v| Arc::from(format!("{}={v} over {}", s.by, s.over))));
        Some(Arc::new(Self {
            constraints: c,
            group,
        }))
    }
}

/// What resources sharing one set of constraints ask: without the spread label, and with
/// each of its values.
type Alike = (Option<Arc<Wants>>, HashMap<String, Arc<Wants>>);

/// What many resources ask, read at once (a take-over): resources that ask alike already
/// share their constraints, and those in the same spread group too share one [`Wants`], so
/// that a hundred thousand alike cost a few allocations.
#[derive(Debug, Default)]
pub struct WantsMemo {
    /// Shared constraints (by address) → what they ask of a resource without the spread
    /// label, and of one with each of its values.
    built: HashMap<usize, Alike>,
}

impl WantsMemo {
    /// What resource `r` asks, as [`Wants::of`] says.
    pub fn of(&mut self, r: &Resource) -> Option<Arc<Wants>> {
        let c = r.shared_constraints()?;
        let value = c.spread.as_ref().and_then(|s| r.label(&s.by));
        let (without, by_value) = self.built.entry(Arc::as_ptr(c) as usize).or_default();
        let known = match value {
            None => without.as_ref(),
            Some(v) => by_value.get(v),
        };
        if let Some(w) = known {
            return Some(Arc::clone(w));
        }
        let w = Wants::with(Arc::clone(c), |by| r.label(by))?;
        match value {
            None => *without = Some(Arc::clone(&w)),
            Some(v) => {
                by_value.insert(v.to_owned(), Arc::clone(&w));
            }
        }
        Some(w)
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
        if worker.is_some() {
            let wants = self.wants.get(name).cloned();
            self.count_spread(wants.as_deref(), worker, delta);
        }
    }

    /// Counts a resource asking `wants` `delta` times on `worker` in its spread group.
    pub(super) fn count_spread(&mut self, wants: Option<&Wants>, worker: Option<&str>, delta: i32) {
        if let Some(worker) = worker {
            let labels = self.assigner.labels(worker).cloned();
            self.spreads
                .count_wants(wants, worker, labels.as_deref(), delta);
        }
    }

    /// For a resource that spreads, how many of its group each value of the spread label
    /// holds (reservations included), as a function of a worker's labels; 0 for the others.
    pub(super) fn spread_penalty(&self, w: &Wants) -> impl Fn(&Labels) -> u32 + use<> {
        let over = w.constraints.spread.as_ref().map(|s| s.over.clone());
        let by_value = match (&over, &w.group) {
            (Some(_), Some(group)) => self.spreads.values(group),
            _ => HashMap::new(),
        };
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
        if let Some(worker) = self.waits_on(name)
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
        for (name, _, _, from) in self.needs.iter() {
            let wait = match from {
                Some(worker) if !self.released.contains(&**worker) => Wait::Grace,
                _ => {
                    let c = self.wants.get(&**name).map(|w| &*w.constraints);
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
