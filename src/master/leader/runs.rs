//! Ends of runs: when a worker reports the current run of a task completed or failed, the
//! leader records how it ended (when, exit code, restarts, the runner's summary) in the run's
//! entry of the resource's history.
//!
//! Reports are coalesced per resource (the newest epoch wins) and written a bounded batch per
//! step, so a burst of endings costs a few txns and never a queue without bound.

use std::collections::HashMap;

use tracing::debug;

use super::{Leader, WriteError};
use crate::etcd::cache::{Change, Event, Name};
use crate::master::leadership::Fence;
use crate::model::status::{TaskState, now_ms};

/// Ends recorded per txn.
const ENDS: usize = 40;
/// Txns per step.
const TXNS: usize = 4;

/// Resources whose current run ended and is not recorded yet, with the epoch that ended.
#[derive(Debug, Default)]
pub(super) struct Ends(HashMap<Name, i64>);

impl Leader {
    fn ends(&self) -> std::sync::MutexGuard<'_, Ends> {
        self.inner.ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the runs that the statuses of one batch end.
    pub(super) fn note_ends(&self, change: &Change<crate::model::status::TaskStatus>) {
        let mut ends = self.ends();
        for event in &change.events {
            let (Event::Added { name, new } | Event::Modified { name, new, .. }) = event else {
                continue;
            };
            let s = &new.value;
            if matches!(s.state, TaskState::Completed | TaskState::Failed) {
                ends.0.insert(Name::clone(name), s.epoch);
            }
        }
    }

    /// Records the ends noted, a bounded batch per step.
    pub(super) async fn record_ends(&self, fence: &Fence) -> Result<(), WriteError> {
        for _ in 0..TXNS {
            let batch: Vec<(Name, i64)> = {
                let mut ends = self.ends();
                let names: Vec<Name> = ends.0.keys().take(ENDS).cloned().collect();
                names
                    .into_iter()
                    .filter_map(|n| ends.0.remove(&n).map(|e| (n, e)))
                    .collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            let names: Vec<&str> = batch.iter().map(|(n, _)| &**n).collect();
            let mut histories = self.histories(&names).await?;
            let now = now_ms();
            let mut items = Vec::new();
            let mut written = Vec::new();
            for (name, epoch) in &batch {
                let Some(status) = self.inner.statuses.get(name) else {
                    continue;
                };
                let Some(stored) = histories.remove(&**name) else {
                    continue;
                };
                let mut history = stored.history;
                if stored.version == 0 || status.value.epoch != *epoch {
                    continue;
                }
                if !history.end(&status.value, now) {
                    continue;
                }
                items.push((
                    vec![self.history_unchanged(name, stored.version)],
                    vec![self.history_put(name, &history)?],
                ));
                written.push((Name::clone(name), *epoch));
            }
            if items.is_empty() {
                continue;
            }
            let applied = self.write_each(fence, items).await?;
            let mut ends = self.ends();
            for ((name, epoch), ok) in written.into_iter().zip(applied) {
                if !ok {
                    // The history changed under us (a new run started, say): read again.
                    ends.0.entry(name).or_insert(epoch);
                } else {
                    debug!(%name, epoch, "run end recorded");
                }
            }
        }
        Ok(())
    }
}
