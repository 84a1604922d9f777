//! Per-worker assignment keys, so that each worker watches only its own tasks.
//!
//! A resource assigned to worker `w` is also stored under `<assignments_prefix><w>/<name>`, in
//! the same fenced txn as the resource, so etcd sends each change to the one worker it concerns
//! and no assignment is in flight outside etcd. Keys the leader did not write (a Go master's, a
//! tool's) are repaired; the [`Ledger`] holds only those exceptions, learned from cache batches
//! and from one check of every key once a term is ready. A repaired key carries the resource's
//! version as its epoch ([`EPOCH_FIELD`]) and a key the resource's own txn wrote is left alone,
//! so a repair never restarts a running task.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tracing::{info, warn};

use super::{Leader, WriteError};
use crate::etcd::backoff::Backoff;
use crate::etcd::cache::{Change, Event, Name};
use crate::keys::KeyLayout;
use crate::master::leadership::Fence;
use crate::model::resource::{EPOCH_FIELD, Resource};

/// Resources repaired by one txn: each takes a delete and a nested txn holding one put.
const REPAIRS: usize = 40;
/// Repair txns per scheduling step; the rest waits for the next step.
const REPAIR_TXNS: usize = 8;

/// Where assignment keys disagree with the resources, as this leader knows it.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Resource → the worker whose key holds it (`None`: no key), for the resources whose key
    /// is not their worker's in the cache. Normally empty.
    exceptions: HashMap<Name, Option<Name>>,
    /// Resources whose keys may not match the resource.
    dirty: BTreeSet<Name>,
    /// Keys that hold a resource not assigned to their worker: (worker, resource).
    strays: Vec<(Name, Name)>,
    /// True once this term's verification has compared every key with the cache; no repair is
    /// written before (it would act on a ledger that does not know the keys yet).
    verified: bool,
    /// True when a re-list of the resources cache asks for a new verification.
    reverify: bool,
}

impl Ledger {
    /// The worker whose key holds `name`, when the cache shows it assigned to `current`.
    pub(super) fn holder<'a>(&'a self, name: &str, current: Option<&'a str>) -> Option<&'a str> {
        match self.exceptions.get(name) {
            Some(held) => held.as_deref(),
            None => current,
        }
    }

    /// Records that `worker`'s key (or none) now holds `name`, which the cache shows assigned
    /// to `current`. A disagreement is an exception until the cache catches up (the leader's
    /// own write, not seen yet) or a repair settles it.
    pub(super) fn wrote(&mut self, name: &str, worker: Option<&str>, current: Option<&str>) {
        if worker == current {
            self.exceptions.remove(name);
        } else {
            let name = Name::from(name);
            self.exceptions
                .insert(Name::clone(&name), worker.map(Name::from));
            self.dirty.insert(name);
        }
    }

    /// Follows one cache event: `name` went from `old`'s worker to `new`'s. A change the leader
    /// did not write moved no key, so the key stays where it was.
    pub(super) fn changed(&mut self, name: &Name, old: Option<&str>, new: Option<&str>) {
        let held = match self.exceptions.get(&**name) {
            Some(held) => held.as_deref(),
            None => old,
        };
        if held == new {
            self.exceptions.remove(&**name);
            return;
        }
        if !self.exceptions.contains_key(&**name) {
            self.exceptions
                .insert(Name::clone(name), old.map(Name::from));
        }
        self.dirty.insert(Name::clone(name));
    }

    /// Records what a verification found: keys that hold a resource not assigned to their
    /// worker, and resources assigned to a worker without its key.
    fn found(&mut self, strays: Vec<(Name, Name)>, missing: Vec<Name>) {
        for name in missing {
            if !self.exceptions.contains_key(&*name) {
                self.exceptions.insert(Name::clone(&name), None);
            }
            self.dirty.insert(name);
        }
        self.strays.extend(strays);
        self.verified = true;
    }

    /// Number of resources waiting for a repair.
    pub(super) fn dirty(&self) -> usize {
        self.dirty.len() + self.strays.len()
    }
}

/// The ops that make the assignment keys of `name` follow a write of `after` (encoded as
/// `value`), when the keys followed `before`'s worker: delete the old worker's key, put the
/// new one's. Part of the resource's own txn.
pub(super) fn ops(
    keys: &KeyLayout,
    name: &str,
    before: Option<&str>,
    after: &Resource,
    value: &[u8],
) -> Vec<TxnOp> {
    let mut ops = Vec::with_capacity(2);
    let to = after.assigned_worker();
    if let Some(from) = before.filter(|b| Some(*b) != to) {
        ops.push(TxnOp::delete(keys.assignment_key(from, name), None));
    }
    if let Some(to) = to {
        ops.push(TxnOp::put(keys.assignment_key(to, name), value, None));
    }
    ops
}

/// One worker's keys as listed: compared with the cache when the listing moves past them.
#[derive(Debug, Default)]
struct Run {
    worker: String,
    names: Vec<String>,
}

impl Leader {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker the cache shows `name` assigned to.
    fn cached_worker(&self, name: &str) -> Option<String> {
        self.inner
            .resources
            .get(name)
            .and_then(|e| e.value.assigned_worker().map(str::to_owned))
    }

    /// Records a write of the leader's own that left `name` with `worker`'s key (or none).
    pub(super) fn assigned(&self, name: &str, worker: Option<&str>) {
        let current = self.cached_worker(name);
        self.ledger().wrote(name, worker, current.as_deref());
    }

    /// The worker whose key holds `name`, as the leader knows it.
    pub(super) fn key_holder(&self, name: &str) -> Option<String> {
        let current = self.cached_worker(name);
        self.ledger()
            .holder(name, current.as_deref())
            .map(str::to_owned)
    }

    /// Starts a term's ledger: empty and not verified.
    pub(super) fn reset_assignments(&self) {
        *self.ledger() = Ledger::default();
    }

    /// Asks for a new verification (after a re-list of the resources cache); repairs wait for
    /// it.
    pub(super) fn reverify_assignments(&self) {
        let mut ledger = self.ledger();
        ledger.verified = false;
        ledger.reverify = true;
    }

    /// True once, after [`Leader::reverify_assignments`].
    pub(super) fn take_reverify(&self) -> bool {
        std::mem::take(&mut self.ledger().reverify)
    }

    /// Follows the assignments of a cache batch.
    pub(super) fn note_assignments(&self, change: &Change<Resource>) {
        let mut ledger = self.ledger();
        for event in &change.events {
            match event {
                Event::Added { name, new } => {
                    ledger.changed(name, None, new.value.assigned_worker());
                }
                Event::Modified { name, old, new } => ledger.changed(
                    name,
                    old.value.assigned_worker(),
                    new.value.assigned_worker(),
                ),
                Event::Deleted { name, old } => {
                    ledger.changed(name, old.value.assigned_worker(), None);
                }
            }
        }
    }

    /// Compares every assignment key with the resources cache, retrying until it succeeds (the
    /// term's end drops it). Runs once per term, after the term is ready, so a take-over does
    /// not wait for a million keys.
    pub(super) async fn verify_assignments(&self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.verify_once().await {
                Ok(()) => return,
                Err(error) => {
                    warn!(%error, "assignment keys not verified; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn verify_once(&self) -> Result<(), WriteError> {
        let started = Instant::now();
        let keys = &self.inner.config.keys;
        // Keys are listed at `revision` and compared with the cache once it reflects that
        // revision; a resource changed since was followed by the cache batches meanwhile.
        let revision = self.current_revision().await?;
        if !self
            .inner
            .resources
            .wait_for_revision(revision, Duration::from_secs(10))
            .await
        {
            return Err(WriteError::Etcd(crate::etcd::EtcdError::Timeout(
                Duration::from_secs(10),
            )));
        }
        let mut run = Run::default();
        let mut visited: HashSet<String> = HashSet::new();
        let (mut strays, mut missing) = (Vec::new(), Vec::new());
        let mut count = 0usize;
        crate::etcd::list_keys(
            &self.inner.client,
            &keys.assignments_prefix,
            revision,
            self.inner.config.request_timeout,
            |kvs| {
                for kv in &kvs {
                    let Some((worker, name)) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| keys.parse_assignment_key(k))
                    else {
                        continue;
                    };
                    count += 1;
                    // A worker's keys are contiguous in key order.
                    if worker != run.worker {
                        self.compare_run(&run, revision, &mut strays, &mut missing);
                        visited.insert(std::mem::take(&mut run.worker));
                        run = Run {
                            worker: worker.to_owned(),
                            names: Vec::new(),
                        };
                    }
                    run.names.push(name.to_owned());
                }
            },
        )
        .await?;
        self.compare_run(&run, revision, &mut strays, &mut missing);
        visited.insert(run.worker);
        // Workers holding resources without a single key.
        self.inner.resources.with_index(|objects, index, _| {
            for (worker, _) in index.groups() {
                if visited.contains(worker) {
                    continue;
                }
                for name in index.names(worker).into_iter().flatten() {
                    if objects
                        .get(name)
                        .is_some_and(|e| e.mod_revision <= revision)
                    {
                        missing.push(Name::clone(name));
                    }
                }
            }
        });
        let (found_strays, found_missing) = (strays.len(), missing.len());
        let mut ledger = self.ledger();
        ledger.found(strays, missing);
        let to_repair = ledger.dirty();
        drop(ledger);
        info!(
            revision,
            keys = count,
            strays = found_strays,
            missing = found_missing,
            to_repair,
            took_ms = started.elapsed().as_millis() as u64,
            "assignment keys verified"
        );
        self.inner.kick.notify_one();
        Ok(())
    }

    /// Compares one worker's listed keys (sorted) with the resources the cache shows on it:
    /// a key whose resource is not on that worker is a stray; a resource on it, unchanged since
    /// `revision`, without a key is missing.
    fn compare_run(
        &self,
        run: &Run,
        revision: i64,
        strays: &mut Vec<(Name, Name)>,
        missing: &mut Vec<Name>,
    ) {
        if run.worker.is_empty() {
            return;
        }
        self.inner.resources.with_index(|objects, index, _| {
            let worker = Name::from(run.worker.as_str());
            for name in &run.names {
                let on = objects
                    .get(name.as_str())
                    .and_then(|e| e.value.assigned_worker());
                if on != Some(run.worker.as_str()) {
                    strays.push((Name::clone(&worker), Name::from(name.as_str())));
                }
            }
            for name in index.names(&run.worker).into_iter().flatten() {
                let unchanged = objects
                    .get(name)
                    .is_some_and(|e| e.mod_revision <= revision);
                if unchanged
                    && run
                        .names
                        .binary_search_by(|n| n.as_str().cmp(name))
                        .is_err()
                {
                    missing.push(Name::clone(name));
                }
            }
        });
    }

    /// Writes the repairs waiting, a bounded number of txns per call; none before the term's
    /// verification.
    pub(super) async fn repair_assignments(&self, fence: &Fence) -> Result<(), WriteError> {
        for _ in 0..REPAIR_TXNS {
            let (names, strays) = {
                let mut ledger = self.ledger();
                if !ledger.verified {
                    return Ok(());
                }
                let names: Vec<Name> = std::iter::from_fn(|| ledger.dirty.pop_first())
                    .take(REPAIRS)
                    .collect();
                let take = ledger.strays.len().min(REPAIRS);
                let strays: Vec<(Name, Name)> = ledger.strays.drain(..take).collect();
                (names, strays)
            };
            if names.is_empty() && strays.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.repair(fence, &names, &strays).await {
                let mut ledger = self.ledger();
                ledger.dirty.extend(names);
                ledger.strays.extend(strays);
                return Err(e);
            }
        }
        self.inner.kick.notify_one();
        Ok(())
    }

    /// The compare that holds while `name` is as the cache shows it (`mod_revision`, or absent).
    fn unchanged(&self, name: &str, mod_revision: Option<i64>) -> Compare {
        let key = self.inner.config.keys.resource_key(name);
        match mod_revision {
            Some(r) => Compare::mod_revision(key.as_bytes(), CompareOp::Equal, r),
            None => Compare::create_revision(key.as_bytes(), CompareOp::Equal, 0),
        }
    }

    async fn repair(
        &self,
        fence: &Fence,
        names: &[Name],
        strays: &[(Name, Name)],
    ) -> Result<(), WriteError> {
        let keys = &self.inner.config.keys;
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        // A key is deleted at most once per txn (etcd refuses a txn naming a key twice).
        let mut deleted: HashSet<String> = HashSet::new();
        let mut outcome: Vec<(Name, Option<String>)> = Vec::new();
        for (worker, name) in strays {
            let current = self.inner.resources.get(name);
            if current.as_ref().and_then(|e| e.value.assigned_worker()) == Some(&**worker) {
                continue;
            }
            compares.push(self.unchanged(name, current.as_ref().map(|e| e.mod_revision)));
            let key = keys.assignment_key(worker, name);
            if deleted.insert(key.clone()) {
                ops.push(TxnOp::delete(key, None));
            }
        }
        for name in names {
            let current = self.inner.resources.get(name);
            let desired = current.as_ref().and_then(|e| e.value.assigned_worker());
            let held = self.ledger().holder(name, desired).map(str::to_owned);
            if held.as_deref() == desired {
                self.ledger().exceptions.remove(&**name);
                continue;
            }
            compares.push(self.unchanged(name, current.as_ref().map(|e| e.mod_revision)));
            if let Some(from) = held.as_deref() {
                let key = keys.assignment_key(from, name);
                if deleted.insert(key.clone()) {
                    ops.push(TxnOp::delete(key, None));
                }
            }
            if let (Some(e), Some(to)) = (&current, desired) {
                let mut value = (*e.value).clone();
                value
                    .extra
                    .insert(EPOCH_FIELD.to_owned(), e.value.epoch(e.mod_revision).into());
                let target = keys.assignment_key(to, name);
                // Left alone when the resource's own txn already wrote it.
                let put = Txn::new()
                    .when([Compare::mod_revision(
                        target.as_bytes(),
                        CompareOp::NotEqual,
                        e.mod_revision,
                    )])
                    .and_then([TxnOp::put(target, serde_json::to_vec(&value)?, None)]);
                ops.push(TxnOp::txn(put));
            }
            outcome.push((Name::clone(name), desired.map(str::to_owned)));
        }
        if ops.is_empty() {
            return Ok(());
        }
        let written = self.write(fence, compares, ops).await?;
        if written.applied {
            for (name, worker) in &outcome {
                self.assigned(name, worker.as_deref());
            }
            info!(
                repaired = outcome.len(),
                strays = strays.len(),
                revision = written.revision,
                "assignment keys repaired"
            );
        } else {
            // A resource changed meanwhile: its batch is followed, and the repair tried again.
            warn!(
                count = outcome.len(),
                "assignment repair raced a change; retrying"
            );
            let mut ledger = self.ledger();
            ledger.dirty.extend(outcome.into_iter().map(|(n, _)| n));
            ledger.strays.extend(strays.iter().cloned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, node: &str) -> Resource {
        Resource {
            id: 1.into(),
            name: name.into(),
            assigned_node: node.into(),
            creation_time: 0,
            extra: Default::default(),
        }
    }

    fn kinds(ops: &[TxnOp]) -> Vec<String> {
        ops.iter().map(|op| format!("{op:?}")).collect()
    }

    #[test]
    fn a_move_deletes_the_old_key_and_puts_the_new_one() {
        let keys = KeyLayout::default();
        let after = resource("r", "w2|a:1");
        let moved = ops(&keys, "r", Some("w1"), &after, b"v");
        assert_eq!(moved.len(), 2);
        let text = kinds(&moved).join(" ");
        assert!(text.contains("Delete"), "{text}");
        assert!(text.contains("Put"), "{text}");
        // A rewrite on the same worker puts again (a restart is a new epoch); an unassigned
        // resource has no key.
        assert_eq!(ops(&keys, "r", Some("w2"), &after, b"v").len(), 1);
        assert_eq!(ops(&keys, "r", None, &resource("r", ""), b"v").len(), 0);
        assert_eq!(
            ops(&keys, "r", Some("w1"), &resource("r", ""), b"v").len(),
            1
        );
    }

    #[test]
    fn the_ledger_holds_only_the_keys_that_disagree_with_the_cache() {
        let mut ledger = Ledger::default();
        let name = |n: &str| Name::from(n);
        // Nothing known: the key is where the cache says.
        assert_eq!(ledger.holder("a", Some("w1")), Some("w1"));
        // The leader's own move, before the cache shows it: an exception until it does.
        ledger.wrote("a", Some("w2"), Some("w1"));
        assert_eq!(ledger.holder("a", Some("w1")), Some("w2"));
        ledger.changed(&name("a"), Some("w1"), Some("w2"));
        assert!(ledger.exceptions.is_empty());
        // Seen by the cache first, then written: no exception either.
        ledger.changed(&name("b"), None, Some("w1"));
        ledger.wrote("b", Some("w1"), Some("w1"));
        assert!(ledger.exceptions.is_empty());
        // A change the leader did not write moves no key.
        ledger.changed(&name("c"), Some("w1"), Some("w3"));
        assert_eq!(ledger.holder("c", Some("w3")), Some("w1"));
        ledger.changed(&name("d"), Some("w1"), None);
        assert_eq!(ledger.holder("d", None), Some("w1"));
        ledger.changed(&name("e"), None, Some("w2"));
        assert_eq!(ledger.holder("e", Some("w2")), None);
        // A second foreign change keeps the first holder.
        ledger.changed(&name("c"), Some("w3"), Some("w4"));
        assert_eq!(ledger.holder("c", Some("w4")), Some("w1"));
        // ...and one back to the key's worker settles it.
        ledger.changed(&name("c"), Some("w4"), Some("w1"));
        assert_eq!(ledger.exceptions.len(), 2);
        // A verification adds missing keys (not over what the ledger knows) and strays.
        assert!(!ledger.verified);
        ledger.found(vec![(name("w9"), name("f"))], vec![name("d"), name("g")]);
        assert!(ledger.verified);
        assert_eq!(ledger.holder("d", None), Some("w1"));
        assert_eq!(ledger.holder("g", Some("w1")), None);
        let dirty: Vec<&str> = ledger.dirty.iter().map(|n| &**n).collect();
        assert_eq!(dirty, ["a", "b", "c", "d", "e", "g"]);
        assert_eq!(ledger.dirty(), 7);
    }
}
