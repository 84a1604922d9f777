//! A closed-loop load generator: a fixed number of operations run by a fixed number of
//! concurrent tasks, each timing its own operations.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Operations that succeeded.
    pub ok: usize,
    /// Operations that failed.
    pub errors: usize,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Latencies of successful operations, sorted.
    pub latencies: Vec<Duration>,
}

impl Stats {
    /// Successful operations per second.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The mean latency of successful operations.
    pub fn mean(&self) -> Duration {
        let total: Duration = self.latencies.iter().sum();
        total / u32::try_from(self.latencies.len().max(1)).unwrap_or(u32::MAX)
    }

    /// The `p`th percentile latency (0..=100).
    pub fn pct(&self, p: usize) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p`th percentile of sorted samples (zero when there are none).
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[index]
}

/// Runs `op(i)` for `i` in `0..total` on `concurrency` tasks.
pub async fn run<F, Fut>(total: usize, concurrency: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((l, e)) = joined {
            latencies.extend(l);
            errors += e;
        }
    }
    let wall = started.elapsed();
    latencies.sort();
    Stats {
        ok: latencies.len(),
        errors,
        wall,
        latencies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_every_operation_once() {
        let stats = run(1000, 7, |i| async move { i % 10 != 0 }).await;
        assert_eq!(stats.ok, 900);
        assert_eq!(stats.errors, 100);
        assert!(stats.latencies.windows(2).all(|w| w[0] <= w[1]));
        assert!(stats.per_sec() > 0.0);
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Duration::from_millis(51));
        assert_eq!(percentile(&v, 99), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
