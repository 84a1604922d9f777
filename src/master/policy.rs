//! The scheduling policy's decisions, as pure functions of the fleet's state and the time, so
//! that each is unit-tested and the leader only gathers inputs and writes results:
//! - the grace period: when an absent worker's tasks may move ([`grace_over`]);
//! - the storm guard: when so many workers left at once that reassignment freezes, and when
//!   it thaws ([`storm`], [`thaws`]);
//! - the reassignment rate ([`TokenBucket`]);
//! - when rebalancing is due ([`rebalance_due`]).
//!
//! Where resources go is the placement's business ([`crate::master::placement`]); this file
//! only says *whether* and *how many*.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::SchedulingConfig;
use crate::model::schedule::Storm;

/// True when a worker that left at `left_at_ms` has been gone for the whole grace period.
pub fn grace_over(config: &SchedulingConfig, left_at_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(left_at_ms) >= millis(config.reassign_after)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The storm guard: given the absent workers and when each left, how many workers are present,
/// and when the last storm thawed, a new freeze when more than `storm_fraction` of the workers
/// (present, plus those that left within the window) left within `storm_window`, and at least
/// `storm_min_workers` did. Departures before the last thaw no longer count.
pub fn storm(
    config: &SchedulingConfig,
    departed: &HashMap<String, i64>,
    present: usize,
    thawed_at_ms: Option<i64>,
    now_ms: i64,
) -> Option<Storm> {
    let since = now_ms.saturating_sub(millis(config.storm_window));
    let mut left: Vec<String> = departed
        .iter()
        .filter(|(_, at)| **at >= since && thawed_at_ms.is_none_or(|t| **at > t))
        .map(|(id, _)| id.clone())
        .collect();
    let of = present + left.len();
    if left.len() < config.storm_min_workers.max(1)
        || (left.len() as f64) <= config.storm_fraction * of as f64
    {
        return None;
    }
    left.sort();
    Some(Storm {
        frozen: true,
        since_ms: now_ms,
        reason: format!(
            "{} of {} workers left within {}",
            left.len(),
            of,
            humantime::format_duration(config.storm_window)
        ),
        left,
        of,
        thawed_at_ms: None,
        thawed_by: None,
    })
}

/// True when a freeze may end by itself: enough of the workers whose departure caused it are
/// back that the share still absent is no longer over `storm_fraction`.
pub fn thaws(config: &SchedulingConfig, storm: &Storm, absent: impl Fn(&str) -> bool) -> bool {
    let still = storm.left.iter().filter(|id| absent(id)).count();
    (still as f64) <= config.storm_fraction * storm.of as f64
        || still < config.storm_min_workers.max(1)
}

/// True when a rebalancing round is due: one is under way or was asked for (a worker joined),
/// or the loads diverge by more than `rebalance_threshold` of the mean; and the spread is
/// above 1.
pub fn rebalance_due(config: &SchedulingConfig, asked: bool, spread: u32, mean: f64) -> bool {
    if config.rebalance_max_moves == 0 || spread <= 1 {
        return false;
    }
    asked || f64::from(spread) > config.rebalance_threshold * mean
}

/// While rebalancing is under way (`asked`, last round at `last_ms`), the ms until the next
/// round may run; `None` once that time has passed, so a round that is due but cannot move
/// anything is retried on a change or a tick and never in a loop.
pub fn next_round_in(
    last_ms: Option<i64>,
    asked: bool,
    interval_ms: i64,
    now_ms: i64,
) -> Option<i64> {
    let wait = last_ms.filter(|_| asked)?.saturating_add(interval_ms) - now_ms;
    (wait > 0).then_some(wait)
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth (and at least
/// one token). Time is passed in, so it is tested without sleeping; the crates that offer
/// one (governor, leaky-bucket) read the clock themselves and bring more than the twenty lines
/// this needs.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(rate: f64, now_ms: i64) -> Self {
        let burst = rate.max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            at_ms: now_ms,
        }
    }

    /// Whole tokens available at `now_ms`.
    pub fn available(&mut self, now_ms: i64) -> usize {
        let elapsed = now_ms.saturating_sub(self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at_ms = self.at_ms.max(now_ms);
        self.tokens.floor().max(0.0) as usize
    }

    /// Spends `n` tokens (at most what is there).
    pub fn take(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_round_is_awaited_only_while_rebalancing_and_before_it_is_due() {
        assert_eq!(next_round_in(Some(1_000), true, 1_000, 1_250), Some(750));
        assert_eq!(next_round_in(Some(1_000), true, 1_000, 2_000), None);
        assert_eq!(next_round_in(Some(1_000), true, 1_000, 5_000), None);
        assert_eq!(next_round_in(Some(1_000), false, 1_000, 1_250), None);
        assert_eq!(next_round_in(None, true, 1_000, 1_250), None);
        assert_eq!(
            next_round_in(Some(1_000), true, i64::MAX, 1_250),
            Some(i64::MAX - 1_250)
        );
    }

    fn config() -> SchedulingConfig {
        SchedulingConfig {
            reassign_after: Duration::from_secs(60),
            storm_fraction: 0.5,
            storm_window: Duration::from_secs(30),
            storm_min_workers: 2,
            ..SchedulingConfig::default()
        }
    }

    fn departed(list: &[(&str, i64)]) -> HashMap<String, i64> {
        list.iter()
            .map(|(id, at)| ((*id).to_owned(), *at))
            .collect()
    }

    #[test]
    fn the_grace_period_runs_from_the_departure() {
        let c = config();
        assert!(!grace_over(&c, 1_000, 60_999));
        assert!(grace_over(&c, 1_000, 61_000));
        let zero = SchedulingConfig {
            reassign_after: Duration::ZERO,
            ..config()
        };
        assert!(grace_over(&zero, 5, 5));
    }

    #[test]
    fn two_of_three_within_the_window_freeze_one_does_not() {
        let c = config();
        let now = 100_000;
        let two = departed(&[("a", now - 1_000), ("b", now - 500)]);
        let storm = storm(&c, &two, 1, None, now).expect("2 of 3 > 50%");
        assert_eq!(
            (storm.left.clone(), storm.of),
            (vec!["a".into(), "b".into()], 3)
        );
        assert!(
            storm.reason.contains("2 of 3 workers left within 30s"),
            "{}",
            storm.reason
        );
        assert!(super::storm(&c, &departed(&[("a", now)]), 2, None, now).is_none());
        // Two of four is exactly 50%: not more than the fraction.
        assert!(super::storm(&c, &two, 2, None, now).is_none());
        // Spread out over more than the window: no storm.
        let slow = departed(&[("a", now - 40_000), ("b", now - 500)]);
        assert!(super::storm(&c, &slow, 1, None, now).is_none());
        // One of one is 100%, but a storm needs at least two.
        assert!(super::storm(&c, &departed(&[("a", now)]), 0, None, now).is_none());
        // Departures before the last thaw do not count again.
        assert!(super::storm(&c, &two, 1, Some(now - 200), now).is_none());
    }

    #[test]
    fn a_freeze_thaws_when_enough_workers_are_back() {
        let c = config();
        let s = storm(&c, &departed(&[("a", 1), ("b", 1)]), 1, None, 2).expect("storm");
        assert!(!thaws(&c, &s, |_| true));
        assert!(
            thaws(&c, &s, |id| id == "a"),
            "1 of 3 absent is not over half"
        );
        assert!(thaws(&c, &s, |_| false));
    }

    #[test]
    fn rebalancing_is_due_on_a_join_or_a_divergence() {
        let c = SchedulingConfig {
            rebalance_threshold: 0.25,
            rebalance_max_moves: 5,
            ..config()
        };
        assert!(rebalance_due(&c, true, 2, 100.0));
        assert!(!rebalance_due(&c, true, 1, 100.0), "converged");
        assert!(!rebalance_due(&c, false, 20, 100.0), "within the threshold");
        assert!(rebalance_due(&c, false, 30, 100.0));
        let off = SchedulingConfig {
            rebalance_max_moves: 0,
            ..c
        };
        assert!(!rebalance_due(&off, true, 300, 100.0));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_one_second() {
        let mut b = TokenBucket::new(10.0, 0);
        assert_eq!(b.available(0), 10);
        b.take(10);
        assert_eq!(b.available(0), 0);
        assert_eq!(b.available(250), 2);
        b.take(2);
        assert_eq!(b.available(5_000), 10, "never more than a second's worth");
        let mut slow = TokenBucket::new(0.5, 0);
        assert_eq!(slow.available(0), 1);
        slow.take(1);
        assert_eq!(slow.available(1_000), 0);
        assert_eq!(slow.available(2_000), 1);
        assert_eq!(slow.available(1_000), 1, "time never runs backwards");
    }
}
