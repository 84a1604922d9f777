//! Exponential backoff with jitter, so that retries never form a hot loop and many processes
//! retrying at once do not synchronise.

use std::time::Duration;

/// Retry delays that double from `base` up to `max`, each jittered to between half and all of
/// the nominal delay ("equal jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First nominal delay.
    base: Duration,
    /// Largest nominal delay.
    max: Duration,
    /// Failures since the last success.
    attempt: u32,
}

impl Backoff {
    /// A backoff between `base` and `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Forget past failures after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(101));
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(2_001), "{d:?}");
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(1),
            "capped delays stay near the cap: {late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(101));
    }
}
