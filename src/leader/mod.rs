//! The leader's duties: take over, then create, delete and (re)assign resources.
//!
//! Each term starts with the take-over, in order: load all resources and workers at one etcd
//! revision, rebuild each worker's load, add the missing seed tasks, assign every resource that
//! has no live worker, and only then declare the term ready (writes accepted, `/readyz` 200).
//! During the term the [`Placement`] follows both caches, and resources that need a worker are
//! handed out in fenced txns of at most [`BATCH`] operations.
//!
//! Rebalancing policy: a worker that joins receives pending resources (unassigned ones, and
//! those of workers that left) and every new resource while it is the least loaded; resources
//! already running on a live worker are never moved, so a join causes no churn.

pub mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, GetOptions, TxnOp, TxnOpResponse};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cache::watcher::name_of;
use crate::cache::{Change, Event, Object, Store};
use crate::etcd::{list_prefix, timed};
use crate::keys::KeyLayout;
use crate::leadership::{Fence, Leadership, Term};
use crate::metrics::Metrics;
use crate::placement::{Move, Placement};
use crate::registry::Worker;
use crate::resource::Resource;
use crate::snowflake::Generator;
pub use writes::WriteError;

/// Most resources moved by one reassignment txn. etcd allows 128 operations per txn and gives
/// a nested txn what its parent leaves: the fence's txn holds one, the nested one 127.
pub const BATCH: usize = 127;

/// What the leader needs.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Key layout.
    pub keys: KeyLayout,
    /// Seed task names, created when missing.
    pub seeds: Vec<String>,
    /// Deadline for one etcd request.
    pub request_timeout: Duration,
}

struct Inner {
    metrics: Arc<Metrics>,
    client: Client,
    config: LeaderConfig,
    leadership: Leadership,
    resources: Store<Resource>,
    workers: Store<Worker>,
    placement: Mutex<Placement>,
    ids: Generator,
    /// Revision of resources the placement has applied.
    applied: watch::Sender<i64>,
    /// Wakes the reconciler.
    kick: Notify,
}

/// The leader's duties. Cheap to clone; write methods refuse unless this master leads.
#[derive(Clone)]
pub struct Leader {
    inner: Arc<Inner>,
}

/// A resource the leader created.
#[derive(Debug, Clone)]
pub struct Created {
    /// The stored value.
    pub resource: Resource,
    /// Revision of the write.
    pub revision: i64,
}

impl Leader {
    /// Duties over the given caches; they start when [`Leader::run`] sees a won term.
    pub fn new(
        client: Client,
        config: LeaderConfig,
        leadership: Leadership,
        resources: Store<Resource>,
        workers: Store<Worker>,
        ids: Generator,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                metrics,
                client,
                config,
                leadership,
                resources,
                workers,
                placement: Mutex::new(Placement::new()),
                ids,
                applied: watch::channel(0).0,
                kick: Notify::new(),
            }),
        }
    }

    fn placement(&self) -> MutexGuard<'_, Placement> {
        // Placement updates are single calls that leave it consistent; a panic elsewhere
        // cannot leave it half-updated.
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The leadership this leader acts for.
    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    fn fence(&self) -> Result<Fence, WriteError> {
        match self.inner.leadership.term() {
            Term::Ready(f) => Ok(f),
            Term::Won(_) => Err(WriteError::TakingOver),
            Term::None => Err(WriteError::NotLeader),
        }
    }

    fn deposed(&self, fence: &Fence) -> WriteError {
        if self.inner.leadership.step_down(fence) {
            warn!(key = %fence.key, "a fenced write was refused: stepping down");
        }
        WriteError::Deposed
    }

    /// Creates resource `name` (already validated), assigned to the least-loaded worker with
    /// room, or unassigned when there is none. Fails with `Exists` when the name is taken.
    pub async fn create(&self, name: &str) -> Result<Created, WriteError> {
        let fence = self.fence()?;
        let created = self.create_fenced(&fence, name).await?;
        self.wait_applied(created.revision).await;
        Ok(created)
    }

    async fn create_fenced(&self, fence: &Fence, name: &str) -> Result<Created, WriteError> {
        let reservation = self.placement().reserve();
        let release = |p: &mut Placement| {
            if let Some(r) = &reservation {
                p.cancel(r.token);
            }
        };
        let resource = match self.new_resource(name, reservation.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                release(&mut self.placement());
                return Err(e);
            }
        };
        let key = self.inner.config.keys.resource_key(name);
        let value = serde_json::to_vec(&resource)?;
        let result = self
            .txn(
                fence,
                vec![Compare::create_revision(
                    key.as_bytes(),
                    CompareOp::Equal,
                    0,
                )],
                vec![TxnOp::put(key.as_bytes(), value, None)],
            )
            .await;
        match result {
            Ok(w) if w.applied => {
                if let Some(r) = &reservation {
                    self.placement().confirm(r.token, w.revision);
                    self.inner.metrics.assignments.inc();
                }
                debug!(%name, id = %resource.id, node = %resource.assigned_node, revision = w.revision, "created");
                Ok(Created {
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
        reservation: Option<&crate::placement::Reservation>,
    ) -> Result<Resource, WriteError> {
        let id = self.inner.ids.next_id()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Ok(Resource {
            id: id.to_string(),
            name: name.to_owned(),
            assigned_node: reservation.map_or_else(String::new, |r| {
                Resource::assigned_node_value(&r.worker, &r.address)
            }),
            creation_time: now,
            extra: Default::default(),
        })
    }

    /// Deletes resource `name`, only if its mod revision is `if_match` when given. Returns the
    /// revision of the delete.
    pub async fn delete(&self, name: &str, if_match: Option<i64>) -> Result<i64, WriteError> {
        let fence = self.fence()?;
        let key = self.inner.config.keys.resource_key(name);
        let compares = if_match
            .map(|rev| Compare::mod_revision(key.as_bytes(), CompareOp::Equal, rev))
            .into_iter()
            .collect();
        let written = self
            .write(&fence, compares, vec![TxnOp::delete(key.as_bytes(), None)])
            .await?;
        if !written.applied {
            return Err(WriteError::PreconditionFailed);
        }
        let deleted = written.responses.iter().any(|r| match r {
            TxnOpResponse::Delete(d) => d.deleted() > 0,
            _ => false,
        });
        if !deleted {
            return Err(WriteError::NotFound);
        }
        self.wait_applied(written.revision).await;
        Ok(written.revision)
    }

    /// Changes what users may change of resource `name` (its worker, its labels), only if its
    /// mod revision is `if_match` when given. Returns the new value and the write's revision.
    pub async fn update(
        &self,
        name: &str,
        change: impl Fn(&mut Resource) -> Result<(), WriteError>,
        pin: Option<&str>,
        if_match: Option<i64>,
    ) -> Result<Created, WriteError> {
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
            let mut kv = self.inner.client.kv_client();
            let current = timed(
                self.inner.config.request_timeout,
                kv.get(key.as_bytes(), None),
            )
            .await?;
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
            let mut resource = Resource::decode(name, stored.value())
                .map_err(|e| WriteError::Etcd(crate::etcd::EtcdError::Malformed(e.to_string())))?;
            change(&mut resource)?;
            if let Some(node) = &pinned {
                resource.assigned_node = node.clone();
            }
            let written = self
                .write(
                    &fence,
                    vec![Compare::mod_revision(
                        key.as_bytes(),
                        CompareOp::Equal,
                        version,
                    )],
                    vec![TxnOp::put(
                        key.as_bytes(),
                        serde_json::to_vec(&resource)?,
                        None,
                    )],
                )
                .await?;
            if written.applied {
                self.wait_applied(written.revision).await;
                return Ok(Created {
                    resource,
                    revision: written.revision,
                });
            }
            if if_match.is_some() {
                return Err(WriteError::PreconditionFailed);
            }
        }
        Err(WriteError::Contended)
    }

    /// A fenced write; a refused fence ends the term.
    async fn write(
        &self,
        fence: &Fence,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<writes::Written, WriteError> {
        match self.txn(fence, compares, ops).await {
            Err(WriteError::Deposed) => Err(self.deposed(fence)),
            other => other,
        }
    }

    /// One fenced txn, timed and counted.
    async fn txn(
        &self,
        fence: &Fence,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<writes::Written, WriteError> {
        let started = std::time::Instant::now();
        let result = writes::fenced(
            &self.inner.client,
            fence,
            self.inner.config.request_timeout,
            compares,
            ops,
        )
        .await;
        let metrics = &self.inner.metrics;
        metrics
            .etcd_latency
            .observe(started.elapsed().as_secs_f64());
        if matches!(result, Err(WriteError::Etcd(_))) {
            metrics.etcd_errors.inc();
        }
        result
    }

    /// Waits (bounded) until the placement, and so the caches, reflect `revision`: a client
    /// that reads from this master after a write sees it.
    async fn wait_applied(&self, revision: i64) {
        let mut applied = self.inner.applied.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|r| *r >= revision))
            .await;
    }

    /// etcd's current revision (a linearizable read).
    pub async fn current_revision(&self) -> Result<i64, WriteError> {
        let mut kv = self.inner.client.kv_client();
        let resp = timed(
            self.inner.config.request_timeout,
            kv.get(
                self.inner.config.keys.election.as_bytes(),
                Some(GetOptions::new().with_count_only()),
            ),
        )
        .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Load (resources held and being written) of a present worker, as the leader counts it.
    pub fn load(&self, worker: &str) -> Option<u32> {
        self.placement().load(worker)
    }

    /// Runs the duties of every term this master wins, until `cancel` fires. A term's duties
    /// are dropped the moment the term ends; a write in flight then may or may not apply, and
    /// the next term's take-over reads whatever it left.
    pub async fn run(self, cancel: CancellationToken) {
        let mut terms = self.inner.leadership.subscribe();
        loop {
            let term = terms.borrow_and_update().clone();
            if let Term::Won(fence) = term {
                self.inner.metrics.leader_changes.inc();
                let mut ending = terms.clone();
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = ending.wait_for(|t| t.fence() != Some(&fence)) => {}
                    result = self.serve_term(&fence) => if let Err(error) = result {
                        warn!(%error, "leader term failed; stepping down");
                        self.inner.leadership.step_down(&fence);
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = terms.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn serve_term(&self, fence: &Fence) -> Result<(), WriteError> {
        let started = std::time::Instant::now();
        // Subscribe before loading, so nothing after the load is missed.
        let mut resource_changes = self.inner.resources.subscribe();
        let mut worker_changes = self.inner.workers.subscribe();
        let revision = self.take_over(fence).await?;
        if self.inner.leadership.ready(fence) {
            info!(
                revision,
                takeover_ms = started.elapsed().as_millis() as u64,
                pending = self.placement().pending(),
                "leader ready: accepting writes"
            );
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                change = resource_changes.recv() => self.on_resources(change, revision),
                change = worker_changes.recv() => self.on_workers(change, revision),
                () = self.inner.kick.notified() => {}
                _ = tick.tick() => {}
            }
            if self.placement().pending() > 0 {
                self.reconcile(fence).await?;
            }
        }
    }

    /// Steps 1 to 4 of a take-over. Returns the revision everything was loaded at.
    async fn take_over(&self, fence: &Fence) -> Result<i64, WriteError> {
        // Both prefixes are read at one revision, page by page straight into the placement;
        // only the resources that need a worker are kept whole.
        let deadline = self.inner.config.request_timeout;
        let keys = &self.inner.config.keys;
        let client = &self.inner.client;
        let revision = self.current_revision().await?;
        let mut placement = Placement::new();
        let mut workers = 0usize;
        list_prefix(client, &keys.worker_prefix, revision, deadline, |kvs| {
            for (w, _) in decode_all::<Worker>(&keys.worker_prefix, &kvs) {
                placement.upsert_worker(&w.id, &w.address, w.capacity());
                workers += 1;
            }
        })
        .await?;
        let seeds: HashSet<&str> = self.inner.config.seeds.iter().map(String::as_str).collect();
        let mut present: HashSet<String> = HashSet::new();
        let mut resources = 0usize;
        let mut loaded: HashMap<String, (Resource, i64)> = HashMap::new();
        list_prefix(client, &keys.resources_prefix, revision, deadline, |kvs| {
            for (r, mod_revision) in decode_all::<Resource>(&keys.resources_prefix, &kvs) {
                resources += 1;
                placement.set_resource(&r.name, Some(r.assigned_worker()), revision);
                if let Ok(id) = r.id.parse::<u64>() {
                    self.inner.ids.advance_past(id);
                }
                if seeds.contains(r.name.as_str()) {
                    present.insert(r.name.clone());
                }
                if placement.needs(&r.name) {
                    loaded.insert(r.name.clone(), (r, mod_revision));
                }
            }
        })
        .await?;
        placement.advance(revision);
        info!(
            revision,
            resources, workers, "leader loaded resources and workers"
        );
        *self.placement() = placement;
        self.inner.applied.send_replace(revision);
        for seed in &self.inner.config.seeds {
            if present.contains(seed) {
                continue;
            }
            match self.create_fenced(fence, seed).await {
                Ok(created) => {
                    info!(name = %seed, node = %created.resource.assigned_node, "seed task added");
                    loaded.insert(seed.clone(), (created.resource, created.revision));
                }
                Err(WriteError::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        let lookup = |name: &str| loaded.get(name).cloned();
        loop {
            let moves = self.placement().plan(BATCH, revision);
            if moves.is_empty() {
                break;
            }
            match self.write_moves(fence, &moves, &lookup).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(WriteError::Deposed) => return Err(self.deposed(fence)),
                Err(e) => return Err(e),
            }
        }
        Ok(revision)
    }

    fn on_resources(
        &self,
        change: Result<Arc<Change<Resource>>, broadcast::error::RecvError>,
        loaded_at: i64,
    ) {
        match change {
            Ok(change) => {
                let mut placement = self.placement();
                if change.revision > loaded_at || change.relisted {
                    for event in &change.events {
                        match event {
                            Event::Added { name, new } | Event::Modified { name, new, .. } => {
                                placement.set_resource(
                                    name,
                                    Some(new.value.assigned_worker()),
                                    change.revision,
                                );
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
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                warn!(
                    skipped,
                    "leader fell behind the resources cache; resynchronising"
                );
                self.resync();
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    fn on_workers(
        &self,
        change: Result<Arc<Change<Worker>>, broadcast::error::RecvError>,
        loaded_at: i64,
    ) {
        match change {
            Ok(change) => {
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
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                warn!(
                    skipped,
                    "leader fell behind the workers cache; resynchronising"
                );
                self.resync();
            }
            Err(broadcast::error::RecvError::Closed) => {}
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
            placement.set_resource(
                name,
                Some(entry.value.assigned_worker()),
                resources.revision,
            );
        }
        placement.advance(resources.revision);
        *self.placement() = placement;
        self.inner.applied.send_replace(resources.revision);
    }

    /// Writes assignments for pending resources, a batch at a time, until none can be made.
    async fn reconcile(&self, fence: &Fence) -> Result<(), WriteError> {
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
    async fn write_moves(
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

/// Decodes every well-formed value, with its mod revision; malformed ones are skipped (the
/// caches count and log them).
fn decode_all<T: Object>(prefix: &str, kvs: &[etcd_client::KeyValue]) -> Vec<(T, i64)> {
    kvs.iter()
        .filter_map(|kv| {
            let name = name_of(prefix, kv.key()).ok()?;
            Some((T::decode(&name, kv.value()).ok()?, kv.mod_revision()))
        })
        .collect()
}
