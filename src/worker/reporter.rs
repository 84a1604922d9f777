//! Writes the statuses of this worker's tasks to etcd, under the worker's own lease, so that
//! they vanish with the worker.
//!
//! Supervisors report through [`Reports`] without waiting on etcd; [`run`] writes the newest
//! status of each task, coalescing bursts (a change waits [`LINGER`] for the ones after it), and writes them all again under a new lease after
//! the worker registered again. A write only replaces a status this worker wrote (the key's
//! lease is ours) or none, and a removal only removes ours, so a worker that lost a task never
//! overwrites the status its new worker reports. While the worker is not sure of its lease and
//! its assignments, nothing is written ([`Reports::hold`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::etcd::backoff::Backoff;
use crate::etcd::timed;
use crate::keys::KeyLayout;
use crate::model::status::TaskStatus;

/// A status as written to etcd. Kept encoded, the JSON is one allocation instead of the
/// struct's fields and strings, the map's slots are small, and the writer shares it instead of
/// copying it (heaptrack, 33,334 statuses: 12.7 MB instead of 21.6 MB).
type Encoded = Arc<[u8]>;

#[derive(Default)]
struct Book {
    /// The newest status of every task this worker runs.
    current: HashMap<Box<str>, Encoded>,
    /// Tasks whose status changed since it was last written, or that were removed.
    dirty: HashSet<Box<str>>,
    /// Nothing is written while held.
    held: bool,
}

/// Where supervisors report. Cheap to clone; never blocks.
#[derive(Clone, Default)]
pub struct Reports {
    book: Arc<Mutex<Book>>,
    wake: Arc<Notify>,
}

impl Reports {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Task `name` is now `status`.
    pub fn set(&self, name: &str, status: TaskStatus) {
        let encoded: Encoded = match serde_json::to_vec(&status) {
            Ok(json) => json.into(),
            Err(error) => {
                warn!(task = name, %error, "cannot encode a status");
                return;
            }
        };
        let mut book = self.book();
        book.current.insert(name.into(), encoded);
        book.dirty.insert(name.into());
        drop(book);
        self.wake.notify_one();
    }

    /// Task `name` left this worker: its status goes.
    pub fn remove(&self, name: &str) {
        let mut book = self.book();
        book.current.remove(name);
        book.dirty.insert(name.into());
        drop(book);
        self.wake.notify_one();
    }

    /// While `held`, nothing is written: the worker cannot prove its lease, or has not read its
    /// assignments since it registered again, so a status it wrote could be about an epoch
    /// that is no longer current. Changes wait, and are written when released.
    pub fn hold(&self, held: bool) {
        self.book().held = held;
        if !held {
            self.wake.notify_one();
        }
    }

    /// Forgets the status of every task but those `keep` names (tasks that left while the
    /// worker was cut off): the ones written are removed.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut book = self.book();
        let gone: Vec<Box<str>> = book.current.keys().filter(|n| !keep(n)).cloned().collect();
        for name in gone {
            book.current.remove(&name);
            book.dirty.insert(name);
        }
    }

    fn is_held(&self) -> bool {
        self.book().held
    }

    /// The newest status of `name`, as reported here.
    pub fn get(&self, name: &str) -> Option<TaskStatus> {
        let encoded = self.book().current.get(name).cloned()?;
        serde_json::from_slice(&encoded).ok()
    }

    fn take_dirty(&self) -> Vec<(Box<str>, Option<Encoded>)> {
        let mut book = self.book();
        let dirty: Vec<Box<str>> = book.dirty.drain().collect();
        dirty
            .into_iter()
            .map(|name| {
                let status = book.current.get(&name).cloned();
                (name, status)
            })
            .collect()
    }

    fn mark_dirty(&self, names: impl IntoIterator<Item = Box<str>>) {
        self.book().dirty.extend(names);
    }

    fn mark_all_dirty(&self) {
        let mut book = self.book();
        let names: Vec<Box<str>> = book.current.keys().cloned().collect();
        book.dirty.extend(names);
    }
}

/// Writes reports until `cancel` fires. `lease` is the worker's current registration lease.
pub async fn run(
    client: Client,
    keys: KeyLayout,
    reports: Reports,
    mut lease: watch::Receiver<Option<i64>>,
    request_timeout: Duration,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // Our leases, newest first: a status written under the previous one is still ours.
    let mut ours: Vec<i64> = Vec::new();
    loop {
        // Set when a status is held by another worker's key: tried again after a pause.
        let mut retry_blocked = false;
        let current = *lease.borrow_and_update();
        if let Some(lease_id) = current.filter(|_| !reports.is_held()) {
            if ours.first() != Some(&lease_id) {
                ours.insert(0, lease_id);
                ours.truncate(2);
            }
            let batch = reports.take_dirty();
            let mut failed = Vec::new();
            // Statuses another worker's key still holds: the task moved here and its old
            // worker has not removed its status yet. Tried again after a pause, while current.
            let mut blocked = Vec::new();
            // A few statuses per txn: a worker that takes thousands of tasks at once reports
            // them in a few hundred round trips, not tens of thousands.
            for chunk in batch.chunks(STATUS_BATCH) {
                let (names, ops): (Vec<(&Box<str>, bool)>, Vec<TxnOp>) = chunk
                    .iter()
                    .filter_map(|(name, status)| {
                        let key = keys.status_key(name);
                        let op = match status {
                            Some(status) => put_op(&key, status, &ours),
                            None => remove_op(&key, &ours),
                        };
                        op.map(|op| ((name, status.is_some()), op))
                    })
                    .unzip();
                if ops.is_empty() {
                    continue;
                }
                let mut kv = client.kv_client();
                match timed(request_timeout, kv.txn(Txn::new().and_then(ops))).await {
                    Ok(answer) => {
                        for ((name, put), response) in names.iter().zip(answer.op_responses()) {
                            if *put && !matches!(&response, TxnOpResponse::Txn(t) if applied(t)) {
                                blocked.push((*name).clone());
                            }
                        }
                    }
                    Err(error) => {
                        warn!(count = chunk.len(), %error, "could not write task statuses; will retry");
                        failed.extend(chunk.iter().map(|(name, _)| name.clone()));
                    }
                }
            }
            if !blocked.is_empty() {
                reports.mark_dirty(blocked);
                retry_blocked = true;
            }
            if !failed.is_empty() {
                reports.mark_dirty(failed);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
            backoff.reset();
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(BLOCKED_RETRY), if retry_blocked => {}
            () = reports.wake.notified() => {
                // A task that starts and ends at once (starting, running, completed) is one
                // write, not three: the newest status of each name is what gets written.
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(LINGER) => {}
                }
            }
            changed = lease.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new lease: every status goes again under it.
                reports.mark_all_dirty();
            }
        }
    }
}

/// How long a status another worker's key holds waits before it is tried again.
const BLOCKED_RETRY: Duration = Duration::from_millis(250);

/// True when a nested txn of [`chain`] applied its op, at any depth.
fn applied(answer: &TxnResponse) -> bool {
    answer.succeeded()
        || answer
            .op_responses()
            .iter()
            .any(|r| matches!(r, TxnOpResponse::Txn(inner) if applied(inner)))
}

/// How long a change waits for the ones after it before it is written.
const LINGER: Duration = Duration::from_millis(50);

/// Statuses written per txn (each is a nested txn of up to four ops).
const STATUS_BATCH: usize = 16;

/// The op that puts `status` on our newest lease (`ours[0]`) if the key is ours (on any of our
/// leases) or absent, and leaves it alone otherwise (another worker's status: the task is
/// theirs now). One nested txn per condition, each tried when the one before failed.
fn put_op(key: &str, status: &[u8], ours: &[i64]) -> Option<TxnOp> {
    let lease = *ours.first()?;
    let op = TxnOp::put(key, status, Some(PutOptions::new().with_lease(lease)));
    let compares: Vec<Compare> = ours
        .iter()
        .map(|l| Compare::lease(key, CompareOp::Equal, *l))
        .chain([Compare::create_revision(key, CompareOp::Equal, 0)])
        .collect();
    Some(chain(compares, op))
}

/// The op that deletes the status at `key` if we wrote it (on any of our leases).
fn remove_op(key: &str, ours: &[i64]) -> Option<TxnOp> {
    let compares: Vec<Compare> = ours
        .iter()
        .map(|l| Compare::lease(key, CompareOp::Equal, *l))
        .collect();
    (!compares.is_empty()).then(|| chain(compares, TxnOp::delete(key, None)))
}

/// `if c1 { op } else if c2 { op } else ...`, as nested txns.
fn chain(compares: Vec<Compare>, op: TxnOp) -> TxnOp {
    let mut nested: Option<Txn> = None;
    for compare in compares.into_iter().rev() {
        let txn = Txn::new().when([compare]).and_then([op.clone()]);
        nested = Some(match nested {
            Some(inner) => txn.or_else([TxnOp::txn(inner)]),
            None => txn,
        });
    }
    TxnOp::txn(nested.unwrap_or_default())
}
