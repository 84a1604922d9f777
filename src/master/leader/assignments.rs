//! Per-worker assignment keys: each worker follows only its own tasks.
//!
//! A resource assigned to worker `w` is also stored under `<assignments_prefix><w>/<name>`,
//! written in the same fenced txn as the resource (create, move, pin, restart, delete), so a
//! worker watches one small prefix and etcd sends each change to the one worker it concerns,
//! whatever the fleet's size. `/resources/` is unchanged, so Go workers keep reading it.
//!
//! Because the key is written with the resource, a worker never misses an assignment across a
//! master failover (nothing is in flight outside etcd), an etcd restart or a compaction (its
//! cache resumes or re-lists its prefix). What the leader did not write itself — resources
//! written straight into etcd by a Go master or a tool, or keys an older version did not write —
//! is repaired: the leader keeps a ledger of which worker's key holds each resource (read
//! keys-only at take-over, then updated by its own writes), marks a resource *dirty* when the
//! cache shows it assigned elsewhere, and writes the missing key and deletes the stale one in
//! fenced txns compared on the resource's version. A repaired key carries the resource's
//! version as its epoch ([`EPOCH_FIELD`]), so the worker reports the same epoch the masters
//! judge by; a key the leader's own write already put (same revision as the resource) is left
//! untouched, so a repair never restarts a running task.

use std::collections::{BTreeSet, HashMap, HashSet};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tracing::{info, warn};

use super::{Leader, WriteError};
use crate::etcd::cache::{Change, Event, Name};
use crate::etcd::keys::KeyLayout;
use crate::master::leadership::Fence;
use crate::model::resource::{EPOCH_FIELD, Resource};

/// Resources repaired by one txn: each takes a delete and a nested txn holding one put.
const REPAIRS: usize = 40;
/// Repair txns per scheduling step; the rest waits for the next step.
const REPAIR_TXNS: usize = 8;

/// Which worker's assignment key holds each resource, as this leader knows it.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Resource → the worker whose key holds it.
    held: HashMap<Name, Name>,
    /// One shared string per worker id.
    workers: HashSet<Name>,
    /// Resources whose keys may not match the resource.
    dirty: BTreeSet<Name>,
    /// Keys found beyond the first for one resource: (worker, resource), deleted by a repair.
    strays: Vec<(Name, Name)>,
}

impl Ledger {
    fn intern(&mut self, worker: &str) -> Name {
        if let Some(w) = self.workers.get(worker) {
            return Name::clone(w);
        }
        let w = Name::from(worker);
        self.workers.insert(Name::clone(&w));
        w
    }

    /// Records that `worker`'s key (or none) now holds `name`.
    pub(super) fn set(&mut self, name: &str, worker: Option<&str>) {
        match worker {
            Some(w) => {
                let w = self.intern(w);
                match self.held.get_mut(name) {
                    Some(held) => *held = w,
                    None => {
                        self.held.insert(Name::from(name), w);
                    }
                }
            }
            None => {
                self.held.remove(name);
            }
        }
    }

    /// The worker whose key holds `name`.
    pub(super) fn holder(&self, name: &str) -> Option<&str> {
        self.held.get(name).map(|w| &**w)
    }

    /// Marks `name` dirty when the resource's worker (`None`: unassigned or deleted) is not the
    /// one whose key holds it.
    pub(super) fn check(&mut self, name: &str, worker: Option<&str>) {
        if self.holder(name) != worker {
            self.dirty.insert(Name::from(name));
        }
    }

    /// Records a key found at take-over.
    fn found(&mut self, worker: &str, name: &str) {
        if self.held.contains_key(name) {
            let worker = self.intern(worker);
            self.strays.push((worker, Name::from(name)));
            self.dirty.insert(Name::from(name));
            return;
        }
        self.set(name, Some(worker));
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

impl Leader {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a write of the leader's own that left `name` with `worker`'s key (or none).
    pub(super) fn assigned(&self, name: &str, worker: Option<&str>) {
        self.ledger().set(name, worker);
    }

    /// The worker whose key holds `name`, as the ledger knows it.
    pub(super) fn key_holder(&self, name: &str) -> Option<String> {
        self.ledger().holder(name).map(str::to_owned)
    }

    /// Loads the ledger from etcd at `revision` (keys only), replacing the last term's.
    pub(super) async fn load_assignments(&self, revision: i64) -> Result<usize, WriteError> {
        let keys = &self.inner.config.keys;
        let mut ledger = Ledger::default();
        let mut count = 0usize;
        crate::etcd::list_keys(
            &self.inner.client,
            &keys.assignments_prefix,
            revision,
            self.inner.config.request_timeout,
            |kvs| {
                for kv in &kvs {
                    let Ok(key) = std::str::from_utf8(kv.key()) else {
                        continue;
                    };
                    if let Some((worker, name)) = keys.parse_assignment_key(key) {
                        ledger.found(worker, name);
                        count += 1;
                    }
                }
            },
        )
        .await?;
        *self.ledger() = ledger;
        Ok(count)
    }

    /// Marks dirty every resource of a take-over page whose key does not match (`listed`:
    /// resource → worker).
    /// The ledger's names are then replaced by the placement's (`listed`), which are the
    /// caches' own strings, so that a name is stored once.
    pub(super) fn check_listed<'a>(
        &self,
        listed: impl Iterator<Item = (&'a Name, Option<&'a str>)>,
    ) {
        let mut ledger = self.ledger();
        for (name, worker) in listed {
            ledger.check(name, worker);
            if let Some(w) = ledger.held.remove(&**name) {
                ledger.held.insert(Name::clone(name), w);
            }
        }
    }

    /// Marks dirty every key whose resource is gone; returns how many repairs wait.
    pub(super) fn check_gone(&self, exists: impl Fn(&str) -> bool) -> usize {
        let mut ledger = self.ledger();
        let gone: Vec<Name> = ledger.held.keys().filter(|n| !exists(n)).cloned().collect();
        ledger.dirty.extend(gone);
        ledger.dirty()
    }

    /// Marks dirty the resources of a cache batch whose keys do not match.
    pub(super) fn note_assignments(&self, change: &Change<Resource>) {
        let mut ledger = self.ledger();
        for event in &change.events {
            match event {
                Event::Added { name, new } | Event::Modified { name, new, .. } => {
                    ledger.check(name, new.value.assigned_worker());
                }
                Event::Deleted { name, .. } => ledger.check(name, None),
            }
        }
    }

    /// Writes the repairs waiting, a bounded number of txns per call.
    pub(super) async fn repair_assignments(&self, fence: &Fence) -> Result<(), WriteError> {
        for _ in 0..REPAIR_TXNS {
            let (names, strays) = {
                let mut ledger = self.ledger();
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

    async fn repair(
        &self,
        fence: &Fence,
        names: &[Name],
        strays: &[(Name, Name)],
    ) -> Result<(), WriteError> {
        let keys = &self.inner.config.keys;
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut outcome: Vec<(Name, Option<String>)> = Vec::new();
        for (worker, name) in strays {
            let current = self.inner.resources.get(name);
            if current.as_ref().and_then(|e| e.value.assigned_worker()) != Some(&**worker) {
                ops.push(TxnOp::delete(keys.assignment_key(worker, name), None));
            }
        }
        for name in names {
            let current = self.inner.resources.get(name);
            let desired = current.as_ref().and_then(|e| e.value.assigned_worker());
            let held = self.ledger().holder(name).map(str::to_owned);
            if held.as_deref() == desired {
                continue;
            }
            let key = keys.resource_key(name);
            match &current {
                Some(e) => compares.push(Compare::mod_revision(
                    key.as_bytes(),
                    CompareOp::Equal,
                    e.mod_revision,
                )),
                None => compares.push(Compare::create_revision(
                    key.as_bytes(),
                    CompareOp::Equal,
                    0,
                )),
            }
            if let Some(from) = held.as_deref().filter(|h| Some(*h) != desired) {
                ops.push(TxnOp::delete(keys.assignment_key(from, name), None));
            }
            if let (Some(e), Some(to)) = (&current, desired) {
                let mut value = (*e.value).clone();
                value
                    .extra
                    .insert(EPOCH_FIELD.to_owned(), e.mod_revision.into());
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
        let mut ledger = self.ledger();
        if written.applied {
            for (name, worker) in &outcome {
                ledger.set(name, worker.as_deref());
            }
            info!(
                repaired = outcome.len(),
                strays = strays.len(),
                revision = written.revision,
                "assignment keys repaired"
            );
        } else {
            // A resource changed meanwhile: its next batch marks it again if needed.
            warn!(
                count = outcome.len(),
                "assignment repair raced a change; retrying"
            );
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
    fn the_ledger_marks_what_does_not_match_and_remembers_strays() {
        let mut ledger = Ledger::default();
        ledger.found("w1", "a");
        ledger.found("w2", "a");
        ledger.found("w1", "b");
        assert_eq!(ledger.holder("a"), Some("w1"));
        assert_eq!(ledger.strays.len(), 1);
        ledger.check("b", Some("w1"));
        ledger.check("c", None);
        assert_eq!(ledger.dirty.iter().map(|n| &**n).collect::<Vec<_>>(), ["a"]);
        ledger.check("c", Some("w1"));
        ledger.set("b", None);
        assert_eq!(ledger.holder("b"), None);
        assert_eq!(ledger.dirty(), 3);
        // Worker ids are shared.
        ledger.set("d", Some("w1"));
        assert!(Name::ptr_eq(&ledger.held["a"], &ledger.held["d"]));
    }
}
