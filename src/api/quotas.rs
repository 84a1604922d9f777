//! Per-caller quotas on this master: a request rate (GCRA, `governor`, keyed by caller) and a
//! count of open streams (event streams, followed logs). A caller is a token's name; anonymous
//! callers are told apart by address. Beyond either: 429 with `Retry-After`.
//!
//! The keys are bounded: named callers by the config, anonymous ones by the addresses that
//! call; idle ones are dropped (`retain_recent`) every few thousand requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
    max_streams: usize,
    streams: Mutex<HashMap<Arc<str>, usize>>,
    checks: AtomicU64,
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
                max_streams: config.streams as usize,
                ..Inner::default()
            }),
        }
    }

    /// Takes one request of `caller`'s rate, or refuses with 429 and when to retry.
    pub fn admit(&self, caller: &Caller, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(limiter) = &self.inner.rate else {
            return Ok(());
        };
        if self.inner.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&key(caller, peer)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                detail: format!(
                    "{:?} made more requests than its rate allows on this master; retry after \
                     the time Retry-After gives",
                    caller.name
                ),
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u32,
            }
        })
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

    #[test]
    fn each_caller_has_its_own_rate() {
        let quotas = Quotas::new(&QuotasConfig {
            rate: 1,
            burst: 3,
            streams: 0,
        });
        let (a, b) = (caller("a", true), caller("b", true));
        for _ in 0..3 {
            assert!(quotas.admit(&a, None).is_ok());
        }
        match quotas.admit(&a, None) {
            Err(ApiError::TooManyRequests { retry_after, .. }) => assert!(retry_after >= 1),
            other => panic!("{other:?}"),
        }
        assert!(
            quotas.admit(&b, None).is_ok(),
            "another caller is not held back"
        );
        let anonymous = caller("anonymous", false);
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(quotas.admit(&anonymous, Some(one)).is_ok());
        }
        assert!(quotas.admit(&anonymous, Some(one)).is_err());
        assert!(quotas.admit(&anonymous, Some(two)).is_ok(), "by address");
        let open = Quotas::new(&QuotasConfig::default());
        for _ in 0..10_000 {
            assert!(open.admit(&a, None).is_ok(), "no rate by default");
        }
    }

    #[test]
    fn streams_are_counted_until_dropped() {
        let quotas = Quotas::new(&QuotasConfig {
            rate: 0,
            burst: 1,
            streams: 2,
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
