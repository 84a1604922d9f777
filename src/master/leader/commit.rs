//! Group commit: the leader's writes that queue while its txns are in flight go to etcd
//! together, as one txn fenced once on the leader key with each write nested as its own txn.
//! A busy leader then makes one round trip per batch instead of one per write, and etcd one
//! raft entry and one backend commit. Each write still gets its own answer (a taken name fails
//! that create alone), and an idle leader sends each write at once: only what is already
//! queued is batched, nothing waits for company.
//!
//! etcd rejects a whole txn, before applying anything, when two of its writes put one key
//! (two creates racing for a name), when it has too many operations, or when it is too large.
//! A batch so rejected is sent again one write per txn, so a write's answer never depends on
//! what it shared a txn with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, Txn, TxnOp};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::writes::{WriteError, Written, fenced};
use crate::etcd::EtcdError;
use crate::master::leadership::Fence;
use crate::metrics::Metrics;

/// etcd's limit on a txn's operations (`--max-txn-ops`, 128 unless changed); a nested txn gets
/// what its parent leaves.
pub const MAX_OPS: usize = 128;
/// Batches in etcd at once: while one is in flight, the next one fills.
const IN_FLIGHT: usize = 2;
/// A batch in flight this long gives its place to the next one and goes on waiting for its
/// answer outside the count. When etcd's raft leader dies, the proposals it had taken are lost
/// and their txns wait for the deadline; without this, the next writes would queue behind them
/// for the whole deadline (3 s by default) although the surviving members elect and take
/// writes again within an election timeout.
const STUCK: Duration = Duration::from_millis(200);
/// Batches waiting for etcd at most, stuck ones included.
const OUTSTANDING: usize = 16;

/// One leader write: operations that apply if the compares hold.
pub struct Write {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    /// Operations this write needs from its parent's allowance, nested levels included.
    width: usize,
    /// True for one write whose ops all apply together (not [`Write::each`]): an audit entry
    /// may join it.
    single: bool,
}

impl Write {
    /// `ops` if `compares` hold. An op may be a txn of its own, one level deep.
    pub fn new(compares: Vec<Compare>, ops: Vec<TxnOp>) -> Self {
        let width = compares.len().max(ops.len()) + 1;
        Self {
            compares,
            ops,
            width,
            single: true,
        }
    }

    /// Independent writes, each applied if its own compares hold; the answer's responses say
    /// which did.
    pub fn each(items: Vec<(Vec<Compare>, Vec<TxnOp>)>) -> Self {
        let widest = items
            .iter()
            .map(|(c, o)| c.len().max(o.len()))
            .max()
            .unwrap_or(0);
        let width = items.len() + widest + 1;
        let ops = items
            .into_iter()
            .map(|(c, o)| TxnOp::txn(Txn::new().when(c).and_then(o)))
            .collect();
        Self {
            compares: Vec::new(),
            ops,
            width,
            single: false,
        }
    }

    fn into_op(self) -> TxnOp {
        TxnOp::txn(Txn::new().when(self.compares).and_then(self.ops))
    }
}

type Answer = Result<Written, WriteError>;

struct Pending {
    fence: Fence,
    write: Write,
    reply: oneshot::Sender<Answer>,
}

/// Whether a batch of `len` writes, the widest needing `widest`, takes one more of `width`:
/// the fence's txn holds one op per write and leaves the rest to each nested one.
fn fits(len: usize, widest: usize, width: usize) -> bool {
    len + 1 + widest.max(width) <= MAX_OPS
}

/// Writes that share one txn.
struct Batch {
    fence: Fence,
    writes: Vec<Pending>,
    widest: usize,
}

impl Batch {
    fn new(first: Pending) -> Self {
        Self {
            fence: first.fence.clone(),
            widest: first.write.width,
            writes: vec![first],
        }
    }

    /// Adds `next` if it is fenced alike and fits; gives it back otherwise.
    fn take(&mut self, next: Pending) -> Option<Pending> {
        if next.fence != self.fence || !fits(self.writes.len(), self.widest, next.write.width) {
            return Some(next);
        }
        self.widest = self.widest.max(next.write.width);
        self.writes.push(next);
        None
    }
}

/// Sends the leader's writes, batching those that queue. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    // Unbounded: each sender waits for its answer, so the queue holds at most one write per
    // caller waiting (requests in flight and the leader's own loops).
    queue: mpsc::UnboundedSender<Pending>,
    deadline: Duration,
}

impl Committer {
    /// Starts the committer's task; it ends when the last clone is dropped. `deadline` bounds
    /// each txn, and each write from its submission.
    pub fn start(client: Client, deadline: Duration, metrics: Arc<Metrics>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let sender = Arc::new(Sender {
            client,
            deadline,
            metrics,
        });
        tokio::spawn(run(rx, sender));
        Self { queue, deadline }
    }

    /// Commits `write` fenced by `fence`, alone or with whatever else is queued. The audit
    /// entry of the request it is made for, if not stored yet, joins it.
    pub async fn commit(&self, fence: &Fence, mut write: Write) -> Answer {
        let audit = write
            .single
            .then(super::audit::take)
            .flatten()
            .map(|(pending, put)| {
                write.ops.push(put);
                write.width = write.compares.len().max(write.ops.len()) + 1;
                pending
            });
        let answer = self.send(fence, write).await;
        if let Some(pending) = audit {
            super::audit::settle(&pending, matches!(&answer, Ok(w) if w.applied));
        }
        answer
    }

    async fn send(&self, fence: &Fence, write: Write) -> Answer {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            fence: fence.clone(),
            write,
            reply,
        };
        if self.queue.send(pending).is_err() {
            return Err(WriteError::NotLeader);
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(WriteError::Etcd(EtcdError::Malformed(
                "the committer stopped before answering".into(),
            ))),
            Err(_) => Err(WriteError::Etcd(EtcdError::Timeout(self.deadline))),
        }
    }
}

async fn run(mut queue: mpsc::UnboundedReceiver<Pending>, sender: Arc<Sender>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let outstanding = Arc::new(Semaphore::new(OUTSTANDING));
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok(held) = outstanding.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // A write whose caller gave up (timed out, or its term's duties ended) is not sent.
        if first.reply.is_closed() {
            continue;
        }
        let mut batch = Batch::new(first);
        while let Ok(next) = queue.try_recv() {
            if next.reply.is_closed() {
                continue;
            }
            if let Some(back) = batch.take(next) {
                carried = Some(back);
                break;
            }
        }
        let sender = sender.clone();
        tokio::spawn(async move {
            let send = sender.send(batch);
            tokio::pin!(send);
            if tokio::time::timeout(STUCK, &mut send).await.is_err() {
                drop(slot);
                sender.metrics.txn_stuck.inc();
                send.await;
            }
            drop(held);
        });
    }
}

struct Sender {
    client: Client,
    deadline: Duration,
    metrics: Arc<Metrics>,
}

impl Sender {
    async fn send(&self, batch: Batch) {
        let Batch { fence, writes, .. } = batch;
        let (replies, writes): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|p| (p.reply, p.write)).unzip();
        let n = writes.len();
        let ops: Vec<TxnOp> = writes.into_iter().map(Write::into_op).collect();
        // A batch etcd refuses is sent again one write per txn, so keep a copy.
        let copies = (n > 1).then(|| ops.clone());
        match self.txn(&fence, ops).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(WriteError::Etcd(e)) if copies.is_some() && refused_whole(&e) => {
                self.metrics.txn_splits.inc();
                tracing::debug!(error = %e, writes = n, "etcd refused a batch; sending each alone");
                let alone = copies.into_iter().flatten().map(|op| async {
                    let answer = self.txn(&fence, vec![op]).await;
                    answer.map(|mut a| a.remove(0))
                });
                let answers = futures_util::future::join_all(alone).await;
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                let shared = share(e);
                for reply in replies {
                    let _ = reply.send(Err(shared())); // each waiter gets the batch's failure
                }
            }
        }
    }

    /// One fenced txn of nested writes, timed and counted.
    async fn txn(&self, fence: &Fence, ops: Vec<TxnOp>) -> Result<Vec<Written>, WriteError> {
        let started = Instant::now();
        let n = ops.len();
        let result = fenced(&self.client, fence, self.deadline, ops).await;
        let metrics = &self.metrics;
        metrics
            .etcd_latency
            .observe(started.elapsed().as_secs_f64());
        metrics.txn_writes.observe(n as f64);
        if matches!(result, Err(WriteError::Etcd(_))) {
            metrics.etcd_errors.inc();
        }
        result
    }
}

/// True when etcd refused the whole txn before applying any of it: a key put twice, too many
/// operations, or too large a request (all `InvalidArgument`).
fn refused_whole(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Client(etcd_client::Error::GRpcStatus(s))
        if s.code() == tonic::Code::InvalidArgument)
}

/// One failure, answered to every write of its batch.
fn share(e: WriteError) -> impl Fn() -> WriteError {
    let e = match e {
        WriteError::Deposed => None,
        WriteError::Etcd(e) => Some(Arc::new(e)),
        other => Some(Arc::new(EtcdError::Malformed(other.to_string()))),
    };
    move || match &e {
        None => WriteError::Deposed,
        Some(e) => WriteError::Etcd(EtcdError::Shared(e.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_within_etcds_operation_limit() {
        // The fence's txn holds one op per write; each nested write gets what is left.
        assert!(fits(0, 1, 127));
        assert!(!fits(1, 2, 127));
        assert!(fits(63, 2, 2));
        assert!(fits(125, 2, 2));
        assert!(!fits(126, 2, 2));
        // A wide write joins only a short batch.
        assert!(fits(3, 2, 124));
        assert!(!fits(4, 2, 124));
        // A wide batch takes only a short write count.
        assert!(!fits(10, 118, 2));
    }

    #[test]
    fn widths_count_nested_levels() {
        let w = Write::new(vec![], vec![TxnOp::delete("a", None); 3]);
        assert_eq!(w.width, 4);
        let each = Write::each(vec![
            (vec![], vec![TxnOp::delete("a", None)]),
            (vec![], vec![TxnOp::delete("b", None); 5]),
        ]);
        assert_eq!(each.width, 2 + 5 + 1);
    }
}
