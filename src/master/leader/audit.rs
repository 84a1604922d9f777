//! An audit entry waiting for its write: a write made through the API carries its entry in
//! its request's task, and the first of its txns that applies stores the entry too, in the
//! same fenced txn ([`super::commit`]), so a change and its record are never apart. What
//! stored nothing is recorded after its answer ([`super::trail`]).

use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::TxnOp;

use crate::model::audit::Entry;

tokio::task_local! {
    static PENDING: Pending;
}

/// An entry waiting for the txn that will store it. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Pending(Arc<Mutex<Slot>>);

#[derive(Debug, Default)]
struct Slot {
    /// The key and bytes, until a txn that applied took them.
    put: Option<(String, Vec<u8>)>,
    recorded: bool,
    /// Who made the request.
    caller: String,
}

impl Pending {
    /// `entry`, to be stored under `key`.
    pub fn new(key: String, entry: &Entry) -> Self {
        Self(Arc::new(Mutex::new(Slot {
            put: Some((key, entry.encode())),
            recorded: false,
            caller: entry.caller.clone(),
        })))
    }

    /// True once a txn that applied stored the entry.
    pub fn recorded(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recorded
    }

    /// Runs `work` with this entry pending for the writes it makes.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        PENDING.scope(self, work).await
    }
}

/// The running task's pending entry, if it has one not yet stored: its put, to join a txn,
/// and the pending entry to [`settle`] once that txn is answered.
pub(super) fn take() -> Option<(Pending, TxnOp)> {
    PENDING
        .try_with(|pending| {
            let slot = pending.0.lock().unwrap_or_else(PoisonError::into_inner);
            let (key, bytes) = slot.put.clone()?;
            Some((pending.clone(), TxnOp::put(key, bytes, None)))
        })
        .ok()
        .flatten()
}

/// Who made the API request the running task serves, if it serves one: histories name it.
pub(super) fn actor() -> Option<String> {
    PENDING
        .try_with(|pending| {
            let slot = pending.0.lock().unwrap_or_else(PoisonError::into_inner);
            slot.caller.clone()
        })
        .ok()
}

/// Marks the entry stored when the txn it joined applied; otherwise it waits for the next.
pub(super) fn settle(pending: &Pending, applied: bool) {
    let mut slot = pending.0.lock().unwrap_or_else(PoisonError::into_inner);
    if applied {
        slot.put = None;
        slot.recorded = true;
    }
}
