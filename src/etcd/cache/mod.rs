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
pub use store::{Snapshot, Store, StoreStats, Subscription, Writer};

use etcd_client::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use watcher::WatchConfig;

/// Returns the memory freed after a large list to the OS. glibc keeps freed pages for reuse,
/// so without this a process's RSS stays at the high-water mark of its largest list (pages of
/// raw values and their decoding), far above what it holds.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the OS; it takes glibc's own locks and
    // may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

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
