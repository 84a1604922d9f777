//! The worker agent (`crawler worker`): registers in go-micro's format, keeps its lease alive,
//! follows the resources assigned to it, and serves `/healthz` and `/tasks`.

pub mod registration;

use std::collections::BTreeMap;
use std::future::Future;

use axum::extract::State;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;

use crate::config::Config;
use crate::etcd::cache::{self, Event, Store};
use crate::model::registry::{self, CAPACITY_KEY};
use crate::model::resource::Resource;

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
}

#[derive(Clone)]
struct WorkerState {
    node_id: String,
    resources: Store<Resource>,
}

/// One task assigned to this worker.
#[derive(Debug, Serialize)]
pub struct TaskView {
    /// Resource id.
    pub id: String,
    /// Resource name.
    pub name: String,
    /// Creation time, Unix nanoseconds.
    pub creation_time: i64,
}

/// The worker's current tasks.
#[derive(Debug, Serialize)]
pub struct TaskList {
    /// This worker's node id.
    pub worker: String,
    /// etcd revision the list reflects.
    pub revision: i64,
    /// Tasks, by name.
    pub items: Vec<TaskView>,
}

fn is_mine(resource: &Resource, node_id: &str) -> bool {
    resource.assigned_worker() == Some(node_id)
}

async fn tasks(State(state): State<WorkerState>) -> Json<TaskList> {
    let (items, revision) = state.resources.with(|objects, revision| {
        let items = objects
            .values()
            .filter(|e| is_mine(&e.value, &state.node_id))
            .map(|e| TaskView {
                id: e.value.id.clone(),
                name: e.value.name.clone(),
                creation_time: e.value.creation_time,
            })
            .collect();
        (items, revision)
    });
    Json(TaskList {
        worker: state.node_id.clone(),
        revision,
        items,
    })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Logs each task this worker starts and stops.
async fn follow_tasks(resources: Store<Resource>, node_id: String, cancel: CancellationToken) {
    let mut changes = resources.subscribe();
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => return,
            c = changes.recv() => c,
        };
        let Ok(change) = change else {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = change {
                return;
            }
            continue;
        };
        for event in &change.events {
            let (before, after) = match event {
                Event::Added { new, .. } => (false, is_mine(&new.value, &node_id)),
                Event::Modified { old, new, .. } => {
                    (is_mine(&old.value, &node_id), is_mine(&new.value, &node_id))
                }
                Event::Deleted { old, .. } => (is_mine(&old.value, &node_id), false),
            };
            match (before, after) {
                (false, true) => info!(
                    task = event.name(),
                    revision = change.revision,
                    "task started"
                ),
                (true, false) => info!(
                    task = event.name(),
                    revision = change.revision,
                    "task stopped"
                ),
                _ => {}
            }
        }
    }
}

/// Runs a worker on an already-bound listener until `shutdown` completes. On shutdown the
/// lease is revoked before this returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let client = crate::etcd::connect(&config.etcd).await?;
    let node_id = registry::node_id(&config.worker.service, options.id);
    let mut metadata = BTreeMap::new();
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
    background.spawn(crate::etcd::endpoints::watch(
        client.clone(),
        config.etcd.clone(),
        config.keys.health_probe_key(),
        cancel.clone(),
    ));
    let resources: Store<Resource> = cache::spawn(
        "resources",
        &client,
        &config,
        &config.keys.resources_prefix,
        &cancel,
        &mut background,
    );
    background.spawn(follow_tasks(
        resources.clone(),
        node_id.clone(),
        cancel.clone(),
    ));
    let registered = cancel.child_token();
    // Aborted with this future, so a crashed worker stops refreshing its lease.
    let registrar = AbortOnDropHandle::new(tokio::spawn(registration::run(
        client.clone(),
        registration,
        registered.clone(),
    )));

    let app = Router::new()
        .route(HEALTHZ, get(healthz))
        .route("/tasks", get(tasks))
        .with_state(WorkerState {
            node_id: node_id.clone(),
            resources,
        });
    info!(%node_id, address = %options.address, capacity = options.capacity, "worker serving");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("shutting down: revoking lease");
            // Deregister first, so masters move our tasks away at once.
            registered.cancel();
            let _ = registrar.await;
        })
        .await;
    cancel.cancel();
    while background.join_next().await.is_some() {}
    info!("worker stopped");
    served.map_err(WorkerError::Serve)
}
