//! How the leader splits a domain's politeness budget among the workers that want it: pure
//! rules, no I/O.
//!
//! - **Fair by demand.** Each worker weighs as many as its tasks that asked; a worker that did
//!   not have to wait is capped near what it used (1.5× + 0.5 req/s), and what it leaves goes
//!   to the others (max-min fairness, water-filling).
//! - **Never over the budget, even in transit.** A worker may use a grant it read until its
//!   lease ends, so a cut is not free for others until the worker confirms it has seen it or
//!   a lease has passed. Cuts apply at once; raises only from what no one holds.
//! - **Learning.** A new leader raises nothing for one lease length: it cannot know the cuts
//!   its predecessor had in transit.
//! - **Feedback.** 429s and 503s halve the domain's effective rate (at most once per lease);
//!   it recovers by a tenth of the budget per lease without them. A `Crawl-delay` caps the
//!   rate at one request per delay, one at a time, for an hour after it was last reported.

use std::time::{Duration, Instant};

use crate::model::politeness::{Budget, Grant, Want};

/// Lowest fraction of its budget throttling can bring a domain to.
pub const FLOOR: f64 = 1.0 / 64.0;
/// How long a reported `Crawl-delay` holds.
pub const CRAWL_DELAY_HOLD: Duration = Duration::from_secs(3600);

/// One worker's side of a domain.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Claim {
    /// What its tasks want (all zero when it wants nothing).
    pub want: Want,
    /// What its shares grant now.
    pub current: Grant,
    /// What it may still be using: its current grant, or a larger one it was cut from that it
    /// has not confirmed and whose lease has not ended.
    pub held: Grant,
}

/// The budget as it stands after feedback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Requests/s.
    pub rate: f64,
    /// Requests in flight.
    pub concurrency: u32,
}

/// New grants for `claims`, in order.
pub fn split(budget: Effective, claims: &[Claim], learning: bool) -> Vec<Grant> {
    let concurrency = split_concurrency(budget.concurrency, claims);
    let rate = split_rate(budget.rate, claims, &concurrency);
    let targets: Vec<Grant> = rate
        .iter()
        .zip(&concurrency)
        .map(|(&rate, &concurrency)| Grant { rate, concurrency })
        .collect();
    // Cuts now; raises from what is free once every claim's holding is counted.
    let mut grants: Vec<Grant> = targets
        .iter()
        .zip(claims)
        .map(|(t, c)| Grant {
            rate: t.rate.min(c.current.rate),
            concurrency: t.concurrency.min(c.current.concurrency),
        })
        .collect();
    if learning {
        return grants;
    }
    let held_rate: f64 = claims.iter().map(|c| c.held.rate.max(c.current.rate)).sum();
    let free_rate = (budget.rate - held_rate).max(0.0);
    let deficits: Vec<f64> = targets
        .iter()
        .zip(claims)
        .map(|(t, c)| (t.rate - c.current.rate).max(0.0))
        .collect();
    let wanted: f64 = deficits.iter().sum();
    if wanted > 0.0 {
        let fraction = (free_rate / wanted).min(1.0);
        for (grant, deficit) in grants.iter_mut().zip(&deficits) {
            grant.rate += deficit * fraction;
        }
    }
    let held_slots: u32 = claims
        .iter()
        .map(|c| c.held.concurrency.max(c.current.concurrency))
        .sum();
    let mut free_slots = budget.concurrency.saturating_sub(held_slots);
    for (grant, target) in grants.iter_mut().zip(&targets) {
        let raise = target.concurrency.saturating_sub(grant.concurrency);
        let given = raise.min(free_slots);
        grant.concurrency += given;
        free_slots -= given;
    }
    grants
}

fn weight(claim: &Claim) -> f64 {
    f64::from(claim.want.tasks.max(1))
}

fn wants(claim: &Claim) -> bool {
    claim.want.tasks > 0 || claim.want.waiting > 0
}

/// Slots by weight among the claims that want the domain: whole slots by largest remainder.
fn split_concurrency(total: u32, claims: &[Claim]) -> Vec<u32> {
    let weights: Vec<f64> = claims
        .iter()
        .map(|c| if wants(c) { weight(c) } else { 0.0 })
        .collect();
    let sum: f64 = weights.iter().sum();
    if sum == 0.0 {
        return vec![0; claims.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| f64::from(total) * w / sum).collect();
    let mut slots: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut left = total.saturating_sub(slots.iter().sum());
    let mut order: Vec<usize> = (0..claims.len()).filter(|&i| weights[i] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for i in order {
        if left == 0 {
            break;
        }
        slots[i] += 1;
        left -= 1;
    }
    slots
}

/// Rate by max-min fairness, weighted by tasks, each capped near its use unless it waited.
fn split_rate(total: f64, claims: &[Claim], slots: &[u32]) -> Vec<f64> {
    let cap = |c: &Claim| {
        if c.want.saturated || c.want.used == 0.0 {
            f64::INFINITY
        } else {
            c.want.used * 1.5 + 0.5
        }
    };
    let mut rates = vec![0.0; claims.len()];
    let mut open: Vec<usize> = (0..claims.len())
        .filter(|&i| wants(&claims[i]) && slots[i] > 0)
        .collect();
    let mut left = total;
    while !open.is_empty() && left > 1e-9 {
        let weights: f64 = open.iter().map(|&i| weight(&claims[i])).sum();
        let capped: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| cap(&claims[i]) - rates[i] <= left * weight(&claims[i]) / weights)
            .collect();
        if capped.is_empty() {
            for &i in &open {
                rates[i] += left * weight(&claims[i]) / weights;
            }
            break;
        }
        for &i in &capped {
            let add = cap(&claims[i]) - rates[i];
            rates[i] += add;
            left -= add;
        }
        open.retain(|i| !capped.contains(i));
    }
    rates
}

/// A domain's feedback state on the leader: multiplicative cuts on 429/503, additive recovery.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// Fraction of the budget in effect, in [`FLOOR`], 1].
    pub factor: f64,
    last_change: Instant,
    /// Throttled answers counted so far, per worker, as their demands report them.
    counts: std::collections::HashMap<String, u64>,
    crawl_delay: Option<(u64, Instant)>,
}

impl Throttle {
    /// A domain at its full budget.
    pub fn new(now: Instant) -> Self {
        Self {
            factor: 1.0,
            last_change: now,
            counts: std::collections::HashMap::new(),
            crawl_delay: None,
        }
    }

    /// Takes one worker's report: its throttled count (cumulative) and crawl delay.
    /// Returns true when the count grew.
    pub fn report(&mut self, worker: &str, want: &Want, now: Instant) -> bool {
        if let Some(ms) = want.crawl_delay_ms.filter(|ms| *ms > 0) {
            self.crawl_delay = Some((ms, now));
        }
        // A worker seen for the first time brings its whole count; a restarted one starts at 0.
        match self.counts.get_mut(worker) {
            Some(count) => {
                let grew = want.throttled > *count;
                *count = want.throttled;
                grew
            }
            None => {
                self.counts.insert(worker.to_owned(), want.throttled);
                false
            }
        }
    }

    /// One round: cut if `throttled` and no cut within `lease`, else recover a tenth of the
    /// budget per `lease` passed.
    pub fn round(&mut self, throttled: bool, lease: Duration, now: Instant) {
        let since = now.saturating_duration_since(self.last_change);
        if throttled {
            if since >= lease {
                self.factor = (self.factor / 2.0).max(FLOOR);
                self.last_change = now;
            }
        } else if self.factor < 1.0 && since >= lease {
            self.factor = (self.factor + 0.1).min(1.0);
            self.last_change = now;
        }
    }

    /// What `budget` allows now.
    pub fn effective(&self, budget: &Budget, now: Instant) -> Effective {
        let mut rate = budget.rate * self.factor;
        let mut concurrency = budget.concurrency;
        if let Some((ms, at)) = self.crawl_delay
            && now.saturating_duration_since(at) < CRAWL_DELAY_HOLD
        {
            rate = rate.min(1000.0 / ms as f64);
            concurrency = 1;
        }
        Effective { rate, concurrency }
    }

    /// Forgets a worker that wants nothing any more.
    pub fn forget(&mut self, worker: &str) {
        self.counts.remove(worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(tasks: u32, used: f64, saturated: bool) -> Want {
        Want {
            tasks,
            used,
            saturated,
            ..Want::default()
        }
    }

    fn claim(want: Want, rate: f64, concurrency: u32) -> Claim {
        let current = Grant { rate, concurrency };
        Claim {
            want,
            current,
            held: current,
        }
    }

    fn budget(rate: f64, concurrency: u32) -> Effective {
        Effective { rate, concurrency }
    }

    #[test]
    fn equal_demand_splits_evenly_and_never_over() {
        let claims = vec![claim(want(4, 0.0, true), 0.0, 0); 3];
        let grants = split(budget(20.0, 8), &claims, false);
        let rate: f64 = grants.iter().map(|g| g.rate).sum();
        let slots: u32 = grants.iter().map(|g| g.concurrency).sum();
        assert!((rate - 20.0).abs() < 1e-9, "{grants:?}");
        assert_eq!(slots, 8);
        assert!(grants.iter().all(|g| (g.rate - 20.0 / 3.0).abs() < 1e-9));
    }

    #[test]
    fn a_light_worker_is_capped_near_its_use_and_the_rest_goes_to_the_busy() {
        let claims = vec![
            claim(want(1, 1.0, false), 0.0, 0),
            claim(want(1, 0.0, true), 0.0, 0),
        ];
        let grants = split(budget(10.0, 4), &claims, false);
        assert!((grants[0].rate - 2.0).abs() < 1e-9, "{grants:?}");
        assert!((grants[1].rate - 8.0).abs() < 1e-9, "{grants:?}");
    }

    #[test]
    fn a_cut_frees_nothing_until_it_is_released() {
        // Worker 0 held all 10; now worker 1 wants half. Worker 0 is cut at once, but worker 1
        // gets only what no one holds: nothing while worker 0 may still use its old grant.
        let mut first = claim(want(1, 0.0, true), 10.0, 4);
        let second = claim(want(1, 0.0, true), 0.0, 0);
        let grants = split(budget(10.0, 4), &[first, second], false);
        assert!((grants[0].rate - 5.0).abs() < 1e-9);
        assert_eq!(grants[1].rate, 0.0);
        assert_eq!(grants[0].concurrency, 2);
        assert_eq!(grants[1].concurrency, 0);
        // Released (confirmed or expired): the raise follows.
        first.current = grants[0];
        first.held = grants[0];
        let second = Claim {
            current: grants[1],
            held: grants[1],
            ..second
        };
        let grants = split(budget(10.0, 4), &[first, second], false);
        assert!((grants[1].rate - 5.0).abs() < 1e-9);
        assert_eq!(grants[1].concurrency, 2);
    }

    #[test]
    fn while_learning_nothing_is_raised() {
        let claims = [
            claim(want(1, 0.0, true), 3.0, 1),
            claim(want(1, 0.0, true), 0.0, 0),
        ];
        let grants = split(budget(10.0, 4), &claims, true);
        assert_eq!(grants[0].rate, 3.0);
        assert_eq!(grants[1], Grant::default());
    }

    #[test]
    fn a_worker_that_wants_nothing_is_cut_to_nothing() {
        let claims = [claim(Want::default(), 5.0, 2)];
        assert_eq!(split(budget(10.0, 4), &claims, false)[0], Grant::default());
    }

    #[test]
    fn more_workers_than_slots_get_whole_slots_and_only_they_get_rate() {
        let claims = vec![claim(want(1, 0.0, true), 0.0, 0); 3];
        let grants = split(budget(9.0, 2), &claims, false);
        assert_eq!(grants.iter().map(|g| g.concurrency).sum::<u32>(), 2);
        let rate: f64 = grants.iter().map(|g| g.rate).sum();
        assert!((rate - 9.0).abs() < 1e-9);
        assert!(
            grants
                .iter()
                .all(|g| (g.concurrency == 0) == (g.rate == 0.0))
        );
    }

    #[test]
    fn throttling_halves_then_recovers_by_tenths() {
        let start = Instant::now();
        let lease = Duration::from_secs(5);
        let b = Budget {
            rate: 20.0,
            concurrency: 4,
            scope: Default::default(),
        };
        let mut t = Throttle::new(start);
        let w = Want {
            throttled: 3,
            ..Want::default()
        };
        assert!(!t.report("w", &w, start), "a first report is a baseline");
        let w = Want {
            throttled: 5,
            ..Want::default()
        };
        assert!(t.report("w", &w, start));
        t.round(true, lease, start + lease);
        assert_eq!(t.effective(&b, start + lease).rate, 10.0);
        t.round(true, lease, start + lease + Duration::from_secs(1));
        assert_eq!(t.factor, 0.5, "at most one cut per lease");
        t.round(false, lease, start + lease * 2);
        assert!((t.factor - 0.6).abs() < 1e-9);
        for i in 3..10 {
            t.round(false, lease, start + lease * i);
        }
        assert_eq!(t.factor, 1.0);
        let w = Want {
            throttled: 5,
            crawl_delay_ms: Some(2_000),
            ..Want::default()
        };
        t.report("w", &w, start);
        let e = t.effective(&b, start + Duration::from_secs(10));
        assert_eq!((e.rate, e.concurrency), (0.5, 1));
        let later = start + CRAWL_DELAY_HOLD + Duration::from_secs(1);
        assert_eq!(t.effective(&b, later).rate, 20.0);
    }
}
