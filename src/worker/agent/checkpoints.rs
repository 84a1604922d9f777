//! Checkpoints on their way to etcd: per task, at most one write per `worker.checkpoint_interval`
//! and one buffer waiting, so a task that checkpoints in a tight loop is coalesced (the last
//! bytes win) instead of queued without bound.
//!
//! Each write is one txn that compares the create revision of the task's assignment key with
//! the run's: the key goes in the txn that moves the task away, so a worker whose task moved
//! can never overwrite the new run's checkpoint. Everyone waiting on a write hears how it went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Agent, Ticket};
use crate::etcd::timed;
use crate::model::checkpoint::{Checkpoint, Header};
use crate::model::status::now_ms;

/// How a checkpoint's write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored at this revision, with the bytes of the last put before it (`superseded`: not
    /// the ones of this request).
    Stored {
        /// The write's revision.
        revision: i64,
        /// True when later bytes replaced this request's before they were written.
        superseded: bool,
    },
    /// Refused: the task's assignment here is gone (it moved, or was deleted).
    Moved,
    /// etcd did not answer; nothing was written.
    Unavailable(String),
}

/// Bytes waiting for their write, and who waits on them.
struct Pending {
    ticket: Ticket,
    data: Arc<[u8]>,
    written_ms: i64,
    waiters: Vec<(u64, oneshot::Sender<Outcome>)>,
    /// The sequence number of the newest bytes.
    newest: u64,
}

#[derive(Default)]
struct Slot {
    assigned_at: i64,
    pending: Option<Pending>,
    /// Bytes being written now.
    in_flight: Option<Arc<[u8]>>,
    /// A flusher runs for this slot.
    flushing: bool,
    last_write: Option<Instant>,
    sequence: u64,
}

/// Every task's slot; a slot lives while it has bytes to write.
#[derive(Default)]
pub(super) struct Slots(Mutex<HashMap<String, Slot>>);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest bytes of task `name` not yet in etcd, for its assignment `assigned_at`: what
    /// a process started again after a crash resumes from.
    pub(super) fn newest(&self, name: &str, assigned_at: i64) -> Option<Arc<[u8]>> {
        let slots = self.lock();
        let slot = slots.get(name).filter(|s| s.assigned_at == assigned_at)?;
        slot.pending
            .as_ref()
            .map(|p| Arc::clone(&p.data))
            .or_else(|| slot.in_flight.clone())
    }
}

impl Agent {
    /// Queues `data` as the checkpoint of `ticket`'s run and waits for the write that carries
    /// it, or later bytes.
    pub(super) async fn checkpoint(&self, ticket: Ticket, data: Vec<u8>) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut slots = self.inner.slots.lock();
            let slot = slots.entry(ticket.name.clone()).or_default();
            if slot.assigned_at != ticket.assigned_at {
                // Another assignment's bytes are not this one's to write.
                slot.assigned_at = ticket.assigned_at;
                if let Some(old) = slot.pending.take() {
                    for (_, waiter) in old.waiters {
                        let _ = waiter.send(Outcome::Moved);
                    }
                }
            }
            slot.sequence += 1;
            let sequence = slot.sequence;
            let waiters = slot.pending.take().map(|p| p.waiters).unwrap_or_default();
            let mut pending = Pending {
                ticket: ticket.clone(),
                data: data.into(),
                written_ms: now_ms(),
                waiters,
                newest: sequence,
            };
            pending.waiters.push((sequence, tx));
            slot.pending = Some(pending);
            !std::mem::replace(&mut slot.flushing, true)
        };
        if start {
            tokio::spawn(self.clone().flush(ticket.name));
        }
        rx.await
            .unwrap_or_else(|_| Outcome::Unavailable("the worker is stopping".into()))
    }

    /// Writes task `name`'s pending bytes, one write per interval, until none are left.
    async fn flush(self, name: String) {
        loop {
            let last = self
                .inner
                .slots
                .lock()
                .get(&name)
                .and_then(|s| s.last_write);
            if let Some(last) = last {
                tokio::time::sleep_until(last + self.inner.interval).await;
            }
            let taken = {
                let mut slots = self.inner.slots.lock();
                let Some(slot) = slots.get_mut(&name) else {
                    return;
                };
                match slot.pending.take() {
                    Some(p) => {
                        slot.in_flight = Some(Arc::clone(&p.data));
                        p
                    }
                    None => {
                        // Nothing left: the slot goes; etcd holds the newest bytes.
                        slots.remove(&name);
                        return;
                    }
                }
            };
            let outcome = self.write(&taken).await;
            {
                let mut slots = self.inner.slots.lock();
                if let Some(slot) = slots.get_mut(&name) {
                    slot.in_flight = None;
                    slot.last_write = Some(Instant::now());
                }
            }
            for (sequence, waiter) in taken.waiters {
                let answer = match &outcome {
                    Outcome::Stored { revision, .. } => Outcome::Stored {
                        revision: *revision,
                        superseded: sequence != taken.newest,
                    },
                    other => other.clone(),
                };
                let _ = waiter.send(answer);
            }
        }
    }

    /// One fenced write of `p`'s bytes.
    async fn write(&self, p: &Pending) -> Outcome {
        let keys = &self.inner.keys;
        let header = Header {
            worker: self.inner.node_id.clone(),
            epoch: p.ticket.epoch,
            written_ms: p.written_ms,
        };
        let assignment = keys.assignment_key(&self.inner.node_id, &p.ticket.name);
        let txn = Txn::new()
            .when([Compare::create_revision(
                assignment,
                CompareOp::Equal,
                p.ticket.assigned_at,
            )])
            .and_then([TxnOp::put(
                keys.checkpoint_key(&p.ticket.name),
                Checkpoint::encode(&header, &p.data),
                None,
            )]);
        let mut kv = self.inner.client.kv_client();
        match timed(self.inner.timeout, kv.txn(txn)).await {
            Ok(answer) if answer.succeeded() => Outcome::Stored {
                revision: answer.header().map_or(0, |h| h.revision()),
                superseded: false,
            },
            Ok(_) => {
                info!(task = %p.ticket.name, epoch = p.ticket.epoch, "checkpoint refused: the task's assignment here is gone");
                Outcome::Moved
            }
            Err(error) => {
                warn!(task = %p.ticket.name, %error, "checkpoint not written");
                Outcome::Unavailable(error.to_string())
            }
        }
    }
}

/// The interval's floor, so that a zero in config cannot make a hot loop.
pub(super) fn interval(configured: Duration) -> Duration {
    configured.max(Duration::from_millis(10))
}
