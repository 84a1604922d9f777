//! The leader compacts etcd's history, as the Kubernetes apiserver does: nothing else would,
//! and an uncompacted etcd grows with every write (statuses are written many times per task)
//! until it reaches its quota and refuses writes.
//!
//! Every interval, while this master's term is ready, it compacts to the revision it read one
//! interval before, so etcd keeps at least one interval of history: a watcher that lags less
//! than that resumes where it was; one that lags more lists again. A new term reads afresh and
//! compacts nothing in its first interval. Compaction is not fenced (etcd has no compare for
//! it), but a deposed leader can only compact history one interval old, which a live leader
//! would compact too.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::etcd::EtcdError;
use crate::etcd::client::{current_revision, timed};
use crate::master::leadership::{Leadership, Term};
use crate::metrics::Metrics;

/// What the compactor needs.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// How often to compact, and how much history to keep. Zero: never compact.
    pub interval: Duration,
    /// A key read (count only) for etcd's current revision.
    pub revision_key: String,
    /// Deadline for one etcd request.
    pub request_timeout: Duration,
}

/// Compacts etcd's history during every ready term of `leadership`, until `cancel` fires.
pub async fn run(
    client: Client,
    config: CompactorConfig,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    if config.interval.is_zero() {
        return;
    }
    let mut terms = leadership.subscribe();
    loop {
        let term = terms.borrow_and_update().clone();
        if let Term::Ready(fence) = term {
            let mut ending = terms.clone();
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ending.wait_for(|t| !matches!(t, Term::Ready(f) if *f == fence)) => {}
                () = serve_term(&client, &config, &metrics) => {}
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = terms.changed() => if changed.is_err() { return },
        }
    }
}

/// One term's compactions; runs until the term ends.
async fn serve_term(client: &Client, config: &CompactorConfig, metrics: &Metrics) {
    // Read in this term only: a revision from before it could be older than one interval.
    let mut kept: Option<i64> = None;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(revision) = kept.take() {
            match compact(client, revision, config.request_timeout).await {
                Ok(()) => {
                    metrics.compactions.inc();
                    metrics.compacted_revision.set(revision);
                    debug!(revision, "compacted etcd's history");
                }
                Err(error) => warn!(revision, %error, "compacting etcd's history failed"),
            }
        }
        match current_revision(client, &config.revision_key, config.request_timeout).await {
            Ok(revision) => kept = Some(revision),
            Err(error) => warn!(%error, "reading etcd's revision to compact to later failed"),
        }
    }
}

/// Compacts etcd's history up to `revision`. History already compacted past it is success.
async fn compact(client: &Client, revision: i64, deadline: Duration) -> Result<(), EtcdError> {
    let mut kv = client.kv_client();
    match timed(deadline, kv.compact(revision, None)).await {
        Err(EtcdError::Client(e)) if e.to_string().contains("has been compacted") => Ok(()),
        other => other.map(|_| ()),
    }
}
