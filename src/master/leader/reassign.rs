//! Keeping the placement current during a term, from the caches' change batches, and writing
//! assignments for the resources that need a worker (those of workers that left, and
//! unassigned ones) in batched, fenced txns.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, TxnOp};
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::{BATCH, Leader, WriteError};
use crate::etcd::cache::{Change, Event};
use crate::master::leadership::Fence;
use crate::master::placement::{Move, Placement};
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::status::TaskStatus;

impl Leader {
    /// A change batch from a cache subscription, or `None`: after a lag the placement is
    /// rebuilt from the caches (the batch is lost), and a closed subscription ends nothing.
    fn received<T>(
        &self,
        change: Result<Arc<Change<T>>, broadcast::error::RecvError>,
        cache: &str,
    ) -> Option<Arc<Change<T>>> {
        match change {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                warn!(
                    skipped,
                    cache, "leader fell behind a cache; resynchronising"
                );
                self.resync();
                None
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    pub(super) fn on_resources(
        &self,
        change: Result<Arc<Change<Resource>>, broadcast::error::RecvError>,
        loaded_at: i64,
    ) {
        let Some(change) = self.received(change, "resources") else {
            return;
        };
        let mut placement = self.placement();
        if change.revision > loaded_at || change.relisted {
            for event in &change.events {
                match event {
                    Event::Added { name, new } | Event::Modified { name, new, .. } => {
                        let worker = new.value.assigned_worker();
                        placement.set_resource(name, Some(worker), change.revision);
                        placement.set_done(name, self.completed(name, worker, new.mod_revision));
                    }
                    Event::Deleted { name, .. } => {
                        placement.set_resource(name, None, change.revision);
                    }
                }
            }
        }
        placement.advance(change.revision);
        let applied = placement.applied();
        drop(placement);
        self.inner.applied.send_replace(applied);
    }

    pub(super) fn on_workers(
        &self,
        change: Result<Arc<Change<Worker>>, broadcast::error::RecvError>,
        loaded_at: i64,
    ) {
        let Some(change) = self.received(change, "workers") else {
            return;
        };
        if change.revision <= loaded_at && !change.relisted {
            return;
        }
        let mut placement = self.placement();
        for event in &change.events {
            match event {
                Event::Added { new, .. } | Event::Modified { new, .. } => {
                    let w = &new.value;
                    placement.upsert_worker(&w.id, &w.address, w.capacity());
                }
                Event::Deleted { old, .. } => {
                    placement.remove_worker(&old.value.id, change.revision);
                }
            }
        }
        if placement.pending() > 0 {
            self.inner.kick.notify_one();
        }
    }

    /// Follows task statuses: a task that completed at its current assignment frees room on
    /// its worker; one started again takes it back.
    pub(super) fn on_statuses(
        &self,
        change: Result<Arc<Change<TaskStatus>>, broadcast::error::RecvError>,
    ) {
        let Some(change) = self.received(change, "statuses") else {
            return;
        };
        let mut freed = false;
        let mut placement = self.placement();
        for event in &change.events {
            let name = event.name();
            let Some(entry) = self.inner.resources.get(name) else {
                continue;
            };
            let done = self.completed(name, entry.value.assigned_worker(), entry.mod_revision);
            placement.set_done(name, done);
            freed |= done;
        }
        if freed && placement.pending() > 0 {
            self.inner.kick.notify_one();
        }
    }

    /// Rebuilds the placement from the caches after a subscription lagged.
    fn resync(&self) {
        let workers = self.inner.workers.snapshot();
        let resources = self.inner.resources.snapshot();
        let mut placement = Placement::new();
        for entry in workers.objects.values() {
            let w = &entry.value;
            placement.upsert_worker(&w.id, &w.address, w.capacity());
        }
        for (name, entry) in &resources.objects {
            let worker = entry.value.assigned_worker();
            placement.set_resource(name, Some(worker), resources.revision);
            placement.set_done(name, self.completed(name, worker, entry.mod_revision));
        }
        placement.advance(resources.revision);
        *self.placement() = placement;
        self.inner.applied.send_replace(resources.revision);
    }

    /// Writes assignments for pending resources, a batch at a time, until none can be made.
    pub(super) async fn reconcile(&self, fence: &Fence) -> Result<(), WriteError> {
        loop {
            let workers_revision = self.inner.workers.revision();
            let moves = self.placement().plan(BATCH, workers_revision);
            if moves.is_empty() {
                return Ok(());
            }
            let lookup = |name: &str| {
                let entry = self.inner.resources.get(name)?;
                Some(((*entry.value).clone(), entry.mod_revision))
            };
            match self.write_moves(fence, &moves, &lookup).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(WriteError::Deposed) => return Err(self.deposed(fence)),
                Err(e) => {
                    warn!(error = %e, "reassignment failed; will retry");
                    return Ok(());
                }
            }
        }
    }

    /// Writes one batch of moves. Returns whether it applied; on any failure the moves are
    /// released and their resources are pending again.
    pub(super) async fn write_moves(
        &self,
        fence: &Fence,
        moves: &[Move],
        lookup: &(dyn Fn(&str) -> Option<(Resource, i64)> + Sync),
    ) -> Result<bool, WriteError> {
        let mut compares = Vec::with_capacity(moves.len());
        let mut ops = Vec::with_capacity(moves.len());
        let mut writing = Vec::with_capacity(moves.len());
        let mut orphans = 0u64;
        for m in moves {
            let Some((mut moved, mod_revision)) = lookup(&m.name) else {
                self.placement().unplan(m);
                continue;
            };
            if !moved.assigned_node.is_empty() {
                orphans += 1;
            }
            moved.assigned_node = Resource::assigned_node_value(&m.to.worker, &m.to.address);
            let key = self.inner.config.keys.resource_key(&m.name);
            compares.push(Compare::mod_revision(
                key.as_bytes(),
                CompareOp::Equal,
                mod_revision,
            ));
            ops.push(TxnOp::put(
                key.as_bytes(),
                serde_json::to_vec(&moved)?,
                None,
            ));
            writing.push(m);
        }
        if writing.is_empty() {
            return Ok(false);
        }
        let result = self.txn(fence, compares, ops).await;
        let mut placement = self.placement();
        match result {
            Ok(w) if w.applied => {
                for m in &writing {
                    placement.confirm(m.to.token, w.revision);
                }
                info!(
                    count = writing.len(),
                    moved = orphans,
                    revision = w.revision,
                    "resources assigned"
                );
                self.inner.metrics.assignments.inc_by(writing.len() as u64);
                self.inner.metrics.reassignments.inc_by(orphans);
                Ok(true)
            }
            other => {
                for m in &writing {
                    placement.unplan(m);
                }
                other.map(|_| false)
            }
        }
    }
}
