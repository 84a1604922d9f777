//! One subscriber's pending changes, coalesced per name, as client-go's work queue does: a
//! name changed ten times before the subscriber looks is one entry, holding the value it had
//! before its first change. A slow subscriber therefore gets fewer, larger batches, never a
//! lag, and what it holds is bounded by the names that changed, not by the changes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::event::{Entry, Event, Name};

/// Each pending name with the value it had before it became pending (`None`: it did not exist).
pub(super) type Before<T> = BTreeMap<Name, Option<Entry<T>>>;

/// What is pending: each changed name with the value it had before it became pending (`None`:
/// it did not exist), whether a re-list is among the changes, and whether the writer is gone.
struct Pending<T> {
    before: Before<T>,
    relisted: bool,
    closed: bool,
}

/// A subscriber's queue; the cache's writer marks it, the subscriber takes from it.
pub(super) struct Queue<T> {
    pending: Mutex<Pending<T>>,
    notify: Notify,
}

impl<T> Queue<T> {
    pub(super) fn new() -> Self {
        Self {
            pending: Mutex::new(Pending {
                before: BTreeMap::new(),
                relisted: false,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending<T>> {
        // Every update is a single insert or swap: a poisoned lock holds nothing half-done.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the names `events` touch, and wakes the subscriber. Returns how many of them were
    /// already pending (merged into the entry that was).
    pub(super) fn mark(&self, events: &[Event<T>], relisted: bool) -> u64 {
        let mut merged = 0;
        {
            let mut pending = self.lock();
            pending.relisted |= relisted;
            for event in events {
                let (name, before) = match event {
                    Event::Added { name, .. } => (name, None),
                    Event::Modified { name, old, .. } | Event::Deleted { name, old } => {
                        (name, Some(old))
                    }
                };
                if pending.before.contains_key(&**name) {
                    merged += 1;
                } else {
                    pending.before.insert(Name::clone(name), before.cloned());
                }
            }
        }
        self.notify.notify_one();
        merged
    }

    /// The writer is gone: the subscriber reads what is left, then sees the end.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Takes everything pending: each name with its value before, and whether a re-list is
    /// among the changes; `None` when nothing is pending.
    pub(super) fn take(&self) -> Option<(Before<T>, bool)> {
        let mut pending = self.lock();
        if pending.before.is_empty() && !pending.relisted {
            return None;
        }
        let relisted = std::mem::take(&mut pending.relisted);
        Some((std::mem::take(&mut pending.before), relisted))
    }

    /// True once the writer is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until the queue is marked or closed (at once if it was since the last wait).
    pub(super) async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// The events that turn each name's value before into `now`'s: one per name, none for a name
/// whose value is the same version again (or that came and went).
pub(super) fn events<T>(
    before: Before<T>,
    now: impl Fn(&str) -> Option<Entry<T>>,
) -> Vec<Event<T>> {
    before
        .into_iter()
        .filter_map(|(name, old)| match (old, now(&name)) {
            (None, Some(new)) => Some(Event::Added { name, new }),
            (Some(old), Some(new)) if old.mod_revision != new.mod_revision => {
                Some(Event::Modified { name, old, new })
            }
            (Some(old), None) => Some(Event::Deleted { name, old }),
            _ => None,
        })
        .collect()
}
