//! A watch-driven, in-memory cache of one etcd prefix, used by both roles for every prefix.
//!
//! Three layers, as in kube-runtime: the [`watcher`] state machine (list at a revision, watch
//! from the next, resume after failures, re-list after a compaction), the single [`Writer`] that
//! applies what it sees, and the cheap, cloneable [`Store`] readers. A re-list is swapped in
//! under one lock, so readers never see half a list. The first list publishes no change batch
//! (it would hold every object until each subscriber read it): a subscriber reads the state once
//! the cache is ready ([`Store::wait_ready`]) and follows every batch after it.

mod diff;
mod event;
mod index;
mod progress;
mod queue;
mod store;
pub mod watcher;

pub use crate::object::{DecodeError, Name, Object};
pub use diff::diff;
pub use event::{Change, Entry, Event, Objects};
pub use index::Index;
#[cfg(test)]
pub(crate) use store::Update;
pub use store::{Snapshot, Store, StoreStats, Subscription, Writer};

use etcd_client::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use watcher::WatchConfig;

/// Starts a cache of `prefix` whose watcher runs in `tasks` until `cancel` fires.
pub fn spawn<T: Object>(
    kind: &'static str,
    client: &Client,
    config: &crate::config::Config,
    prefix: &str,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Store<T> {
    let (store, writer) = Store::new(kind);
    let watch = WatchConfig::new(prefix, config.etcd.request_timeout());
    tasks.spawn(watcher::run(client.clone(), watch, writer, cancel.clone()));
    store
}
