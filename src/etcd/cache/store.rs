//! The cache's state, its single writer and its cheap readers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::diff::diff;
use super::event::{Change, Entry, Event, Name, Objects};
use super::index::Index;
use super::queue::{self, Queue};

/// A consistent copy of the cache at one revision.
#[derive(Debug)]
pub struct Snapshot<T> {
    /// The revision the copy reflects.
    pub revision: i64,
    /// Objects by name.
    pub objects: Objects<T>,
}

/// Counters describing the cache's life, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Values that could not be decoded and were skipped.
    pub malformed: u64,
    /// Full lists applied (the first one included).
    pub lists: u64,
    /// Watch events applied.
    pub events: u64,
    /// Changes merged into one already pending for a subscriber: how far subscribers fall
    /// behind, at no cost to them (see [`Subscription`]).
    pub coalesced: u64,
}

struct State<T> {
    objects: Objects<T>,
    index: Index,
    revision: i64,
}

impl<T: super::Object> State<T> {
    fn insert(&mut self, name: Name, entry: Entry<T>) -> Option<Entry<T>> {
        if let Some(group) = entry.value.group() {
            self.index.add(group, &name);
        }
        let old = self.objects.insert(Name::clone(&name), entry);
        if let Some(old_group) = old.as_ref().and_then(|o| o.value.group()) {
            let now = self.objects.get(&name).and_then(|e| e.value.group());
            if now != Some(old_group) {
                self.index.remove(old_group, &name);
            }
        }
        old
    }

    fn remove(&mut self, name: &str) -> Option<Entry<T>> {
        let old = self.objects.remove(name);
        if let Some(group) = old.as_ref().and_then(|o| o.value.group()) {
            self.index.remove(group, name);
        }
        old
    }
}

struct Inner<T> {
    kind: &'static str,
    state: RwLock<State<T>>,
    revision: watch::Sender<i64>,
    ready: watch::Sender<bool>,
    live: AtomicBool,
    /// The highest revision a reader waits for, and the watcher's cue to ask etcd how far its
    /// stream has come rather than wait for its next periodic report.
    wanted: AtomicI64,
    wanted_cue: Notify,
    subscribers: Mutex<Vec<Weak<Queue<T>>>>,
    malformed: AtomicU64,
    lists: AtomicU64,
    events: AtomicU64,
    coalesced: AtomicU64,
}

impl<T> Inner<T> {
    fn read(&self) -> RwLockReadGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the map half-updated in a way readers
        // could misinterpret (every update is a single insert, remove or swap), so a poisoned
        // lock is still usable.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<T>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Queue<T>>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap, cloneable reader of the cache.
pub struct Store<T> {
    inner: Arc<Inner<T>>,
}

impl<T> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// The one writer of a cache; held by its watcher.
pub struct Writer<T> {
    inner: Arc<Inner<T>>,
}

/// A subscription to a cache's changes. Each subscriber has its own queue of changed names,
/// coalesced per name, and reads each name's latest value when it takes a batch: a slow
/// subscriber gets fewer, larger batches, does less work per change, and never has to start
/// again from a snapshot.
pub struct Subscription<T> {
    inner: Arc<Inner<T>>,
    queue: Arc<Queue<T>>,
}

impl<T: super::Object> Subscription<T> {
    /// The next batch: every name changed since the last batch, once, with its value then and
    /// now, at the cache's current revision. `None` once the cache's writer is gone.
    pub async fn recv(&mut self) -> Option<Change<T>> {
        loop {
            if let Some(change) = self.try_recv() {
                return Some(change);
            }
            if self.queue.is_closed() {
                return self.try_recv();
            }
            self.queue.notified().await;
        }
    }

    /// A consistent copy of the cache, and nothing pending before it: every later batch is a
    /// change from this copy, so the old value of each of its events is the copy's (or that of
    /// an earlier batch). A subscriber that keeps counts from the events' old and new values
    /// starts from here.
    pub fn snapshot(&mut self) -> Snapshot<T> {
        let state = self.inner.read();
        // Marks happen under the write lock: none can fall between the copy and the take.
        drop(self.queue.take());
        Snapshot {
            revision: state.revision,
            objects: state.objects.clone(),
        }
    }

    /// The next batch if one is pending.
    pub fn try_recv(&mut self) -> Option<Change<T>> {
        loop {
            // The values are read under the same lock as the names are taken, so the batch
            // is the cache at one revision; a name marked after it is in the next batch.
            let state = self.inner.read();
            let (before, relisted) = self.queue.take()?;
            let events = queue::events(before, |name| state.objects.get(name).cloned());
            let revision = state.revision;
            drop(state);
            if !events.is_empty() {
                return Some(Change {
                    revision,
                    relisted,
                    events,
                });
            }
        }
    }
}

impl<T: super::Object> Store<T> {
    /// An empty, not yet ready cache and its writer. `kind` names it in logs.
    pub fn new(kind: &'static str) -> (Store<T>, Writer<T>) {
        let inner = Arc::new(Inner {
            kind,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                index: Index::default(),
                revision: 0,
            }),
            revision: watch::channel(0).0,
            ready: watch::channel(false).0,
            live: AtomicBool::new(false),
            wanted: AtomicI64::new(0),
            wanted_cue: Notify::new(),
            subscribers: Mutex::new(Vec::new()),
            malformed: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            events: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        });
        (
            Store {
                inner: Arc::clone(&inner),
            },
            Writer { inner },
        )
    }

    /// What the cache holds (`workers`, `resources`).
    pub fn kind(&self) -> &'static str {
        self.inner.kind
    }

    /// One object.
    pub fn get(&self, name: &str) -> Option<Entry<T>> {
        self.inner.read().objects.get(name).cloned()
    }

    /// A consistent copy of every object and the revision it reflects.
    pub fn snapshot(&self) -> Snapshot<T> {
        let state = self.inner.read();
        Snapshot {
            revision: state.revision,
            objects: state.objects.clone(),
        }
    }

    /// Runs `f` over the objects and revision under the read lock, without copying. Keep `f`
    /// short: the writer waits for it.
    pub fn with<R>(&self, f: impl FnOnce(&Objects<T>, i64) -> R) -> R {
        let state = self.inner.read();
        f(&state.objects, state.revision)
    }

    /// Like [`Store::with`], with the secondary index of the same state.
    pub fn with_index<R>(&self, f: impl FnOnce(&Objects<T>, &Index, i64) -> R) -> R {
        let state = self.inner.read();
        f(&state.objects, &state.index, state.revision)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.inner.read().objects.len()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The etcd revision the cache reflects.
    pub fn revision(&self) -> i64 {
        *self.inner.revision.borrow()
    }

    /// True once the first list has been applied.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// True while the cache's watch is connected and making progress.
    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Waits until the first list has been applied.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Waits, at most `timeout`, until the cache reflects at least `revision`. Returns whether
    /// it did. A quiet prefix has no event to carry it there, so the watcher is asked to learn
    /// its stream's progress now.
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> bool {
        let mut rx = self.inner.revision.subscribe();
        if *rx.borrow_and_update() >= revision {
            return true;
        }
        self.inner.wanted.fetch_max(revision, Ordering::AcqRel);
        self.inner.wanted_cue.notify_one();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A subscription to the changes applied from now on (see [`Subscription`]). The first
    /// list is not a change: read the state once the cache is ready, then follow the batches.
    pub fn subscribe(&self) -> Subscription<T> {
        let queue = Arc::new(Queue::new());
        self.inner.subscribers().push(Arc::downgrade(&queue));
        Subscription {
            inner: Arc::clone(&self.inner),
            queue,
        }
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            malformed: self.inner.malformed.load(Ordering::Relaxed),
            lists: self.inner.lists.load(Ordering::Relaxed),
            events: self.inner.events.load(Ordering::Relaxed),
            coalesced: self.inner.coalesced.load(Ordering::Relaxed),
        }
    }
}

/// One decoded change from a watch response, before it is applied.
pub(crate) enum Update<T> {
    /// The key now holds this value.
    Put {
        name: Name,
        value: T,
        create_revision: i64,
        mod_revision: i64,
    },
    /// The key was deleted, or now holds a value that cannot be decoded.
    Remove { name: Name },
}

impl<T: super::Object> Writer<T> {
    /// The revision the cache reflects.
    pub(crate) fn revision(&self) -> i64 {
        self.inner.read().revision
    }

    /// True while a reader waits for a revision the cache has not reached.
    pub(crate) fn progress_wanted(&self) -> bool {
        self.inner.wanted.load(Ordering::Acquire) > self.revision()
    }

    /// Returns once a reader has asked for a revision (perhaps already reached: check
    /// [`Writer::progress_wanted`]).
    pub(crate) async fn wanted(&self) {
        self.inner.wanted_cue.notified().await;
    }

    /// Counts a value that could not be decoded.
    pub(crate) fn count_malformed(&self) {
        self.inner.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the watch as connected or not.
    pub(crate) fn set_live(&self, live: bool) {
        self.inner.live.store(live, Ordering::Release);
    }

    /// Replaces the whole state with a fresh list at `revision`, atomically, and marks the
    /// differences for subscribers; the first list marks none (they read the state once ready).
    pub(crate) fn replace(&self, objects: Objects<T>, revision: i64) {
        let first = !*self.inner.ready.borrow();
        // The index is built before the lock is taken and swapped in with the data.
        let index = Index::build(
            objects
                .iter()
                .filter_map(|(name, entry)| Some((entry.value.group()?, name))),
        );
        let events = {
            let mut state = self.inner.write();
            let events = if first {
                Vec::new()
            } else {
                diff(&state.objects, &objects)
            };
            state.objects = objects;
            state.index = index;
            state.revision = revision;
            self.mark(&events, !first);
            events
        };
        self.inner.lists.fetch_add(1, Ordering::Relaxed);
        self.publish(revision);
        // The differences' old values go now, not when every subscriber has read them.
        drop(events);
        self.inner.ready.send_replace(true);
    }

    /// Applies a batch of watch updates, in order, and moves the revision to `revision`.
    pub(crate) fn apply(&self, updates: Vec<Update<T>>, revision: i64) {
        let count = updates.len() as u64;
        {
            let mut state = self.inner.write();
            let mut events = Vec::with_capacity(updates.len());
            for update in updates {
                match update {
                    Update::Put {
                        name,
                        value,
                        create_revision,
                        mod_revision,
                    } => {
                        let new = Entry {
                            value: Arc::new(value),
                            create_revision,
                            mod_revision,
                        };
                        match state.insert(Name::clone(&name), new.clone()) {
                            Some(old) => events.push(Event::Modified { name, old, new }),
                            None => events.push(Event::Added { name, new }),
                        }
                    }
                    Update::Remove { name } => {
                        if let Some(old) = state.remove(&name) {
                            events.push(Event::Deleted { name, old });
                        }
                    }
                }
            }
            state.revision = state.revision.max(revision);
            self.mark(&events, false);
        }
        self.inner.events.fetch_add(count, Ordering::Relaxed);
        self.publish(revision);
    }

    /// Moves the revision forward without changes (a progress notification).
    pub(crate) fn advance(&self, revision: i64) {
        let mut state = self.inner.write();
        if revision > state.revision {
            state.revision = revision;
            drop(state);
            self.inner.revision.send_replace(revision);
        }
    }

    /// Marks `events` in every subscriber's queue. Called under the state's write lock, so a
    /// subscriber that takes its batch (under the read lock) sees each name either changed and
    /// marked, or neither.
    fn mark(&self, events: &[Event<T>], relisted: bool) {
        if events.is_empty() && !relisted {
            return;
        }
        let mut merged = 0;
        self.inner
            .subscribers()
            .retain(|weak| match weak.upgrade() {
                Some(queue) => {
                    merged += queue.mark(events, relisted);
                    true
                }
                None => false,
            });
        self.inner.coalesced.fetch_add(merged, Ordering::Relaxed);
    }

    fn publish(&self, revision: i64) {
        self.inner.revision.send_modify(|r| *r = (*r).max(revision));
    }
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        for queue in self.inner.subscribers().iter().filter_map(Weak::upgrade) {
            queue.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::cache::{DecodeError, Object};

    impl Object for u32 {
        fn decode(_: &str, _: &[u8]) -> Result<Self, DecodeError> {
            Err(DecodeError::new("test values are not decoded"))
        }
    }

    /// A value in a group, as a resource is in its worker's.
    #[derive(Debug)]
    struct Tagged(&'static str);

    impl Object for Tagged {
        fn decode(_: &str, _: &[u8]) -> Result<Self, DecodeError> {
            Err(DecodeError::new("test values are not decoded"))
        }
        fn group(&self) -> Option<&str> {
            (!self.0.is_empty()).then_some(self.0)
        }
    }

    fn tagged(name: &str, group: &'static str, rev: i64) -> Update<Tagged> {
        Update::Put {
            name: name.into(),
            value: Tagged(group),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn groups(store: &Store<Tagged>) -> Vec<(String, Vec<String>)> {
        store.with_index(|_, index, _| {
            let mut all: Vec<_> = index
                .groups()
                .map(|(g, _)| {
                    let names = index.names(g).into_iter().flatten();
                    (g.to_string(), names.map(|n| n.to_string()).collect())
                })
                .collect();
            all.sort();
            all
        })
    }

    #[test]
    fn a_subscriptions_snapshot_takes_what_was_pending_before_it() {
        let (store, writer) = Store::<Tagged>::new("test");
        writer.replace(BTreeMap::new(), 1);
        let mut sub = store.subscribe();
        writer.apply(vec![tagged("a", "w1", 2), tagged("b", "w1", 2)], 2);
        let copy = sub.snapshot();
        assert_eq!((copy.revision, copy.objects.len()), (2, 2));
        assert!(
            sub.try_recv().is_none(),
            "what the copy holds is not sent again"
        );
        // A later change is a change from the copy: its old value is the copy's.
        writer.apply(vec![tagged("a", "w2", 3)], 3);
        let change = sub.try_recv().expect("a batch");
        assert_eq!(change.revision, 3);
        match &change.events[..] {
            [Event::Modified { name, old, new }] => {
                assert_eq!(&**name, "a");
                assert_eq!((old.value.0, new.value.0), ("w1", "w2"));
            }
            other => panic!("one change of a, not {other:?}"),
        }
    }

    #[test]
    fn the_index_follows_every_change_and_swaps_with_a_relist() {
        let (store, writer) = Store::<Tagged>::new("test");
        writer.apply(
            vec![
                tagged("a", "w1", 2),
                tagged("b", "w1", 2),
                tagged("c", "", 2),
                tagged("d", "w2", 2),
            ],
            2,
        );
        assert_eq!(
            groups(&store),
            [
                ("w1".into(), vec!["a".into(), "b".into()]),
                ("w2".into(), vec!["d".into()])
            ]
        );
        // A move, an unassignment, an assignment, a delete and a rewrite in the same group.
        writer.apply(
            vec![
                tagged("a", "w2", 3),
                tagged("b", "", 3),
                tagged("c", "w1", 3),
                Update::Remove { name: "d".into() },
                tagged("a", "w2", 3),
            ],
            3,
        );
        assert_eq!(
            groups(&store),
            [
                ("w1".into(), vec!["c".into()]),
                ("w2".into(), vec!["a".into()])
            ]
        );
        store.with_index(|_, index, _| {
            assert_eq!(index.count("w2"), 1);
            assert_eq!(index.count("gone"), 0);
            assert!(index.names("w9").is_none());
            let inner = index.intern("w1").expect("w1 has a name");
            assert_eq!(&*inner, "w1");
        });
        let mut fresh = BTreeMap::new();
        fresh.insert(
            Name::from("z"),
            Entry {
                value: Arc::new(Tagged("w3")),
                create_revision: 9,
                mod_revision: 9,
            },
        );
        writer.replace(fresh, 9);
        assert_eq!(groups(&store), [("w3".into(), vec!["z".into()])]);
    }

    fn put(name: &str, value: u32, rev: i64) -> Update<u32> {
        Update::Put {
            name: name.into(),
            value,
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[tokio::test]
    async fn applies_batches_in_order_and_reports_changes() {
        let (store, writer) = Store::<u32>::new("test");
        let mut changes = store.subscribe();
        assert!(!store.is_ready());
        writer.replace(BTreeMap::new(), 5);
        assert!(store.is_ready());
        writer.apply(
            vec![
                put("a", 1, 6),
                put("a", 2, 6),
                Update::Remove { name: "a".into() },
                put("b", 3, 6),
            ],
            6,
        );
        assert_eq!(store.revision(), 6);
        assert!(store.get("a").is_none());
        assert_eq!(store.get("b").map(|e| *e.value), Some(3));
        let batch = changes.recv().await.expect("a batch");
        assert_eq!(batch.revision, 6);
        // `a` came and went before the subscriber looked: nothing to say about it.
        let kinds: Vec<_> = batch
            .events
            .iter()
            .map(|e| match e {
                Event::Added { name, .. } => format!("added {name}"),
                Event::Modified { name, .. } => format!("modified {name}"),
                Event::Deleted { name, .. } => format!("deleted {name}"),
            })
            .collect();
        assert_eq!(kinds, ["added b"]);
        assert_eq!(store.stats().coalesced, 2);
        assert!(store.wait_for_revision(6, Duration::from_millis(10)).await);
        assert!(!store.wait_for_revision(7, Duration::from_millis(10)).await);
        writer.advance(7);
        assert!(store.wait_for_revision(7, Duration::from_millis(10)).await);
    }

    /// A list holding one object, `name` = `value`, written at `revision`.
    fn listed(name: &str, value: u32, revision: i64) -> Objects<u32> {
        let entry = Entry {
            value: Arc::new(value),
            create_revision: revision,
            mod_revision: revision,
        };
        BTreeMap::from([(Name::from(name), entry)])
    }

    #[tokio::test]
    async fn relist_swaps_and_derives_events() {
        let (store, writer) = Store::<u32>::new("test");
        let mut changes = store.subscribe();
        writer.replace(listed("a", 1, 2), 2);
        // The first list is read from the state, not from a batch.
        assert!(store.is_ready());
        assert!(changes.try_recv().is_none());
        writer.apply(vec![put("b", 2, 3)], 3);
        assert_eq!(changes.recv().await.expect("a batch").revision, 3);
        writer.replace(listed("b", 2, 3), 10);
        let snap = store.snapshot();
        assert_eq!(snap.revision, 10);
        assert_eq!(snap.objects.len(), 1);
        let batch = changes.recv().await.expect("a batch");
        assert!(batch.relisted);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].name(), "a");
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_one_batch_per_name_with_the_latest_values() {
        let (store, writer) = Store::<u32>::new("test");
        let mut slow = store.subscribe();
        let mut quick = store.subscribe();
        writer.replace(listed("keep", 0, 1), 1);
        // 100,000 batches on ten names, while one subscriber reads along and one sleeps.
        let mut seen = 0;
        for revision in 2..100_002 {
            let name = format!("n{}", revision % 10);
            writer.apply(vec![put(&name, revision as u32, revision)], revision);
            while let Some(batch) = quick.try_recv() {
                seen += batch.events.len();
            }
        }
        writer.apply(
            vec![Update::Remove {
                name: "keep".into(),
            }],
            100_002,
        );
        assert_eq!(
            seen, 100_000,
            "a subscriber that keeps up sees every change"
        );
        let batch = slow.recv().await.expect("a batch");
        assert_eq!(batch.revision, 100_002);
        assert_eq!(batch.events.len(), 11, "one event per name");
        for event in &batch.events {
            match event {
                Event::Added { name, new } => {
                    let digit: i64 = name[1..].parse().expect("n<digit>");
                    assert_eq!(new.mod_revision % 10, digit);
                    assert!(new.mod_revision > 99_990, "the latest value of {name}");
                }
                Event::Deleted { name, old } => {
                    assert_eq!(&**name, "keep");
                    assert_eq!(*old.value, 0, "the value before the first change");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(slow.try_recv().is_none());
        assert!(store.stats().coalesced >= 99_990);
    }

    #[tokio::test]
    async fn a_subscription_ends_after_the_writer_with_what_was_pending() {
        let (store, writer) = Store::<u32>::new("test");
        let mut changes = store.subscribe();
        writer.replace(BTreeMap::new(), 1);
        writer.apply(vec![put("a", 1, 2)], 2);
        drop(writer);
        assert_eq!(changes.recv().await.map(|c| c.events.len()), Some(1));
        assert!(changes.recv().await.is_none());
    }
}
