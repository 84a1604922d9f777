//! Logs worker membership the way the Go master does: `worker joined: [...], left: [...],
//! changed: [...]`.

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::etcd::cache::{Event, Store};
use crate::model::registry::Worker;

/// Logs every change of the workers cache until `cancel` fires.
pub async fn run(workers: Store<Worker>, cancel: CancellationToken) {
    let mut changes = workers.subscribe();
    tokio::select! {
        () = cancel.cancelled() => return,
        () = workers.wait_ready() => {}
    }
    // The first list is not a change batch: its workers are logged from the cache.
    let (revision, present) = workers.with(|objects, revision| {
        let ids: Vec<String> = objects.values().map(|e| e.value.id.clone()).collect();
        (revision, ids)
    });
    info!(
        revision,
        relisted = true,
        "worker joined: {present:?}, left: [], changed: []"
    );
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => return,
            c = changes.recv() => c,
        };
        let Some(change) = change else { return };
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
