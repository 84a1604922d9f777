//! The master process: caches fed by etcd watches, and the HTTP API over them.

use std::future::Future;
use std::sync::atomic::Ordering;

use etcd_client::Client;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{AppState, router};
use crate::cache::watcher::{self, WatchConfig};
use crate::cache::{Event, Object, Store};
use crate::config::Config;
use crate::registry::Worker;
use crate::resource::Resource;

/// Who this master is.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Master id, 0..=1023 (also the snowflake node id).
    pub id: u16,
    /// URL other masters and clients use to reach this one.
    pub advertise: String,
}

/// Why a master stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// etcd could not be set up.
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    /// Serving HTTP failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Starts a cache of `prefix` whose watcher runs in `tasks` until `cancel` fires.
pub fn spawn_cache<T: Object>(
    kind: &'static str,
    client: &Client,
    config: &Config,
    prefix: &str,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Store<T> {
    let (store, writer) = Store::new(kind);
    let watch = WatchConfig::new(prefix, config.etcd.request_timeout());
    tasks.spawn(watcher::run(client.clone(), watch, writer, cancel.clone()));
    store
}

/// Logs worker membership the way the original master does:
/// `worker joined: [...], left: [...], changed: [...]`.
async fn log_membership(workers: Store<Worker>, cancel: CancellationToken) {
    let mut changes = workers.subscribe();
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => return,
            c = changes.recv() => c,
        };
        let change = match change {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "membership log fell behind");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let (mut joined, mut left, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        for event in &change.events {
            match event {
                Event::Added { new, .. } => joined.push(new.value.id.clone()),
                Event::Deleted { old, .. } => left.push(old.value.id.clone()),
                Event::Modified { new, .. } => changed.push(new.value.id.clone()),
            }
        }
        info!(
            revision = change.revision,
            relisted = change.relisted,
            "worker joined: {joined:?}, left: {left:?}, changed: {changed:?}"
        );
    }
}

/// Runs a master on an already-bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    options: MasterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let client = crate::etcd::connect(&config.etcd).await?;
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let workers: Store<Worker> = spawn_cache(
        "workers",
        &client,
        &config,
        &config.keys.worker_prefix,
        &cancel,
        &mut tasks,
    );
    let resources: Store<Resource> = spawn_cache(
        "resources",
        &client,
        &config,
        &config.keys.resources_prefix,
        &cancel,
        &mut tasks,
    );
    tasks.spawn(log_membership(workers.clone(), cancel.clone()));
    let state = AppState::new(workers, resources);
    let shutting_down = state.shutting_down.clone();
    info!(id = options.id, advertise = %options.advertise, addr = ?listener.local_addr().ok(), "master serving");
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            shutting_down.store(true, Ordering::Release);
            info!("shutting down: draining requests");
        })
        .await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    info!("master stopped");
    served.map_err(MasterError::Serve)
}
