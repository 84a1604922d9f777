//! Per-caller quotas on this master: a request rate (GCRA, `governor`, keyed by caller) and a
//! count of open streams (event streams, followed logs). A caller is a token's name; anonymous
//! callers are told apart by address.
//!
//! A request over its caller's rate waits its turn in the caller's own queue (FIFO; only its
//! head polls the limiter) for up to `quotas.max_wait`, and is refused with 429 and
//! `Retry-After` when its turn would come later. Waiting costs a parked future, so a client
//! that ignores 429s and retries at once is slowed to its rate instead of spinning the
//! master's CPU on refusals, and no other caller waits behind it.
//!
//! The keys are bounded: named callers by the config, anonymous ones by the addresses that
//! call; idle ones are dropped every few thousand requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;
use super::auth::Caller;
use crate::config::QuotasConfig;

/// How many checks pass between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 4_096;

/// This master's quotas. Cheap to clone.
#[derive(Clone, Default)]
pub struct Quotas {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    rate: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    per_second: f64,
    max_wait: Duration,
    queues: Mutex<HashMap<Arc<str>, Arc<Queue>>>,
    max_streams: usize,
    streams: Mutex<HashMap<Arc<str>, usize>>,
    checks: AtomicU64,
}

/// The requests of one caller waiting for its rate.
#[derive(Default)]
struct Queue {
    /// Held by the request whose turn it is; tokio's mutex hands it over in arrival order.
    turn: tokio::sync::Mutex<()>,
    /// Requests waiting, the head included.
    waiting: AtomicU64,
}

/// One place in a queue, given up when dropped.
struct Place(Arc<Queue>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a request fared against its caller's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Within the rate.
    AtOnce,
    /// Over the rate, served after waiting its turn.
    AfterWaiting,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("rate", &self.inner.rate.is_some())
            .field("max_streams", &self.inner.max_streams)
            .finish()
    }
}

/// The key a caller's quotas are counted under.
fn key(caller: &Caller, peer: Option<IpAddr>) -> Arc<str> {
    match (caller.named, peer) {
        (false, Some(ip)) => Arc::from(format!("{}@{ip}", caller.name)),
        _ => caller.name.clone(),
    }
}

/// An open stream, counted until it is dropped.
pub struct StreamSlot {
    inner: Arc<Inner>,
    key: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

impl Quotas {
    /// The quotas `config` sets.
    pub fn new(config: &QuotasConfig) -> Self {
        let rate = NonZeroU32::new(config.rate).map(|rate| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            inner: Arc::new(Inner {
                rate,
                per_second: f64::from(config.rate),
                max_wait: config.max_wait,
                max_streams: config.streams as usize,
                ..Inner::default()
            }),
        }
    }

    /// Takes one request of `caller`'s rate, after waiting its turn when it is over the rate,
    /// or refuses with 429 and when to retry.
    pub async fn admit(&self, caller: &Caller, peer: Option<IpAddr>) -> Result<Admitted, ApiError> {
        let inner = &self.inner;
        let Some(limiter) = &inner.rate else {
            return Ok(Admitted::AtOnce);
        };
        if inner.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(limiter);
        }
        let key = key(caller, peer);
        if limiter.check_key(&key).is_ok() {
            return Ok(Admitted::AtOnce);
        }
        let queue = self.queue(&key);
        let ahead = queue.waiting.fetch_add(1, Ordering::Relaxed);
        let place = Place(queue);
        let refused = |wait: Duration| ApiError::TooManyRequests {
            detail: format!(
                "{:?} makes more requests than its rate allows on this master; retry after the \
                 time Retry-After gives",
                caller.name
            ),
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u32,
        };
        // Its turn, in seconds from now, were every request ahead served at the rate.
        let turn = Duration::from_secs_f64((ahead + 1) as f64 / inner.per_second.max(1e-9));
        if turn > inner.max_wait {
            return Err(refused(turn));
        }
        let deadline = tokio::time::Instant::now() + inner.max_wait;
        let _head = tokio::time::timeout_at(deadline, place.0.turn.lock())
            .await
            .map_err(|_| refused(turn))?;
        loop {
            let Err(not_until) = limiter.check_key(&key) else {
                return Ok(Admitted::AfterWaiting);
            };
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            if tokio::time::Instant::now() + wait > deadline {
                return Err(refused(wait));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn queue(&self, key: &Arc<str>) -> Arc<Queue> {
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queues.entry(key.clone()).or_default().clone()
    }

    /// Drops the limiter's idle keys and the queues no request waits in.
    fn sweep(&self, limiter: &DefaultKeyedRateLimiter<Arc<str>>) {
        limiter.retain_recent();
        limiter.shrink_to_fit();
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queues.retain(|_, q| q.waiting.load(Ordering::Relaxed) > 0);
    }

    /// Opens a stream for `caller`, or refuses with 429 when it holds the most it may.
    pub fn open_stream(
        &self,
        caller: &Caller,
        peer: Option<IpAddr>,
    ) -> Result<StreamSlot, ApiError> {
        let key = key(caller, peer);
        let mut streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = streams.entry(key.clone()).or_default();
        if self.inner.max_streams > 0 && *open >= self.inner.max_streams {
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "{:?} holds {} open streams (event streams and followed logs) on this \
                     master, the most it may; close one first",
                    caller.name, self.inner.max_streams
                ),
                retry_after: 1,
            });
        }
        *open += 1;
        Ok(StreamSlot {
            inner: self.inner.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::role::Role;

    fn caller(name: &str, named: bool) -> Caller {
        Caller {
            name: Arc::from(name),
            role: Role::Viewer,
            named,
        }
    }

    fn quotas(rate: u32, burst: u32, max_wait_ms: u64) -> Quotas {
        Quotas::new(&QuotasConfig {
            rate,
            burst,
            max_wait: Duration::from_millis(max_wait_ms),
            streams: 0,
        })
    }

    #[tokio::test]
    async fn each_caller_has_its_own_rate() {
        let quotas = quotas(1, 3, 0);
        let (a, b) = (caller("a", true), caller("b", true));
        for _ in 0..3 {
            assert_eq!(quotas.admit(&a, None).await.ok(), Some(Admitted::AtOnce));
        }
        match quotas.admit(&a, None).await {
            Err(ApiError::TooManyRequests { retry_after, .. }) => assert!(retry_after >= 1),
            other => panic!("{other:?}"),
        }
        assert!(
            quotas.admit(&b, None).await.is_ok(),
            "another caller is not held back"
        );
        let anonymous = caller("anonymous", false);
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(quotas.admit(&anonymous, Some(one)).await.is_ok());
        }
        assert!(quotas.admit(&anonymous, Some(one)).await.is_err());
        assert!(
            quotas.admit(&anonymous, Some(two)).await.is_ok(),
            "by address"
        );
        let open = Quotas::new(&QuotasConfig::default());
        for _ in 0..10_000 {
            assert!(open.admit(&a, None).await.is_ok(), "no rate by default");
        }
    }

    #[tokio::test]
    async fn over_the_rate_requests_wait_their_turn_then_are_refused() {
        // 20/s with a burst of 1 and 175 ms of patience: one at once, then one every 50 ms;
        // the fifth in line would be served after 200 ms, so it is refused at once. (Real
        // time: governor reads its own clock.)
        let quotas = quotas(20, 1, 175);
        let a = caller("a", true);
        let started = std::time::Instant::now();
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let (quotas, a) = (quotas.clone(), a.clone());
            waiting.spawn(async move { (quotas.admit(&a, None).await.ok(), started.elapsed()) });
        }
        let seen = waiting.join_all().await;
        let mut served: Vec<_> = seen.iter().filter(|(a, _)| a.is_some()).collect();
        served.sort_by_key(|(_, at)| *at);
        assert_eq!(served.len(), 4, "{seen:?}");
        assert_eq!(served[0].0, Some(Admitted::AtOnce));
        for (i, (admitted, at)) in served.iter().enumerate().skip(1) {
            assert_eq!(*admitted, Some(Admitted::AfterWaiting));
            assert!(
                *at >= Duration::from_millis(50 * i as u64 - 5),
                "{i} served at {at:?}, before its turn"
            );
        }
        let refused: Vec<_> = seen.iter().filter(|(a, _)| a.is_none()).collect();
        assert!(
            refused[0].1 < Duration::from_millis(45),
            "refused at once: {refused:?}"
        );
        assert!(
            quotas.admit(&caller("b", true), None).await.is_ok(),
            "b never waits behind a"
        );
    }

    #[test]
    fn streams_are_counted_until_dropped() {
        let quotas = Quotas::new(&QuotasConfig {
            streams: 2,
            ..QuotasConfig::default()
        });
        let a = caller("a", true);
        let first = quotas.open_stream(&a, None).expect("one");
        let second = quotas.open_stream(&a, None).expect("two");
        assert!(quotas.open_stream(&a, None).is_err(), "a third is refused");
        assert!(quotas.open_stream(&caller("b", true), None).is_ok());
        drop(first);
        let third = quotas.open_stream(&a, None).expect("room again");
        drop((second, third));
        assert!(
            quotas
                .inner
                .streams
                .lock()
                .expect("lock")
                .get("a")
                .is_none(),
            "nothing left counted"
        );
    }
}
