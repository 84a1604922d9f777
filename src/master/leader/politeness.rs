//! The leader's politeness duty: every `politeness.renew_interval` it splits each domain's
//! budget among the workers that want it ([`crate::master::budgets`]) and writes, fenced, the
//! shares that changed, one key per worker.
//!
//! What a term knows of the shares in force it reads from etcd when the term starts, never
//! from before. Until one lease length has passed it raises nothing (learning), since a cut
//! its predecessor wrote may still be in use, unless every worker's demand already shows it
//! has seen its shares as they stand (a cut a worker has seen is in force). A cut the term
//! writes itself stays counted as held until the worker's demand shows it has seen it, or a
//! lease has passed since the write. A worker whose demand is gone (its registration lease
//! ended, and its guard stopped its tasks before that) holds nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use etcd_client::TxnOp;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{BATCH, Leader, WriteError};
use crate::config::PolitenessConfig;
use crate::etcd::cache::Store;
use crate::etcd::cache::watcher::name_of;
use crate::master::budgets::{Claim, Throttle, split};
use crate::master::leadership::{Fence, Term};
use crate::model::politeness::{Budget, Demand, Grant, Shares, budget_for};
use crate::object::Object;

/// Least time between two rounds.
const ROUND_GAP: std::time::Duration = std::time::Duration::from_millis(250);

/// The caches the duty reads.
#[derive(Clone)]
pub struct PolitenessCaches {
    /// Budgets set through the API.
    pub budgets: Store<Budget>,
    /// Workers' demands.
    pub demand: Store<Demand>,
}

/// A cut not yet known to be in force.
#[derive(Debug, Clone, Copy)]
struct Cut {
    from: Grant,
    revision: i64,
    until: Instant,
}

/// What one term knows.
struct TermState {
    started: Instant,
    /// True until the term may raise shares.
    learning: bool,
    /// Worker → the grants its shares key holds, and the key's mod revision.
    written: HashMap<String, (BTreeMap<String, Grant>, i64)>,
    /// Worker → domain → cuts in transit.
    cuts: HashMap<String, HashMap<String, Vec<Cut>>>,
    throttles: HashMap<String, Throttle>,
}

/// The budget of a domain key: its own, else its registrable domain's, else the default.
pub fn budget_of(key: &str, budgets: &Store<Budget>, config: &PolitenessConfig) -> Budget {
    budget_for(
        key,
        |d| {
            budgets
                .get(d)
                .map(|e| *e.value)
                .or_else(|| config.configured(d))
        },
        config.default,
    )
    .1
}

impl Leader {
    /// Runs the politeness duty in every term this master serves, until `cancel` fires.
    pub async fn run_politeness(
        self,
        caches: PolitenessCaches,
        config: PolitenessConfig,
        cancel: CancellationToken,
    ) {
        let mut terms = self.inner.leadership.subscribe();
        loop {
            let term = terms.borrow_and_update().clone();
            if let Term::Ready(fence) = term {
                let mut ending = terms.clone();
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = ending.wait_for(|t| t.fence() != Some(&fence)) => {}
                    result = self.serve_politeness(&fence, &caches, &config) => {
                        if let Err(error) = result {
                            info!(%error, "politeness duty stopped for this term");
                        }
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = terms.changed() => if changed.is_err() { return },
            }
        }
    }

    /// The shares in force, read from etcd: worker → grants and the key's mod revision.
    async fn read_shares(
        &self,
    ) -> Result<HashMap<String, (BTreeMap<String, Grant>, i64)>, WriteError> {
        let prefix = self.inner.config.keys.shares_prefix();
        let mut written = HashMap::new();
        crate::etcd::client::list_prefix(
            &self.inner.client,
            &prefix,
            0,
            self.inner.config.request_timeout,
            |kvs| {
                for kv in kvs {
                    if let (Ok(name), Ok(shares)) =
                        (name_of(&prefix, kv.key()), Shares::decode("", kv.value()))
                    {
                        written.insert(name.to_string(), (shares.grants, kv.mod_revision()));
                    }
                }
            },
        )
        .await?;
        Ok(written)
    }

    /// The shares in force, read again every renewal until etcd answers: the duty splits
    /// nothing meanwhile (shares already written stay in force), and the term's end stops it.
    async fn read_shares_until_read(
        &self,
        config: &PolitenessConfig,
    ) -> HashMap<String, (BTreeMap<String, Grant>, i64)> {
        loop {
            match self.read_shares().await {
                Ok(written) => return written,
                Err(error) => {
                    warn!(%error, "politeness: shares in force not read; trying again");
                    tokio::time::sleep(config.renew_interval).await;
                }
            }
        }
    }

    async fn serve_politeness(
        &self,
        fence: &Fence,
        caches: &PolitenessCaches,
        config: &PolitenessConfig,
    ) -> Result<(), WriteError> {
        let written = self.read_shares_until_read(config).await;
        let mut state = TermState {
            started: Instant::now(),
            learning: true,
            written,
            cuts: HashMap::new(),
            throttles: HashMap::new(),
        };
        debug!(workers = state.written.len(), "politeness: shares read");
        let mut demand_changes = caches.demand.subscribe();
        let mut tick = tokio::time::interval(config.renew_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            // A round per renewal, and one soon after a worker's demand changes (a new domain
            // is granted within a round trip), never more often than every ROUND_GAP: changes
            // that come faster are split together.
            tokio::select! {
                _ = tick.tick() => {}
                Some(_) = demand_changes.recv() => {
                    tokio::time::sleep_until((last + ROUND_GAP).into()).await;
                    while demand_changes.try_recv().is_some() {}
                }
            }
            last = Instant::now();
            match self
                .politeness_round(fence, caches, config, &mut state)
                .await
            {
                Ok(()) => {}
                Err(e @ (WriteError::Deposed | WriteError::NotLeader)) => return Err(e),
                Err(error) => {
                    // A write whose outcome is unknown may have applied: what is in force is
                    // read again before the next split (cuts stay held meanwhile).
                    warn!(%error, "politeness: shares not written; reading them again");
                    state.written = self.read_shares_until_read(config).await;
                }
            }
        }
    }

    async fn politeness_round(
        &self,
        fence: &Fence,
        caches: &PolitenessCaches,
        config: &PolitenessConfig,
        state: &mut TermState,
    ) -> Result<(), WriteError> {
        let now = Instant::now();
        let lease = config.share_lease;
        let demands = caches.demand.snapshot().objects;
        if state.learning {
            let seen_all = state.written.iter().all(|(worker, (_, revision))| {
                demands
                    .get(worker.as_str())
                    .is_none_or(|e| e.value.seen >= *revision)
            });
            state.learning = !seen_all && now < state.started + lease;
        }
        let learning = state.learning;
        // Cuts the worker has seen, or whose lease has ended, are in force.
        for (worker, domains) in &mut state.cuts {
            let seen = demands.get(worker.as_str()).map_or(0, |e| e.value.seen);
            for cuts in domains.values_mut() {
                cuts.retain(|c| c.revision > seen && c.until > now);
            }
            domains.retain(|_, cuts| !cuts.is_empty());
        }
        state.cuts.retain(|_, d| !d.is_empty());

        let mut domains: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (worker, entry) in &demands {
            for domain in entry.value.domains.keys() {
                domains.entry(domain).or_default().insert(worker);
            }
        }
        for (worker, (grants, _)) in &state.written {
            for domain in grants.keys() {
                domains.entry(domain).or_default().insert(worker);
            }
        }
        for (worker, cuts) in &state.cuts {
            for domain in cuts.keys() {
                domains.entry(domain).or_default().insert(worker);
            }
        }

        let mut next: HashMap<String, BTreeMap<String, Grant>> = HashMap::new();
        for (domain, workers) in &domains {
            let budget = budget_of(domain, &caches.budgets, config);
            let throttle = state
                .throttles
                .entry((*domain).to_owned())
                .or_insert_with(|| Throttle::new(now));
            let mut throttled = false;
            let claims: Vec<Claim> = workers
                .iter()
                .map(|worker| {
                    let want = demands
                        .get(*worker)
                        .and_then(|e| e.value.domains.get(*domain).copied())
                        .unwrap_or_default();
                    throttled |= throttle.report(worker, &want, now);
                    let current = state
                        .written
                        .get(*worker)
                        .and_then(|(g, _)| g.get(*domain).copied())
                        .unwrap_or_default();
                    let mut held = current;
                    for cut in state
                        .cuts
                        .get(*worker)
                        .and_then(|d| d.get(*domain))
                        .into_iter()
                        .flatten()
                    {
                        held.rate = held.rate.max(cut.from.rate);
                        held.concurrency = held.concurrency.max(cut.from.concurrency);
                    }
                    Claim {
                        want,
                        current,
                        held,
                    }
                })
                .collect();
            throttle.round(throttled, lease, now);
            let grants = split(throttle.effective(&budget, now), &claims, learning);
            for (worker, grant) in workers.iter().zip(grants) {
                if grant.concurrency > 0 && grant.rate > 0.0 {
                    next.entry((*worker).to_owned())
                        .or_default()
                        .insert((*domain).to_owned(), grant);
                }
            }
        }
        state
            .throttles
            .retain(|d, _| domains.contains_key(d.as_str()));

        // The workers whose shares change enough to write: a worker that wants nothing gets
        // an empty document (its revision tells when it has seen it), removed once it is gone
        // and its cuts are in force.
        let empty = BTreeMap::new();
        let mut changed: Vec<(String, Option<BTreeMap<String, Grant>>)> = Vec::new();
        let workers: BTreeSet<&String> = state.written.keys().chain(next.keys()).collect();
        for worker in workers {
            let old = state.written.get(worker).map(|(g, _)| g);
            let new = next.get(worker).unwrap_or(&empty);
            let present = demands.contains_key(worker.as_str());
            let cutting = state.cuts.contains_key(worker);
            if old.is_some_and(|o| differ(o, new)) || (old.is_none() && !new.is_empty()) {
                changed.push((worker.clone(), Some(new.clone())));
            } else if old.is_some_and(BTreeMap::is_empty) && !present && !cutting {
                changed.push((worker.clone(), None));
            }
        }
        for chunk in chunks(&changed, |(_, g)| g.as_ref().map_or(0, |g| g.len() * 64)) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(worker, grants)| {
                    let key = self.inner.config.keys.shares_key(worker);
                    match grants {
                        Some(grants) => {
                            let shares = Shares {
                                lease_ms: lease.as_millis() as u64,
                                grants: grants.clone(),
                            };
                            let value = serde_json::to_vec(&shares).unwrap_or_default();
                            TxnOp::put(key, value, None)
                        }
                        None => TxnOp::delete(key, None),
                    }
                })
                .collect();
            let done = self.write(fence, vec![], ops).await?;
            let until = Instant::now() + lease;
            for (worker, grants) in chunk {
                let (old, _) = state.written.remove(worker).unwrap_or_default();
                let new = grants.clone().unwrap_or_default();
                for (domain, from) in old {
                    let to = new.get(&domain).copied().unwrap_or_default();
                    if to.rate < from.rate || to.concurrency < from.concurrency {
                        state
                            .cuts
                            .entry(worker.clone())
                            .or_default()
                            .entry(domain)
                            .or_default()
                            .push(Cut {
                                from,
                                revision: done.revision,
                                until,
                            });
                    }
                }
                if grants.is_some() {
                    state.written.insert(worker.clone(), (new, done.revision));
                }
            }
        }
        Ok(())
    }
}

/// Most bytes (estimated) of shares in one txn: well under etcd's 1.5 MiB request limit.
const TXN_BYTES: usize = 512 * 1024;

/// `items` in runs of at most [`BATCH`] and about [`TXN_BYTES`] (one item alone may be more).
fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start == BATCH || bytes + n > TXN_BYTES) {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// Whether grants differ by more than 2 % of a rate, or by any slot or domain.
fn differ(old: &BTreeMap<String, Grant>, new: &BTreeMap<String, Grant>) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|((da, a), (db, b))| {
            da != db
                || a.concurrency != b.concurrency
                || (a.rate - b.rate).abs() > a.rate.max(b.rate) * 0.02
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_go_in_txns_bounded_by_count_and_bytes() {
        let small = vec![1usize; 300];
        let runs = chunks(&small, |_| 10);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [BATCH, BATCH, 46]
        );
        let large = vec![200 * 1024usize; 5];
        let runs = chunks(&large, |n| *n);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [2, 2, 1]);
        let huge = vec![2 * 1024 * 1024usize; 2];
        assert_eq!(chunks(&huge, |n| *n).len(), 2, "one item alone may be more");
        assert!(chunks(&Vec::<usize>::new(), |n| *n).is_empty());
    }
}
