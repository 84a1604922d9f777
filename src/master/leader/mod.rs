//! The leader's duties. This file holds the term loop and what the duties share; each duty has a
//! file: `takeover.rs`, `requests.rs` (create, delete, update), `reassign.rs`, `scheduling.rs`
//! (the policy's step over [`crate::master::policy`]), `operators.rs` (cordon, drain, thaw,
//! preview), `recurring.rs` (schedules' runs), `runs.rs` (how runs end), `history.rs`,
//! `assignment_keys.rs`, and [`writes`] (the fenced txn).
//!
//! A term starts with the take-over: workers from etcd and resources from this master's cache,
//! each at one revision, loads rebuilt, seeds added, orphans assigned; only then is it ready
//! (writes accepted, `/readyz` 200). During the term the [`Placement`] follows the caches, and
//! resources that need a worker are handed out in fenced txns of at most [`BATCH`] operations.

mod assignment_keys;
pub mod audit;
pub mod budgets;
pub mod checkpoints;
pub mod commit;
mod history;
mod operators;
pub mod politeness;
mod reassign;
mod recurring;
mod requests;
mod runs;
mod scheduling;
mod takeover;
mod trail;
pub use trail::Retention;
pub mod writes;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Client, Compare, TxnOp};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::etcd::cache::{Snapshot, Store};
use crate::keys::KeyLayout;
use crate::master::leadership::{Fence, Leadership, Term};
use crate::master::placement::{Placement, WantsMemo};
use crate::metrics::Metrics;
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::snowflake::Generator;
use crate::model::status::{TaskState, TaskStatus};
pub use operators::Preview;
pub use requests::Init;
pub use writes::WriteError;

/// Most resources moved by one reassignment txn. etcd allows 128 operations per txn and gives
/// a nested txn what its parent leaves: the fence's txn holds one, the nested one 127.
pub const BATCH: usize = 127;
/// Most resources planned for one write of moves: each move writes the resource, its history
/// and the new worker's assignment key (three ops), and deletes the old worker's key when it
/// had one (four); what does not fit one txn goes in the next.
pub const MOVES: usize = BATCH / 3;

/// What the leader needs.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Key layout.
    pub keys: KeyLayout,
    /// Seed tasks, created when missing.
    pub seeds: Vec<crate::config::SeedTask>,
    /// Deadline for one etcd request.
    pub request_timeout: Duration,
    /// The scheduling policy's settings.
    pub scheduling: crate::config::SchedulingConfig,
}

struct Inner {
    metrics: Arc<Metrics>,
    client: Client,
    /// Sends every leader write, batching those that queue.
    commits: commit::Committer,
    config: LeaderConfig,
    leadership: Leadership,
    resources: Store<Resource>,
    workers: Store<Worker>,
    /// Task statuses: a task that completed stops counting against its worker's capacity.
    statuses: Store<TaskStatus>,
    placement: Mutex<Placement>,
    /// The scheduling's scheduling state; lock after the placement when both are needed.
    scheduling: Mutex<scheduling::Scheduling>,
    ids: Generator,
    /// Revision of resources the placement has applied.
    applied: watch::Sender<i64>,
    /// Wakes the reconciler.
    kick: Notify,
    /// Which worker's assignment key holds each resource.
    ledger: Mutex<assignment_keys::Ledger>,
    /// Scheduled resources by when they are next due.
    due: Mutex<recurring::Due>,
    /// Runs that ended and are not recorded yet.
    ends: Mutex<runs::Ends>,
    /// Audit entries this process has keyed, so that two with the same request id in the same
    /// millisecond get different keys.
    audit_seq: std::sync::atomic::AtomicU64,
}

/// The leader's duties. Cheap to clone; write methods refuse unless this master leads.
#[derive(Clone)]
pub struct Leader {
    inner: Arc<Inner>,
}

/// The caches the leader follows.
#[derive(Clone)]
pub struct LeaderCaches {
    /// Resources.
    pub resources: Store<Resource>,
    /// Worker registrations.
    pub workers: Store<Worker>,
    /// Task statuses: a task that completed stops counting against its worker's capacity.
    pub statuses: Store<TaskStatus>,
}

/// A resource as the leader wrote it (created or updated).
#[derive(Debug, Clone)]
pub struct Written {
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
        caches: LeaderCaches,
        ids: Generator,
        metrics: Arc<Metrics>,
    ) -> Self {
        let LeaderCaches {
            resources,
            workers,
            statuses,
        } = caches;
        let scheduling = scheduling::Scheduling::new(
            config.scheduling.reassign_rate,
            crate::model::status::now_ms(),
        );
        let commits =
            commit::Committer::start(client.clone(), config.request_timeout, metrics.clone());
        let placement = Mutex::new(Placement::new(resources.clone()));
        Self {
            inner: Arc::new(Inner {
                metrics,
                client,
                commits,
                config,
                leadership,
                resources,
                workers,
                statuses,
                placement,
                scheduling: Mutex::new(scheduling),
                ids,
                applied: watch::channel(0).0,
                kick: Notify::new(),
                ledger: Mutex::default(),
                due: Mutex::default(),
                ends: Mutex::default(),
                audit_seq: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Runs one choice of workers on the placement, counting its time and the workers it chose
    /// (`crawler_placement_seconds_total`, `crawler_placements_total`).
    fn choose<T>(
        &self,
        choice: impl FnOnce(&mut Placement) -> T,
        chosen: impl Fn(&T) -> usize,
    ) -> T {
        let started = std::time::Instant::now();
        let answer = choice(&mut self.placement());
        let metrics = &self.inner.metrics;
        metrics
            .placement_seconds
            .inc_by(started.elapsed().as_secs_f64());
        metrics.placements.inc_by(chosen(&answer) as u64);
        answer
    }

    fn placement(&self) -> MutexGuard<'_, Placement> {
        // Placement updates are single calls that leave it consistent; a panic elsewhere
        // cannot leave it half-updated.
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn scheduling(&self) -> MutexGuard<'_, scheduling::Scheduling> {
        self.inner
            .scheduling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The leadership this leader acts for.
    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    /// Puts every resource of a cache snapshot in `placement`, with whether its task completed
    /// at its assignment; each worker's load is handed to the assigner once, at the end.
    fn place(&self, placement: &mut Placement, resources: &Snapshot<Resource>) {
        let mut memo = WantsMemo::default();
        placement.begin_fill();
        for (name, entry) in &resources.objects {
            let worker = entry.value.assigned_worker();
            placement.set_resource(
                name,
                None,
                Some(worker),
                memo.of(&entry.value),
                resources.revision,
            );
            let epoch = entry.value.epoch(entry.mod_revision);
            placement.set_done(name, self.completed_at(name, worker, epoch));
        }
        placement.end_fill();
        placement.advance(resources.revision);
    }

    /// `worker` when resource `name` (at `epoch`, assigned to `worker`) has a status saying its
    /// task completed there at exactly this epoch; `None` otherwise.
    fn completed_at<'a>(&self, name: &str, worker: Option<&'a str>, epoch: i64) -> Option<&'a str> {
        let worker = worker?;
        let status = self.inner.statuses.get(name)?;
        let s = &status.value;
        (s.state == TaskState::Completed && s.epoch == epoch && s.worker == worker)
            .then_some(worker)
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

    /// A fenced write; a refused fence ends the term.
    async fn write(
        &self,
        fence: &Fence,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<writes::Written, WriteError> {
        self.commit(fence, commit::Write::new(compares, ops)).await
    }

    /// Commits `write`, alone or with others that queue; a refused fence ends the term.
    async fn commit(
        &self,
        fence: &Fence,
        write: commit::Write,
    ) -> Result<writes::Written, WriteError> {
        match self.inner.commits.commit(fence, write).await {
            Err(WriteError::Deposed) => Err(self.deposed(fence)),
            other => other,
        }
    }

    /// Independent writes in one fenced txn: each applies if its own compares hold, whatever
    /// becomes of the others. Returns whether each applied (all false when the txn failed).
    async fn write_each(
        &self,
        fence: &Fence,
        items: Vec<(Vec<Compare>, Vec<TxnOp>)>,
    ) -> Result<Vec<bool>, WriteError> {
        let n = items.len();
        let written = self.commit(fence, commit::Write::each(items)).await?;
        let mut applied: Vec<bool> = written
            .responses
            .into_iter()
            .map(|r| matches!(r, etcd_client::TxnOpResponse::Txn(t) if t.succeeded()))
            .collect();
        applied.resize(n, false);
        Ok(applied)
    }

    /// One fenced write, committed alone or with others that queue.
    async fn txn(
        &self,
        fence: &Fence,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<writes::Written, WriteError> {
        let write = commit::Write::new(compares, ops);
        self.inner.commits.commit(fence, write).await
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
        let config = &self.inner.config;
        Ok(crate::etcd::client::current_revision(
            &self.inner.client,
            &config.keys.election,
            config.request_timeout,
        )
        .await?)
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
        let mut status_changes = self.inner.statuses.subscribe();
        let loaded = self.take_over(fence, &mut resource_changes).await?;
        let revision = loaded.workers;
        if self.inner.leadership.ready(fence) {
            info!(
                revision,
                takeover_ms = started.elapsed().as_millis() as u64,
                pending = self.placement().pending(),
                "leader ready: accepting writes"
            );
        }
        // The assignment keys are compared with the cache while the term serves; repairs wait
        // for it.
        let verification = self.verify_assignments();
        tokio::pin!(verification);
        let mut verified = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            // Woken when the next schedule or rebalancing round is due, not a tick later.
            let due_in = self.due().next().map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(
                    (at - crate::model::status::now_ms()).clamp(0, 3_600_000) as u64
                )
            });
            let due_in = self
                .next_round_in()
                .map_or(due_in, |round| round.min(due_in));
            tokio::select! {
                () = &mut verification, if !verified => verified = true,
                Some(change) = resource_changes.recv() => {
                    self.follow_schedules(&change);
                    self.on_resources(&change, loaded.resources);
                }
                Some(change) = worker_changes.recv() => self.on_workers(&change, loaded.workers),
                Some(change) = status_changes.recv() => {
                    self.note_ends(&change);
                    self.follow_reports(&change);
                    self.on_statuses(&change);
                }
                () = self.inner.kick.notified() => {}
                _ = tick.tick() => {}
                () = tokio::time::sleep(due_in) => {}
            }
            if self.take_reverify() {
                verification.set(self.verify_assignments());
                verified = false;
            }
            self.step(fence).await?;
        }
    }
}
