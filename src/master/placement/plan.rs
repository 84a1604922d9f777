//! Planning moves: orphans and unassigned resources, a drain, rebalancing, and a dry run of
//! them on a clone; all through one way of choosing a worker.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::{Move, Placement, REBALANCE_CANDIDATES, Reservation, Wants};
use crate::etcd::cache::Name;
use crate::model::constraints::DEDICATED_LABEL;
use crate::model::schedule::Reason;

impl Placement {
    /// Chooses workers for up to `limit` resources that need one, higher priorities first, of
    /// which at most `orphan_limit` belong to released workers (unassigned ones are not
    /// rate-limited). Orphans whose cause is newer than `workers_revision` wait, as do those of
    /// workers not released. A resource that fits no worker is passed over, and others with the
    /// same constraints are not tried again in this pass. With `preemptions` above 0, a waiting
    /// resource that only lacks room may displace the lowest-priority running task below its
    /// own priority on a worker it fits, up to that many (counted in `orphan_limit` too).
    pub fn plan(
        &mut self,
        limit: usize,
        orphan_limit: usize,
        preemptions: usize,
        workers_revision: i64,
    ) -> Vec<Move> {
        if !self.assigner.any_room() && preemptions == 0 {
            // Nothing can be placed: do not walk what waits.
            return Vec::new();
        }
        let (mut orphans, mut preempted) = (0usize, 0usize);
        let mut moves: Vec<Move> = Vec::new();
        let mut full: HashSet<Option<Arc<Wants>>> = HashSet::new();
        let mut no_victim: HashSet<(Option<Arc<Wants>>, i32)> = HashSet::new();
        for (name, priority, since, from) in self.needs.iter() {
            if moves.len() >= limit {
                break;
            }
            let from = from.map(|w| &**w);
            if let Some(worker) = from
                && !(orphans < orphan_limit
                    && since <= workers_revision
                    && self.released.contains(worker))
            {
                continue;
            }
            let wants = self.wants.get(&**name).cloned();
            // Tasks that choose alike share a verdict; a priority alone chooses like none.
            let kind = wants.clone().filter(|w| w.constraints.chooses());
            let mut evicts = None;
            let mut to = None;
            if !full.contains(&kind) {
                to = match &kind {
                    Some(w) => {
                        let penalty = self.spread_penalty(w);
                        self.assigner.pick_for(Some(&w.constraints), penalty)
                    }
                    None => self.assigner.pick(),
                };
                if to.is_none() {
                    full.insert(kind.clone());
                }
            }
            if to.is_none()
                && preempted < preemptions
                && orphans + usize::from(from.is_some()) < orphan_limit
                && !no_victim.contains(&(kind.clone(), priority))
            {
                match self.victim(kind.as_deref(), priority) {
                    Some((victim, worker)) => {
                        if let Some(address) = self.assigner.take(&worker) {
                            self.in_flight.insert(victim.to_string(), worker.clone());
                            evicts = Some(victim.to_string());
                            preempted += 1;
                            orphans += 1;
                            to = Some((worker, address));
                        }
                    }
                    None => {
                        no_victim.insert((kind.clone(), priority));
                    }
                }
            }
            let Some((worker, address)) = to else {
                continue;
            };
            orphans += usize::from(from.is_some());
            let token = self.next_token;
            self.next_token += 1;
            let labels = self.assigner.labels(&worker).cloned();
            self.spreads
                .count_wants(wants.as_deref(), &worker, labels.as_deref(), 1);
            self.reservations
                .insert(token, (worker.clone(), None, wants.clone()));
            let to = Reservation {
                token,
                worker,
                address,
            };
            moves.push(Move {
                name: name.to_string(),
                since,
                from: from.map(str::to_owned),
                to,
                reason: if from.is_some() {
                    Reason::WorkerLeft
                } else {
                    Reason::Created
                },
                evicts,
            });
        }
        for m in &moves {
            self.needs.remove(&m.name);
        }
        moves
    }

    /// The running task of lowest priority below `priority` on a worker that a task with
    /// `wants` may use (uncordoned), and that worker.
    fn victim(&self, wants: Option<&Wants>, priority: i32) -> Option<(Name, String)> {
        if priority <= 0 {
            return None;
        }
        let c = wants.map(|w| &w.constraints);
        let mut best: Option<(i32, Name, String)> = None;
        for (worker, labels, cordoned, _) in self.assigner.candidates() {
            let fits = match c {
                Some(c) => c.admits(labels),
                None => !labels.contains_key(DEDICATED_LABEL),
            };
            if cordoned || !fits {
                continue;
            }
            let lowest = self.with_movable(worker, |names| {
                names
                    .map(|n| (self.priority(n), n))
                    .filter(|(p, _)| *p < priority)
                    .min_by_key(|(p, _)| *p)
                    .map(|(p, n)| (p, Name::clone(n)))
            });
            if let Some((p, n)) = lowest
                && best.as_ref().is_none_or(|b| p < b.0)
            {
                best = Some((p, n, worker.to_owned()));
                if p == 0 {
                    break;
                }
            }
        }
        best.map(|(_, n, w)| (n, w))
    }

    /// Chooses workers for up to `limit` resources of present worker `from`, which is being
    /// drained (and so cordoned). A resource that fits no other worker stays where it is.
    pub fn plan_drain(&mut self, from: &str, limit: usize) -> Vec<Move> {
        let names: Vec<Name> = self
            .names_on(from)
            .into_iter()
            .filter(|n| !self.in_flight.contains_key(&**n) && !self.needs.contains(n))
            .collect();
        let mut moves = Vec::new();
        let mut full: HashSet<Option<Arc<Wants>>> = HashSet::new();
        for name in names {
            if moves.len() >= limit || !self.assigner.any_room() {
                break;
            }
            let wants = self.wants.get(&*name).cloned();
            let kind = wants.clone().filter(|w| w.constraints.chooses());
            if full.contains(&kind) {
                continue;
            }
            let Some(to) = self.reserve(wants.as_ref()) else {
                full.insert(kind);
                continue;
            };
            moves.push(self.depart(name.to_string(), from, to, Reason::Drained));
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
            evicts: None,
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
            // No worker is less loaded than the least loaded: then nothing may move at all.
            if d == r || (dl - 1.0) / dw < (rl + 1.0) / rw {
                break;
            }
            let donor_id = loads[d].0.clone();
            let mut candidates: Vec<(i64, Name)> = self.with_movable(&donor_id, |names| {
                names
                    .filter_map(|n| movable(n).map(|started| (started, Name::clone(n))))
                    // The youngest among the first candidates found, so a round costs the same
                    // whether the donor holds a hundred tasks or a hundred thousand.
                    .take(REBALANCE_CANDIDATES)
                    .collect()
            });
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            // The youngest that some less loaded worker may take, without breaking its selector
            // or a dedication, and without going to a worker it prefers less.
            let found = candidates.iter().find_map(|(_, name)| {
                let wants = self.wants.get(&**name);
                let c = wants.map(|w| &*w.constraints);
                let here = self.assigner.score(&donor_id, c);
                loads
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| {
                        *i != d
                            && self.assigner.admits(&l.0, c)
                            && self.assigner.score(&l.0, c) >= here
                            && (dl - 1.0) / dw >= (f64::from(l.1) + 1.0) / f64::from(l.2)
                    })
                    .min_by(|a, b| ratio(a.1).total_cmp(&ratio(b.1)))
                    .map(|(i, _)| (Name::clone(name), i))
            });
            let Some((name, r)) = found else {
                // Nothing on the most loaded worker may move yet: try the next one.
                skip.insert(donor_id);
                continue;
            };
            let receiver_id = loads[r].0.clone();
            let Some(to) = self.reserve_on(&receiver_id, self.wants.get(&*name).cloned()) else {
                break;
            };
            loads[d].1 -= 1;
            loads[r].1 += 1;
            moves.push(self.depart(name.to_string(), &donor_id, to, Reason::Rebalanced));
        }
        moves
    }

    /// Runs `f` over the resources the cache shows on worker `id` that may be chosen to move:
    /// not completed there, not moving already, not waiting for a worker.
    fn with_movable<R>(&self, id: &str, f: impl FnOnce(&mut dyn Iterator<Item = &Name>) -> R) -> R {
        self.resources.with_index(|_, index, _| {
            let mut names = index.names(id).into_iter().flatten().filter(|n| {
                !self.done.contains_key(&***n)
                    && !self.in_flight.contains_key(&***n)
                    && !self.needs.contains(n)
            });
            f(&mut names)
        })
    }

    /// Reserves room on worker `id`, chosen by the caller.
    fn reserve_on(&mut self, id: &str, wants: Option<Arc<Wants>>) -> Option<Reservation> {
        let address = self.assigner.take(id)?;
        Some(self.reserved(id.to_owned(), address, wants.as_ref()))
    }

    /// What would move where if the workers in `remove` left for good and those in `drain`
    /// were drained, with no rate limit: planned on a clone by the code that plans real moves.
    pub fn preview(&self, drain: &[String], remove: &[String]) -> Preview {
        let mut p = self.clone();
        for id in remove {
            p.remove_worker(id, 0);
            p.release(id);
        }
        for id in drain {
            p.set_cordoned(id, true);
        }
        let mut moves = p.plan(usize::MAX, usize::MAX, 0, i64::MAX);
        for id in drain {
            moves.extend(p.plan_drain(id, usize::MAX));
        }
        let why = moves
            .iter()
            .map(|m| p.why_chosen(&m.name, &m.to.worker))
            .collect();
        let mut unplaced: Vec<(String, String)> = p
            .needs
            .iter()
            .filter(|(_, _, _, from)| from.is_none_or(|w| p.released.contains(&**w)))
            .map(|(n, ..)| {
                let why = p.why_waiting(n).map(|w| w.1).unwrap_or_default();
                (n.to_string(), why)
            })
            .collect();
        for id in drain {
            for n in p.names_on(id) {
                if !p.in_flight.contains_key(&*n) {
                    let none = crate::model::constraints::Constraints::default();
                    let c = p.wants.get(&*n).map_or(&none, |w| &w.constraints);
                    let why = p.explain(c).1;
                    unplaced.push((n.to_string(), format!("stays on {id}: {why}")));
                }
            }
        }
        Preview {
            moves,
            why,
            unplaced,
        }
    }

    /// Why worker `to` was chosen for resource `name`, in a few words.
    fn why_chosen(&self, name: &str, to: &str) -> String {
        let Some(w) = self.wants.get(name) else {
            return "least loaded".into();
        };
        let c = &w.constraints;
        let mut parts = Vec::new();
        if !c.selector.is_empty() {
            parts.push(format!("matches {}", c.selector.describe()));
        }
        if let Some(d) = self
            .assigner
            .labels(to)
            .and_then(|l| l.get(DEDICATED_LABEL))
        {
            parts.push(format!("tolerates dedicated={d}"));
        }
        if !c.preferences.is_empty() {
            parts.push(format!(
                "preference score {}",
                self.assigner.score(to, Some(c))
            ));
        }
        if let Some(s) = &c.spread {
            parts.push(format!("spreads {} over {}", s.by, s.over));
        }
        if c.priority != 0 {
            parts.push(format!("priority {}", c.priority));
        }
        parts.push("least loaded among those".into());
        parts.join("; ")
    }
}

/// A dry run's plan.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The moves, in the order they would be written.
    pub moves: Vec<Move>,
    /// Why each move's worker was chosen.
    pub why: Vec<String>,
    /// The resources that would find no worker, each with why.
    pub unplaced: Vec<(String, String)>,
}
