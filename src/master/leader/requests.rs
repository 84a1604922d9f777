//! The writes clients ask for: create, delete and update of one resource, each one fenced txn
//! that also writes the resource's history when its assignment changes (created, pinned,
//! restarted) or a new run of its task starts, and deletes it (and the task's checkpoint)
//! with the resource.
//!
//! A change the task does not see (its schedule) keeps the run going: the resource keeps its
//! epoch ([`EPOCH_FIELD`]), so its worker does not start the task again.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, TxnOp};
use tracing::debug;

use super::history::Stored;
use super::{Leader, WriteError, Written, assignment_keys};
use crate::etcd::cache::Object;
use crate::etcd::timed;
use crate::master::leadership::Fence;
use crate::master::placement::{Placement, Reservation, Wants};
use crate::model::constraints::Constraints;
use crate::model::history::{History, Run, Start};
use crate::model::recurrence::{Recurrence, Rule};
use crate::model::resource::{EPOCH_FIELD, LABELS_FIELD, RESTARTED_FIELD, Resource};
use crate::model::schedule::{Assignment, Reason};
use crate::model::status::now_ms;

/// What a client gives a new resource besides its name (already checked).
#[derive(Debug, Clone, Default)]
pub struct Init {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its schedule, when it recurs.
    pub schedule: Option<Rule>,
    /// Where it may run.
    pub constraints: Constraints,
}

impl Leader {
    /// Creates resource `name` (already validated), assigned to the least-loaded worker with
    /// room, or unassigned when there is none. Fails with `Exists` when the name is taken.
    pub async fn create(&self, name: &str, init: &Init) -> Result<Written, WriteError> {
        let fence = self.fence()?;
        let created = self.create_fenced(&fence, name, init).await?;
        self.wait_applied(created.revision).await;
        Ok(created)
    }

    pub(super) async fn create_fenced(
        &self,
        fence: &Fence,
        name: &str,
        init: &Init,
    ) -> Result<Written, WriteError> {
        let wants = Wants::new(init.constraints.clone(), &init.labels);
        let reservation = self.choose(|p| p.reserve(wants.as_ref()), |r| usize::from(r.is_some()));
        let release = |p: &mut Placement| {
            if let Some(r) = &reservation {
                p.cancel(r.token);
            }
        };
        let resource = match self.new_resource(name, reservation.as_ref(), init) {
            Ok(r) => r,
            Err(e) => {
                release(&mut self.placement());
                return Err(e);
            }
        };
        let key = self.inner.config.keys.resource_key(name);
        let value = serde_json::to_vec(&resource)?;
        let entry = Assignment {
            reason: Reason::Created,
            at_ms: now_ms(),
            from: None,
            to: reservation.as_ref().map(|r| r.worker.clone()),
            actor: super::audit::actor(),
        };
        // A new resource starts a new history, whatever an earlier one of that name left.
        let mut history = History::default();
        self.record_assignment(&mut history, name, entry);
        let history = self.history_put(name, &history)?;
        let before = self.key_holder(name);
        let mut ops = assignment_keys::ops(
            &self.inner.config.keys,
            name,
            before.as_deref(),
            &resource,
            &value,
        );
        ops.push(TxnOp::put(key.as_bytes(), value, None));
        ops.push(history);
        let result = self
            .txn(
                fence,
                vec![Compare::create_revision(
                    key.as_bytes(),
                    CompareOp::Equal,
                    0,
                )],
                ops,
            )
            .await;
        match result {
            Ok(w) if w.applied => {
                self.assigned(name, resource.assigned_worker());
                if let Some(r) = &reservation {
                    self.placement().confirm(r.token, w.revision);
                    self.inner.metrics.assignments.inc();
                }
                self.inner.metrics.moved(Reason::Created.as_str(), 1);
                debug!(%name, id = %resource.id, node = %resource.assigned_node, revision = w.revision, "created");
                Ok(Written {
                    resource,
                    revision: w.revision,
                })
            }
            Ok(_) => {
                release(&mut self.placement());
                Err(WriteError::Exists)
            }
            Err(WriteError::Deposed) => {
                release(&mut self.placement());
                Err(self.deposed(fence))
            }
            Err(e) => {
                release(&mut self.placement());
                Err(e)
            }
        }
    }

    fn new_resource(
        &self,
        name: &str,
        reservation: Option<&Reservation>,
        init: &Init,
    ) -> Result<Resource, WriteError> {
        let id = self.inner.ids.next_id()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut resource = Resource {
            id: id.into(),
            name: name.into(),
            assigned_node: reservation.map_or_else(Default::default, |r| {
                Resource::assigned_node_value(&r.worker, &r.address)
            }),
            creation_time: now,
            extra: Default::default(),
        };
        resource
            .extra
            .set_schedule(Recurrence::set(None, init.schedule.clone(), now_ms()).map(Box::new));
        if !init.labels.is_empty() {
            resource
                .extra
                .insert(LABELS_FIELD.to_owned(), serde_json::to_value(&init.labels)?);
        }
        resource.set_constraints(&init.constraints);
        Ok(resource)
    }

    /// Deletes resource `name`, only if its mod revision is `if_match` when given. Returns the
    /// revision of the delete. The resource is read first, so that its worker's assignment key
    /// goes in the same txn (compared on the version read).
    pub async fn delete(&self, name: &str, if_match: Option<i64>) -> Result<i64, WriteError> {
        let fence = self.fence()?;
        let keys = &self.inner.config.keys;
        let key = keys.resource_key(name);
        for _ in 0..3 {
            let (stored, version) = self.read_for_write(&key, if_match).await?;
            let worker = Resource::decode(name, &stored)
                .ok()
                .and_then(|r| r.assigned_worker().map(str::to_owned));
            let mut ops = vec![
                TxnOp::delete(key.as_bytes(), None),
                TxnOp::delete(keys.history_key(name).as_bytes(), None),
                TxnOp::delete(keys.checkpoint_key(name).as_bytes(), None),
            ];
            let holder = self.key_holder(name);
            for w in worker
                .iter()
                .chain(holder.iter().filter(|h| Some(*h) != worker.as_ref()))
            {
                ops.push(TxnOp::delete(keys.assignment_key(w, name), None));
            }
            let written = self.write_at(&fence, &key, version, ops).await?;
            if written.applied {
                self.assigned(name, None);
                self.wait_applied(written.revision).await;
                return Ok(written.revision);
            }
            if if_match.is_some() {
                return Err(WriteError::PreconditionFailed);
            }
        }
        Err(WriteError::Contended)
    }

    /// Changes what users may change of resource `name` (its worker, its labels), only if its
    /// mod revision is `if_match` when given. Returns the new value and the write's revision.
    pub async fn update(
        &self,
        name: &str,
        change: impl Fn(&mut Resource) -> Result<(), WriteError>,
        pin: Option<&str>,
        if_match: Option<i64>,
    ) -> Result<Written, WriteError> {
        let fence = self.fence()?;
        let pinned = match pin {
            Some(id) => {
                let worker = self
                    .inner
                    .workers
                    .with(|objects, _| objects.values().find(|e| e.value.id == id).cloned())
                    .ok_or_else(|| WriteError::UnknownWorker(id.to_owned()))?;
                Some(Resource::assigned_node_value(
                    &worker.value.id,
                    &worker.value.address,
                ))
            }
            None => None,
        };
        let key = self.inner.config.keys.resource_key(name);
        // Read-modify-write, each attempt fenced and compared on the version read.
        for _ in 0..3 {
            let (stored, version) = self.read_for_write(&key, if_match).await?;
            let mut resource = Resource::decode(name, &stored)
                .map_err(|e| WriteError::Etcd(crate::etcd::EtcdError::Malformed(e.to_string())))?;
            let before = resource.clone();
            change(&mut resource)?;
            if let Some(node) = &pinned {
                resource.assigned_node = node.clone();
            }
            let held = self.refit(&before, &mut resource, pin)?;
            let reason = if held.moved {
                Some(Reason::Constrained)
            } else if resource.assigned_worker() != before.assigned_worker() {
                Some(Reason::Pinned)
            } else if resource.extra.get(RESTARTED_FIELD) != before.extra.get(RESTARTED_FIELD) {
                Some(Reason::Restarted)
            } else {
                None
            };
            // The task sees everything but its schedule: a change of that alone keeps the run.
            let seen = |r: &Resource| {
                let mut r = r.clone();
                r.extra.set_schedule(None);
                r.extra.remove(EPOCH_FIELD);
                r
            };
            let new_run = reason.is_some() || seen(&resource) != seen(&before);
            if reason == Some(Reason::Restarted)
                && let Some(s) = resource.extra.schedule_mut()
            {
                s.progress.run_slot_ms = None;
            }
            if new_run {
                resource.extra.remove(EPOCH_FIELD);
            } else {
                let epoch = before.epoch(version);
                resource.extra.insert(EPOCH_FIELD.to_owned(), epoch.into());
            }
            let value = serde_json::to_vec(&resource)?;
            let holder = self.key_holder(name);
            let mut ops = assignment_keys::ops(
                &self.inner.config.keys,
                name,
                holder.as_deref().or(before.assigned_worker()),
                &resource,
                &value,
            );
            ops.push(TxnOp::put(key.as_bytes(), value, None));
            let mut compares = vec![Compare::mod_revision(
                key.as_bytes(),
                CompareOp::Equal,
                version,
            )];
            if new_run {
                let mut stored = self.histories(&[name]).await?;
                let Stored {
                    mut history,
                    version: seen,
                } = stored.remove(name).unwrap_or_default();
                let to = resource.assigned_worker().map(str::to_owned);
                match reason {
                    Some(reason) => {
                        let entry = Assignment {
                            reason,
                            at_ms: now_ms(),
                            from: before.assigned_worker().map(str::to_owned),
                            to,
                            actor: super::audit::actor(),
                        };
                        self.record_assignment(&mut history, name, entry);
                    }
                    None => {
                        let run = Run::new(Start::Updated, to.as_deref(), now_ms());
                        self.record_run(&mut history, name, run);
                    }
                }
                ops.push(self.history_put(name, &history)?);
                compares.push(self.history_unchanged(name, seen));
            }
            let written = self.write(&fence, compares, ops).await?;
            if written.applied {
                held.confirm(written.revision);
                self.assigned(name, resource.assigned_worker());
                if let Some(reason) = reason {
                    self.inner.metrics.moved(reason.as_str(), 1);
                }
                self.wait_applied(written.revision).await;
                return Ok(Written {
                    resource,
                    revision: written.revision,
                });
            }
            // The next read tells a changed resource (412 under If-Match) from a history that
            // changed alone.
        }
        Err(WriteError::Contended)
    }

    /// Keeps `after` (a change of `before`) on a worker its constraints admit: a pin to a
    /// worker that does not fit is refused, and a resource whose changed constraints its
    /// worker no longer meets goes to one that does, or waits for one. The answer says
    /// whether it moved so, and holds its new worker's reservation until the write.
    fn refit(
        &self,
        before: &Resource,
        after: &mut Resource,
        pin: Option<&str>,
    ) -> Result<Refit<'_>, WriteError> {
        let stays = Refit {
            leader: self,
            moved: false,
            reservation: None,
        };
        let wants = Wants::of(after);
        let mut placement = self.placement();
        if let Some(id) = pin {
            if !placement.fits(id, wants.as_deref()) {
                return Err(WriteError::Unfit(id.to_owned()));
            }
            return Ok(stays);
        }
        let changed = Wants::of(before) != wants;
        let Some(worker) = after.assigned_worker() else {
            return Ok(stays);
        };
        if !changed || placement.fits(worker, wants.as_deref()) {
            return Ok(stays);
        }
        let reservation = placement.reserve(wants.as_ref());
        drop(placement);
        after.assigned_node = reservation.as_ref().map_or_else(Default::default, |r| {
            Resource::assigned_node_value(&r.worker, &r.address)
        });
        Ok(Refit {
            leader: self,
            moved: true,
            reservation,
        })
    }

    /// Reads the stored value of `key` and its version for a read-modify-write, or the error a
    /// missing key or a stale `if_match` means.
    async fn read_for_write(
        &self,
        key: &str,
        if_match: Option<i64>,
    ) -> Result<(Vec<u8>, i64), WriteError> {
        let mut kv = self.inner.client.kv_client();
        let current = timed(self.inner.config.request_timeout, kv.get(key, None)).await?;
        let Some(stored) = current.kvs().first() else {
            return Err(if if_match.is_some() {
                WriteError::PreconditionFailed
            } else {
                WriteError::NotFound
            });
        };
        let version = stored.mod_revision();
        if if_match.is_some_and(|wanted| wanted != version) {
            return Err(WriteError::PreconditionFailed);
        }
        Ok((stored.value().to_vec(), version))
    }

    /// Writes `ops`, fenced, only if `key` is still at `version`.
    async fn write_at(
        &self,
        fence: &Fence,
        key: &str,
        version: i64,
        ops: Vec<TxnOp>,
    ) -> Result<super::writes::Written, WriteError> {
        let compare = Compare::mod_revision(key.as_bytes(), CompareOp::Equal, version);
        self.write(fence, vec![compare], ops).await
    }
}

/// What [`Leader::refit`] decided: whether the resource moves, and its new worker's
/// reservation, released when this is dropped unless its write was confirmed (so no error
/// between the choice and the write leaves the worker's load counted twice).
struct Refit<'a> {
    leader: &'a Leader,
    moved: bool,
    reservation: Option<Reservation>,
}

impl Refit<'_> {
    /// The write holding the reservation succeeded at `revision`.
    fn confirm(mut self, revision: i64) {
        if let Some(r) = self.reservation.take() {
            self.leader.placement().confirm(r.token, revision);
        }
    }
}

impl Drop for Refit<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.leader.placement().cancel(r.token);
        }
    }
}
