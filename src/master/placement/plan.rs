//! Planning moves: orphans and unassigned resources, a drain, rebalancing, and a dry run of
//! them on a clone; all through one way of choosing a worker.

use std::collections::{HashMap, HashSet};

use super::{Move, Placement, REBALANCE_CANDIDATES, Reservation};
use crate::model::schedule::Reason;

impl Placement {
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
}
