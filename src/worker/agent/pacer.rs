//! The worker's side of politeness budgets: its share of each domain, paced. A task asks
//! before each fetch ([`Pacer::acquire`]) and gives its slot back after ([`Pacer::release`]);
//! the answer comes from memory.
//!
//! A share is a rate (paced by GCRA, one request of burst) and a number of slots. It holds
//! until its lease ends (`politeness.share_lease` after the start of the read that last
//! showed it current); after that, while etcd cannot be reached, the worker paces at the safe
//! share: `politeness.safe_fraction` of the budget, one slot, never above its last share.
//! What the tasks asked for is summed into the worker's [`Demand`] each period.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::Notify;

use crate::config::PolitenessConfig;
use crate::etcd::cache::Store;
use crate::model::politeness::{Budget, Demand, Grant, Shares, Want, budget_for};

/// Periods a domain nobody asks for stays in the demand.
const IDLE_PERIODS: u32 = 3;

/// What an acquire got.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// Go ahead; give `permit` back with a release.
    Granted {
        /// The permit's id.
        permit: u64,
        /// The domain it counts against.
        domain: String,
    },
    /// Not now: ask again in `wait`.
    Wait {
        /// The domain.
        domain: String,
        /// When to ask again.
        wait: Duration,
    },
}

struct Paced {
    budget: Budget,
    grant: Grant,
    limiter: Option<(f64, DefaultDirectRateLimiter)>,
    in_flight: u32,
    waiting: u32,
    /// Tasks that asked, and when last.
    tasks: HashMap<String, Instant>,
    granted: u32,
    waited: bool,
    idle_periods: u32,
    throttled: u64,
    crawl_delay_ms: Option<u64>,
}

impl Paced {
    fn new(budget: Budget) -> Self {
        Self {
            budget,
            grant: Grant::default(),
            limiter: None,
            in_flight: 0,
            waiting: 0,
            tasks: HashMap::new(),
            granted: 0,
            waited: false,
            idle_periods: 0,
            throttled: 0,
            crawl_delay_ms: None,
        }
    }
}

struct Permit {
    domain: String,
    run: String,
    at: Instant,
}

#[derive(Default)]
struct State {
    domains: HashMap<String, Paced>,
    permits: HashMap<u64, Permit>,
    next_permit: u64,
    /// Until when the shares read last hold.
    valid_until: Option<Instant>,
    /// Mod revision of the shares applied.
    seen: i64,
}

/// This worker's shares, paced. One per worker.
pub struct Pacer {
    config: PolitenessConfig,
    budgets: Store<Budget>,
    state: Mutex<State>,
    released: Notify,
    /// Wakes the renewal when a domain without a share is asked for.
    hungry: Notify,
}

impl Pacer {
    /// A pacer with no shares yet; budgets set through the API come from `budgets`.
    pub fn new(config: PolitenessConfig, budgets: Store<Budget>) -> Self {
        Self {
            config,
            budgets,
            state: Mutex::default(),
            released: Notify::new(),
            hungry: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key and budget a request to `host` counts against.
    pub fn resolve(&self, host: &str) -> (String, Budget) {
        budget_for(
            host,
            |d| {
                self.budgets
                    .get(d)
                    .map(|e| *e.value)
                    .or_else(|| self.config.configured(d))
            },
            self.config.default,
        )
    }

    /// Asks for one request to `host` for run `run` of task `task`, waiting up to `wait` for
    /// it.
    pub async fn acquire(&self, host: &str, run: &str, task: &str, wait: Duration) -> Acquired {
        let deadline = Instant::now() + wait;
        let (domain, budget) = self.resolve(host);
        let mut waiting = Waiting {
            pacer: self,
            domain: domain.clone(),
            counted: false,
        };
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let now = Instant::now();
            let pause = {
                let mut state = self.state();
                let valid = state.valid_until.is_some_and(|until| now < until);
                let safe_fraction = self.config.safe_fraction;
                let next = state.next_permit;
                let paced = state
                    .domains
                    .entry(domain.clone())
                    .or_insert_with(|| Paced::new(budget));
                paced.budget = budget;
                paced.idle_periods = 0;
                paced.tasks.insert(task.to_owned(), now);
                let usable = usable(paced, valid, safe_fraction);
                match try_take(paced, usable) {
                    Ok(()) => {
                        if std::mem::take(&mut waiting.counted) {
                            paced.waiting = paced.waiting.saturating_sub(1);
                        }
                        paced.in_flight += 1;
                        paced.granted += 1;
                        state.next_permit = next + 1;
                        state.permits.insert(
                            next,
                            Permit {
                                domain: domain.clone(),
                                run: run.to_owned(),
                                at: now,
                            },
                        );
                        return Acquired::Granted {
                            permit: next,
                            domain,
                        };
                    }
                    Err(pause) => {
                        paced.waited = true;
                        if paced.grant.concurrency == 0 {
                            self.hungry.notify_one();
                        }
                        if now >= deadline {
                            if std::mem::take(&mut waiting.counted) {
                                paced.waiting = paced.waiting.saturating_sub(1);
                            }
                            return Acquired::Wait {
                                domain,
                                wait: pause,
                            };
                        }
                        if !waiting.counted {
                            paced.waiting += 1;
                            waiting.counted = true;
                        }
                        pause.min(deadline - now)
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = released => {}
            }
        }
    }

    /// Gives permit `permit` of run `run` back; false when it is not that run's.
    pub fn release(&self, permit: u64, run: &str) -> bool {
        let mut state = self.state();
        if state.permits.get(&permit).is_none_or(|p| p.run != run) {
            return false;
        }
        if let Some(p) = state.permits.remove(&permit) {
            free(&mut state, &p.domain);
        }
        drop(state);
        self.released.notify_waiters();
        true
    }

    /// Gives back every permit run `run` holds (it ended).
    pub fn release_run(&self, run: &str) {
        self.release_where(|p| p.run == run);
    }

    fn release_where(&self, mut stale: impl FnMut(&Permit) -> bool) {
        let mut state = self.state();
        let gone: Vec<u64> = state
            .permits
            .iter()
            .filter(|(_, p)| stale(p))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            if let Some(p) = state.permits.remove(id) {
                free(&mut state, &p.domain);
            }
        }
        drop(state);
        if !gone.is_empty() {
            self.released.notify_waiters();
        }
    }

    /// Takes a task's report of a throttled answer (429, 503) or a `Crawl-delay` for `host`.
    pub fn feedback(&self, host: &str, throttled: bool, crawl_delay_ms: Option<u64>) -> String {
        let (domain, budget) = self.resolve(host);
        let mut state = self.state();
        let paced = state
            .domains
            .entry(domain.clone())
            .or_insert_with(|| Paced::new(budget));
        if throttled {
            paced.throttled += 1;
        }
        if let Some(ms) = crawl_delay_ms {
            paced.crawl_delay_ms = Some(paced.crawl_delay_ms.unwrap_or(0).max(ms));
        }
        domain
    }

    /// Ends a period of `period`: the demand to report, and the period's counts start over.
    /// Permits held past `politeness.hold_limit` are taken back first.
    pub fn demand(&self, period: Duration) -> Demand {
        let limit = self.config.hold_limit;
        self.release_where(|p| p.at.elapsed() > limit);
        let mut state = self.state();
        let seen = state.seen;
        let secs = period.as_secs_f64().max(0.001);
        let recent = period.max(self.config.renew_interval);
        state.domains.retain(|_, p| {
            p.idle_periods < IDLE_PERIODS || p.in_flight > 0 || p.grant.concurrency > 0
        });
        let mut domains = BTreeMap::new();
        for (domain, p) in &mut state.domains {
            p.tasks.retain(|_, at| at.elapsed() <= recent);
            if p.idle_periods < IDLE_PERIODS || p.in_flight > 0 {
                domains.insert(
                    domain.clone(),
                    Want {
                        tasks: p.tasks.len() as u32,
                        used: f64::from(p.granted) / secs,
                        saturated: p.waited,
                        waiting: p.waiting,
                        throttled: p.throttled,
                        crawl_delay_ms: p.crawl_delay_ms,
                    },
                );
            }
            if p.granted == 0 && p.waiting == 0 && p.in_flight == 0 {
                p.idle_periods += 1;
            }
            p.granted = 0;
            p.waited = false;
        }
        Demand { seen, domains }
    }

    /// Applies shares read at `read_at` (the start of the read) with mod revision `revision`
    /// (0: none stored): they hold until a lease after `read_at`.
    pub fn apply(&self, shares: Option<Shares>, revision: i64, read_at: Instant) {
        let lease = shares.as_ref().map_or(self.config.share_lease, |s| {
            Duration::from_millis(s.lease_ms)
        });
        let grants = shares.map(|s| s.grants).unwrap_or_default();
        let mut state = self.state();
        state.valid_until = Some(read_at + lease);
        if revision == state.seen {
            return;
        }
        state.seen = revision;
        for (domain, p) in &mut state.domains {
            p.grant = grants.get(domain).copied().unwrap_or_default();
        }
        for (domain, grant) in grants {
            if let std::collections::hash_map::Entry::Vacant(slot) = state.domains.entry(domain) {
                let (_, budget) = self.resolve(slot.key());
                let mut paced = Paced::new(budget);
                paced.grant = grant;
                paced.idle_periods = IDLE_PERIODS;
                slot.insert(paced);
            }
        }
        drop(state);
        self.released.notify_waiters();
    }

    /// Waits until a task asks for a domain this worker has no share of.
    pub async fn hungry(&self) {
        self.hungry.notified().await;
    }

    /// True while a task waits for a domain this worker has no share of.
    pub fn starving(&self) -> bool {
        self.state()
            .domains
            .values()
            .any(|p| p.waiting > 0 && p.grant.concurrency == 0)
    }

    /// Shares in use now, by domain: (grant, in flight, waiting), and whether they are
    /// confirmed (false: the safe share applies).
    pub fn snapshot(&self) -> (BTreeMap<String, (Grant, u32, u32)>, bool) {
        let state = self.state();
        let valid = state.valid_until.is_some_and(|u| Instant::now() < u);
        let domains = state
            .domains
            .iter()
            .map(|(d, p)| {
                let grant = usable(p, valid, self.config.safe_fraction);
                (d.clone(), (grant, p.in_flight, p.waiting))
            })
            .collect();
        (domains, valid)
    }
}

/// Counts a request among its domain's waiting ones until it is granted, answered or dropped.
struct Waiting<'a> {
    pacer: &'a Pacer,
    domain: String,
    counted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted
            && let Some(p) = self.pacer.state().domains.get_mut(&self.domain)
        {
            p.waiting = p.waiting.saturating_sub(1);
        }
    }
}

/// The grant in force: the share while its lease holds, else the safe share.
fn usable(p: &Paced, valid: bool, safe_fraction: f64) -> Grant {
    if valid {
        return p.grant;
    }
    Grant {
        rate: p.grant.rate.min(p.budget.rate * safe_fraction),
        concurrency: p.grant.concurrency.min(1),
    }
}

/// Takes a slot and a cell of rate, or says how long to wait.
fn try_take(p: &mut Paced, grant: Grant) -> Result<(), Duration> {
    if grant.rate <= 0.0 || grant.concurrency == 0 {
        return Err(Duration::from_millis(250));
    }
    if p.in_flight >= grant.concurrency {
        return Err(Duration::from_millis(250));
    }
    if p.limiter
        .as_ref()
        .is_none_or(|(rate, _)| *rate != grant.rate)
    {
        let period = Duration::from_secs_f64(1.0 / grant.rate);
        let quota = Quota::with_period(period).map(|q| q.allow_burst(NonZeroU32::MIN));
        p.limiter = quota.map(|q| (grant.rate, DefaultDirectRateLimiter::direct(q)));
    }
    match &p.limiter {
        Some((_, limiter)) => limiter
            .check()
            .map_err(|until| until.wait_time_from(DefaultClock::default().now())),
        None => Err(Duration::from_millis(250)),
    }
}

fn free(state: &mut State, domain: &str) {
    if let Some(p) = state.domains.get_mut(domain) {
        p.in_flight = p.in_flight.saturating_sub(1);
    }
}
