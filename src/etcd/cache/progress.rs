//! When a watch stream's progress report may be believed.
//!
//! A progress report says "every event up to revision R was sent". etcd before 3.4.25 (Debian
//! ships 3.4.23) answers a requested report on a separate channel from the events, so the
//! answer may overtake events still queued on the stream, and a newly created watch that is
//! still catching up gets the current revision too (etcd-io/etcd#15220). An answer is
//! therefore only a candidate, believed later on one of two grounds:
//!
//! - **Proof by a later answer.** One request is in flight at a time, so the next answer was
//!   asked for after this one arrived: the server sent whatever was queued before it in
//!   between. If no event at or below the candidate's revision came in that gap, nothing was
//!   queued, and the candidate holds. This needs a stream past its first `interval`, when a
//!   watch from an old revision has caught up.
//! - **Time.** A candidate at least three quarters of `interval` old is believed on the next
//!   answer, as the periodic reports always were.
//!
//! Unrequested reports (etcd's own periodic ones, sent only to a caught-up watch, in order
//! with its events) need no proof.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// At most this many candidates wait; a dropped candidate only delays belief.
const CANDIDATES: usize = 32;

#[derive(Debug)]
struct Candidate {
    revision: i64,
    at: Instant,
    /// No event at or below `revision` arrived since.
    clean: bool,
}

/// The candidates of one watch stream.
#[derive(Debug)]
pub(super) struct Progress {
    interval: Duration,
    /// Answers that arrive before this are never proven by a later one.
    settled_at: Instant,
    candidates: VecDeque<Candidate>,
}

impl Progress {
    /// A stream created at `now`.
    pub(super) fn new(now: Instant, interval: Duration) -> Self {
        Self {
            interval,
            settled_at: now + interval,
            candidates: VecDeque::new(),
        }
    }

    /// Something went wrong with the requests (an answer went missing): prove nothing by a
    /// later answer until a whole interval has passed again.
    pub(super) fn unsettle(&mut self, now: Instant) {
        self.settled_at = now + self.interval;
    }

    /// An event at `revision` arrived: candidates at or above it were early.
    pub(super) fn on_event(&mut self, revision: i64) {
        for c in self
            .candidates
            .iter_mut()
            .filter(|c| c.revision >= revision)
        {
            c.clean = false;
        }
    }

    /// An answer to a request reports `revision` at `now`. Returns the highest revision now
    /// believed, if any.
    pub(super) fn on_answer(&mut self, revision: i64, now: Instant) -> Option<i64> {
        let old_enough = self.interval * 3 / 4;
        let believed = self
            .candidates
            .iter()
            .filter(|c| {
                (c.clean && c.at >= self.settled_at) || now.duration_since(c.at) >= old_enough
            })
            .map(|c| c.revision)
            .max();
        if let Some(b) = believed {
            self.candidates.retain(|c| c.revision > b);
        }
        if self.candidates.len() < CANDIDATES {
            self.candidates.push_back(Candidate {
                revision,
                at: now,
                clean: true,
            });
        }
        believed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// A stream two seconds old (past its first interval), and that moment.
    fn settled() -> (Progress, Instant) {
        let t0 = Instant::now();
        (Progress::new(t0, SECOND), t0 + 2 * SECOND)
    }

    #[test]
    fn a_settled_stream_believes_an_answer_proven_by_the_next() {
        let (mut p, t) = settled();
        assert_eq!(p.on_answer(10, t), None);
        assert_eq!(p.on_answer(12, t + 2 * MS), Some(10));
        assert_eq!(p.on_answer(12, t + 4 * MS), Some(12));
    }

    #[test]
    fn a_late_event_at_or_below_a_candidate_spoils_its_proof() {
        let (mut p, t) = settled();
        assert_eq!(p.on_answer(10, t), None);
        p.on_event(9);
        assert_eq!(p.on_answer(11, t + 2 * MS), None);
        // An event above a candidate is a later write, not an overtaken one.
        p.on_event(12);
        assert_eq!(p.on_answer(12, t + 4 * MS), Some(11));
        // Belief in 11 covers the spoiled 10 below it.
        assert!(p.candidates.iter().all(|c| c.revision > 11));
        assert_eq!(p.on_answer(13, t + SECOND), Some(12));
    }

    #[test]
    fn a_young_stream_believes_only_by_time() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0, SECOND);
        assert_eq!(p.on_answer(5, t0 + MS), None);
        assert_eq!(p.on_answer(5, t0 + 2 * MS), None);
        assert_eq!(p.on_answer(6, t0 + 800 * MS), Some(5));
        // Settled now: the next answer proves the one before.
        assert_eq!(p.on_answer(7, t0 + 1_100 * MS), None);
        assert_eq!(p.on_answer(7, t0 + 1_102 * MS), Some(7));
    }

    #[test]
    fn unsettling_withdraws_proof_by_answer() {
        let (mut p, t) = settled();
        p.unsettle(t);
        assert_eq!(p.on_answer(10, t + MS), None);
        assert_eq!(p.on_answer(11, t + 2 * MS), None);
        assert_eq!(p.on_answer(11, t + 800 * MS), Some(11));
    }

    #[test]
    fn candidates_are_bounded() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0, SECOND);
        for r in 0..100 {
            p.on_event(r);
            let _ = p.on_answer(r, t0 + MS * r as u32);
        }
        assert!(p.candidates.len() <= CANDIDATES);
    }
}
