//! The worker agent (`crawler worker`): registers in go-micro's format, keeps its lease alive,
//! runs the resources assigned to it as supervised processes ([`supervisor`], with commands
//! from [`runner`] and output in a bounded [`tasklog`]), reports their status on its lease
//! ([`reporter`]), and serves `/healthz`, `/tasks` and each task's log ([`serve`]).
//!
//! It runs a task only while it can prove its lease alive for `worker.lease_margin_ms` more:
//! a worker cut off from etcd stops its tasks before its lease can expire and the tasks be
//! given to another worker, and its [`guard`] process stops them even if the worker is frozen.
//! On SIGTERM it stops its tasks, then revokes its lease.

pub mod agent;
pub mod guard;
pub mod policy;
pub mod registration;
pub mod reporter;
pub mod runner;
mod serve;
pub mod summary;
pub mod supervisor;
pub mod tasklog;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::etcd::cache::{self, Store};
use crate::model::politeness::Budget;
use crate::model::registry::{self, CAPACITY_KEY};
use crate::model::resource::Resource;
use guard::link::Guard;
use reporter::Reports;
use runner::TaskSpec;
use supervisor::{Policy, Supervisor};

/// The worker's health route (compose healthchecks and tests use it).
pub const HEALTHZ: &str = "/healthz";

/// Who this worker is.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Worker id; the node id is `<service>-<id>`.
    pub id: u32,
    /// Address to advertise (`host:port`).
    pub address: String,
    /// Most resources this worker takes.
    pub capacity: u32,
    /// Labels published in its registration (checked: no reserved key).
    pub labels: BTreeMap<String, String>,
    /// The `crawler` binary, which runs this worker's guard process (`crawler guard`).
    pub program: std::path::PathBuf,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// etcd could not be set up.
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    /// The registration document could not be encoded.
    #[error("encode registration: {0}")]
    Encode(#[from] serde_json::Error),
    /// Serving HTTP failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    /// The guard process could not be started.
    #[error("cannot start the guard process: {0}")]
    GuardStart(std::io::Error),
    /// The guard process ended, and the tasks with it.
    #[error("the guard process ended: this worker can no longer run tasks")]
    GuardLost,
}

/// True when the assignment key still names this worker: a resource's JSON is copied whole
/// into its worker's key, and a key another worker's id reached would not be ours.
fn is_mine(resource: &Resource, node_id: &str) -> bool {
    resource.assigned_worker() == Some(node_id)
}

/// The task of a cached assignment.
fn spec_of(entry: &cache::Entry<Resource>) -> TaskSpec {
    let r = &entry.value;
    TaskSpec {
        name: r.name.to_string(),
        id: r.id.to_string(),
        epoch: r.epoch(entry.mod_revision),
        labels: r.labels(),
        scheduled_ms: r.schedule().and_then(|s| s.progress.run_slot_ms),
        assigned_at: entry.create_revision,
    }
}

/// The tasks assigned to `node_id`, at their epochs.
fn desired(resources: &Store<Resource>, node_id: &str) -> BTreeMap<String, TaskSpec> {
    resources.with(|objects, _| {
        objects
            .values()
            .filter(|e| is_mine(&e.value, node_id))
            .map(|e| (e.value.name.to_string(), spec_of(e)))
            .collect()
    })
}

/// Applies one batch of changes to `desired` and notes the names it touched in `dirty`: a
/// worker with 30,000 tasks does not rebuild or revisit them all for each change.
fn apply(
    desired: &mut BTreeMap<String, TaskSpec>,
    dirty: &mut BTreeSet<String>,
    change: &cache::Change<Resource>,
    node_id: &str,
) {
    for event in &change.events {
        match event {
            cache::Event::Added { name, new } | cache::Event::Modified { name, new, .. } => {
                if is_mine(&new.value, node_id) {
                    desired.insert(name.to_string(), spec_of(new));
                } else {
                    desired.remove(&**name);
                }
                dirty.insert(name.to_string());
            }
            cache::Event::Deleted { name, .. } => {
                desired.remove(&**name);
                dirty.insert(name.to_string());
            }
        }
    }
}

/// What a worker must know of its lease before it runs anything.
struct LeaseProof {
    /// When the lease could expire at the earliest, while registered.
    expiry: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    /// The revision of the current registration.
    registered_at: tokio::sync::watch::Receiver<i64>,
}

/// Keeps the supervisor's tasks equal to the ones assigned here, while the lease is provably
/// alive for `margin` more and the assignments cache has caught up with the registration;
/// stops them all when either is not so, and when `cancel` fires.
async fn drive(
    resources: Store<Resource>,
    node_id: String,
    mut supervisor: Supervisor,
    guard: Guard,
    lease: LeaseProof,
    margin: Duration,
    cancel: CancellationToken,
) {
    let LeaseProof {
        mut expiry,
        registered_at,
    } = lease;
    // Subscribed before the first read, so that no change falls between; a change applied
    // twice is harmless (each carries the whole new value).
    let mut changes = resources.subscribe();
    // The first list is read from the cache once ready; batches follow it.
    tokio::select! {
        () = cancel.cancelled() => return supervisor.stop_all().await,
        () = resources.wait_ready() => {}
    }
    let mut wanted = desired(&resources, &node_id);
    // Names changed since the last reconcile; every name is visited when tasks (re)start.
    let mut dirty = BTreeSet::new();
    let mut full = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut was_safe = false;
    let mut changed = true;
    let mut guarded_until = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            c = changes.recv() => {
                match c {
                    Some(change) => apply(&mut wanted, &mut dirty, &change, &node_id),
                    None => break,
                }
                changed = true;
            }
            _ = tick.tick() => {}
            r = expiry.changed() => if r.is_err() { break },
        }
        supervisor.forget_ended();
        let expires = *expiry.borrow();
        let now = tokio::time::Instant::now();
        let alive = expires.is_some_and(|at| now + margin < at);
        // After a lost lease the cache may still hold tasks that moved away while this worker
        // was cut off: nothing read before the new registration is acted on.
        let registered = *registered_at.borrow();
        let current = registered > 0 && resources.revision() >= registered;
        let safe = alive && current;
        // The guard stops the tasks by itself when this proof runs out, even if this process
        // is frozen by then; it is told before anything starts under the proof.
        if safe && let Some(at) = expires.filter(|at| guarded_until != Some(*at)) {
            let left = at.saturating_duration_since(now + margin);
            guard
                .deadline(guard::boottime_ns() + left.as_nanos() as u64)
                .await;
            guarded_until = Some(at);
        }
        if safe != was_safe {
            if safe {
                info!(
                    registered,
                    cache = resources.revision(),
                    "lease confirmed and assignments read since: running tasks"
                );
            } else {
                warn!(
                    alive,
                    "lease not confirmed in time, or assignments not read since: stopping every task"
                );
            }
            was_safe = safe;
            changed = true;
            full = true;
        }
        if !changed {
            continue;
        }
        changed = false;
        if !safe {
            supervisor.stop_all().await;
        } else if full {
            supervisor.reconcile(&wanted).await;
        } else {
            supervisor.reconcile_names(&wanted, &dirty).await;
        }
        dirty.clear();
        full = !safe;
    }
    supervisor.stop_all().await;
}

/// Runs a worker on an already-bound listener until `shutdown` completes. On shutdown the
/// lease is revoked before this returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let worker_dir = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("."));
    let path = std::env::var_os("PATH");
    // The worker still runs: another rule may work, and a task of a broken one is reported
    // failed with the cause. But the operator hears of it now, not at the first such task.
    for missing in config.worker.runners.missing(&worker_dir, path.as_deref()) {
        tracing::warn!(key = %missing.key, wanted = %missing.wanted, "runner template: {missing}");
    }
    let client = crate::etcd::connect(&config.etcd).await?;
    let node_id = registry::node_id(&config.worker.service, options.id);
    let mut metadata = options.labels.clone();
    metadata.insert(CAPACITY_KEY.to_owned(), options.capacity.to_string());
    metadata.insert("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    metadata.insert("registry".to_owned(), "etcd".to_owned());
    metadata.insert("server".to_owned(), "http".to_owned());
    let document =
        registry::registration(&config.worker.service, &node_id, &options.address, metadata);
    let registration = registration::Registration {
        key: config.keys.worker_key(&node_id),
        value: serde_json::to_string(&document)?,
        ttl_secs: config.worker.lease_ttl_secs,
        request_timeout: config.etcd.request_timeout(),
    };

    let cancel = CancellationToken::new();
    let mut background = JoinSet::new();
    crate::etcd::endpoints::spawn(&client, &config, &cancel, &mut background);
    // Only this worker's assignments: etcd sends it the changes to its own tasks and no other.
    let resources: Store<Resource> = cache::spawn(
        "assignments",
        &client,
        &config,
        &config.keys.assignment_prefix(&node_id),
        &cancel,
        &mut background,
    );
    let mut policy = Policy::new(&config.worker, &node_id);
    // Budgets operators set through the API: a small prefix, each worker caches it.
    let budgets: Store<Budget> = cache::spawn(
        "budgets",
        &client,
        &config,
        &config.keys.budget_prefix(),
        &cancel,
        &mut background,
    );
    let lease_watch = registration::LeaseWatch::default();
    // The task agent listens on loopback only: it is for this machine's task processes.
    let agent_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (agent, agent_served) = agent::Agent::spawn(
        agent_listener,
        agent::AgentParts {
            client: &client,
            config: &config,
            node_id: &node_id,
            resources: resources.clone(),
            budgets,
            lease: lease_watch.lease.subscribe(),
        },
        cancel.clone(),
    )?;
    policy.agent = Some(agent);
    let reports = Reports::default();
    let guard = Guard::spawn(
        &options.program,
        Duration::from_millis(config.worker.stop_grace_ms),
        &config.log,
    )
    .map_err(WorkerError::GuardStart)?;
    let guard_lost = guard.lost();
    background.spawn(reporter::run(
        client.clone(),
        config.keys.clone(),
        reports.clone(),
        lease_watch.lease.subscribe(),
        config.etcd.request_timeout(),
        cancel.clone(),
    ));
    // Tasks stop before the lease is revoked: they have their own token.
    let tasks_cancel = CancellationToken::new();
    let driver = tokio::spawn(drive(
        resources.clone(),
        node_id.clone(),
        Supervisor::new(policy.clone(), guard.clone(), reports.clone()),
        guard,
        LeaseProof {
            expiry: lease_watch.expiry.subscribe(),
            registered_at: lease_watch.registered_at.subscribe(),
        },
        Duration::from_millis(config.worker.lease_margin_ms),
        tasks_cancel.clone(),
    ));
    let registered = cancel.child_token();
    // Aborted with this future, so a crashed worker stops refreshing its lease.
    let registrar = AbortOnDropHandle::new(tokio::spawn(registration::run(
        client.clone(),
        registration,
        lease_watch,
        registered.clone(),
    )));

    let app = serve::routes(serve::WorkerState {
        node_id: node_id.clone(),
        resources,
        policy: Arc::new(policy),
        reports,
    });
    info!(%node_id, address = %options.address, capacity = options.capacity, "worker serving");
    let lost = guard_lost.clone();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => {}
                () = lost.cancelled() => {}
            }
            info!("shutting down: stopping tasks, then revoking the lease");
            // Our tasks stop first, so that none still runs when the masters move them away;
            // then we deregister, so that they move at once.
            tasks_cancel.cancel();
            let _ = driver.await;
            registered.cancel();
            let _ = registrar.await;
        })
        .await;
    cancel.cancel();
    let _ = agent_served.await;
    while background.join_next().await.is_some() {}
    info!("worker stopped");
    served.map_err(WorkerError::Serve)?;
    if guard_lost.is_cancelled() {
        return Err(WorkerError::GuardLost);
    }
    Ok(())
}
