//! Snowflake IDs: 41-bit millisecond timestamp, 10-bit node, 12-bit sequence.
//!
//! The layout and epoch are bwmarrin/snowflake's, which the Go crawler uses, so IDs from both
//! sort together; the node is the master's own id, so two masters never mint the same ID. Time is
//! a monotonic clock anchored once to the wall clock, and timestamp and sequence share one atomic
//! word taken by compare-and-swap (`max(now, last + 1)`): IDs strictly increase without a lock,
//! and a burst past 4096 in a millisecond borrows the next one. [`Generator::advance_past`] moves
//! a new generator past stored IDs, for a wall clock that stepped back while the master was down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch of the snowflake epoch (2010-11-04T01:42:54.657Z).
pub const EPOCH_MS: u64 = 1_288_834_974_657;
/// Bits of the node id.
pub const NODE_BITS: u32 = 10;
/// Bits of the per-millisecond sequence.
pub const SEQUENCE_BITS: u32 = 12;
/// Largest node id.
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
const TIME_BITS: u32 = 41;
const MAX_TICK: u64 = (1 << (TIME_BITS + SEQUENCE_BITS)) - 1;

/// Why an ID could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnowflakeError {
    /// The node id does not fit in 10 bits.
    #[error("snowflake node id {0} is out of range 0..=1023")]
    NodeOutOfRange(u32),
    /// 41 bits of milliseconds ran out (in the year 2080).
    #[error("snowflake timestamp overflow")]
    Exhausted,
}

/// Mints IDs for one node. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Generator {
    node: u64,
    /// Wall-clock milliseconds since [`EPOCH_MS`] at `anchor`.
    anchor_ms: u64,
    anchor: Instant,
    /// `timestamp << 12 | sequence` of the last ID handed out.
    last: AtomicU64,
}

impl Generator {
    /// A generator for `node`, anchored to the wall clock now.
    pub fn new(node: u32) -> Result<Self, SnowflakeError> {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::with_anchor(node, wall.saturating_sub(EPOCH_MS))
    }

    fn with_anchor(node: u32, anchor_ms: u64) -> Result<Self, SnowflakeError> {
        if node > u32::from(MAX_NODE) {
            return Err(SnowflakeError::NodeOutOfRange(node));
        }
        Ok(Self {
            node: u64::from(node),
            anchor_ms,
            anchor: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// The node id.
    pub fn node(&self) -> u16 {
        self.node as u16
    }

    fn now_tick(&self) -> u64 {
        let ms = self.anchor_ms + self.anchor.elapsed().as_millis() as u64;
        ms << SEQUENCE_BITS
    }

    /// The next ID: unique for this node and greater than every ID it handed out before.
    pub fn next_id(&self) -> Result<u64, SnowflakeError> {
        let now = self.now_tick();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let tick = now.max(last + 1);
            if tick > MAX_TICK {
                return Err(SnowflakeError::Exhausted);
            }
            match self
                .last
                .compare_exchange_weak(last, tick, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(compose(tick, self.node)),
                Err(seen) => last = seen,
            }
        }
    }

    /// Makes every later ID greater than `id` (an ID of this node found in storage).
    pub fn advance_past(&self, id: u64) {
        if id & u64::from(MAX_NODE) << SEQUENCE_BITS != self.node << SEQUENCE_BITS {
            return;
        }
        let tick = decompose(id).0 << SEQUENCE_BITS | decompose(id).2;
        self.last.fetch_max(tick, Ordering::AcqRel);
    }
}

fn compose(tick: u64, node: u64) -> u64 {
    let ms = tick >> SEQUENCE_BITS;
    let sequence = tick & ((1 << SEQUENCE_BITS) - 1);
    ms << (NODE_BITS + SEQUENCE_BITS) | node << SEQUENCE_BITS | sequence
}

/// Splits an ID into (milliseconds since [`EPOCH_MS`], node, sequence).
pub fn decompose(id: u64) -> (u64, u64, u64) {
    (
        id >> (NODE_BITS + SEQUENCE_BITS),
        (id >> SEQUENCE_BITS) & u64::from(MAX_NODE),
        id & ((1 << SEQUENCE_BITS) - 1),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn layout_round_trips() {
        let g = Generator::with_anchor(5, 1_000).expect("node");
        let id = g.next_id().expect("id");
        let (ms, node, seq) = decompose(id);
        assert!((1_000..1_000 + 1_000).contains(&ms), "{ms}");
        assert_eq!(node, 5);
        assert_eq!(seq, 0);
        assert_eq!(g.node(), 5);
    }

    #[test]
    fn rejects_nodes_over_ten_bits() {
        assert!(Generator::new(1023).is_ok());
        assert_eq!(
            Generator::new(1024).err(),
            Some(SnowflakeError::NodeOutOfRange(1024))
        );
    }

    #[test]
    fn unique_and_increasing_under_threads() {
        let g = Arc::new(Generator::new(7).expect("node"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    let ids: Vec<u64> = (0..50_000).map(|_| g.next_id().expect("id")).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-thread order");
                    ids
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for id in t.join().expect("thread") {
                assert!(all.insert(id), "duplicate {id}");
                assert_eq!(decompose(id).1, 7);
            }
        }
        assert_eq!(all.len(), 200_000);
    }

    #[test]
    fn a_burst_borrows_the_next_millisecond_instead_of_wrapping() {
        let g = Generator::with_anchor(1, 50).expect("node");
        let ids: Vec<u64> = (0..10_000).map(|_| g.next_id().expect("id")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| decompose(*id).2 < 4096));
    }

    #[test]
    fn a_clock_stepped_back_never_repeats_or_decreases() {
        // The first process minted IDs at wall time 10_000 ms.
        let before = Generator::with_anchor(3, 10_000).expect("node");
        let old: Vec<u64> = (0..100).map(|_| before.next_id().expect("id")).collect();
        // It restarts after the wall clock stepped back a whole second, and sees its old IDs
        // in storage.
        let after = Generator::with_anchor(3, 9_000).expect("node");
        for id in &old {
            after.advance_past(*id);
        }
        // Another node's IDs never move it.
        after.advance_past(compose(20_000 << SEQUENCE_BITS, 4));
        let new = after.next_id().expect("id");
        assert!(new > *old.last().expect("ids"), "{new} after {old:?}");
        assert!(decompose(new).0 < 20_000);
    }

    #[test]
    fn exhausted_timestamps_are_an_error() {
        let g = Generator::with_anchor(0, (1 << 41) - 1).expect("node");
        g.last.store(MAX_TICK, Ordering::Relaxed);
        assert_eq!(g.next_id(), Err(SnowflakeError::Exhausted));
    }
}
