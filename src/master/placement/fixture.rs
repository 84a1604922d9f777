//! A placement over a real resources cache, for the tests: each change is written to the cache
//! and applied from the batch the cache publishes, as the leader applies it.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::{Placement, Wants};
use crate::etcd::cache::{Name, Object, Store, Subscription, Update, Writer};
use crate::model::resource::Resource;

/// A placement, the writer of its resources cache, and its subscription to that cache.
pub(super) struct Fixture {
    placement: Placement,
    writer: Writer<Resource>,
    changes: Subscription<Resource>,
}

impl Fixture {
    /// An empty placement over an empty, ready cache.
    pub(super) fn new() -> Self {
        let (store, writer) = Store::new("resources");
        writer.replace(BTreeMap::new(), 1);
        let changes = store.subscribe();
        Self {
            placement: Placement::new(store),
            writer,
            changes,
        }
    }

    /// Writes resource `name` at `revision`: assigned to a worker, unassigned (`Some(None)`) or
    /// deleted (`None`), asking nothing of its worker; then applies what the cache publishes.
    pub(super) fn set_resource(&mut self, name: &str, state: Option<Option<&str>>, revision: i64) {
        self.set_resource_with(name, state, None, revision);
    }

    /// The same, for a resource that asks `wants` of its worker.
    pub(super) fn set_resource_with(
        &mut self,
        name: &str,
        state: Option<Option<&str>>,
        wants: Option<Arc<Wants>>,
        revision: i64,
    ) {
        let name = Name::from(name);
        let update = match state {
            None => Update::Remove { name },
            Some(worker) => put(&name, worker, revision),
        };
        self.writer.apply(vec![update], revision);
        self.catch_up(wants);
    }

    /// Writes resource `name` to the cache only: the placement has not applied it yet.
    pub(super) fn write_ahead(&mut self, name: &str, worker: &str, revision: i64) {
        self.writer
            .apply(vec![put(name, Some(worker), revision)], revision);
    }

    /// Applies every batch the cache published, the resources asking `wants`.
    pub(super) fn catch_up(&mut self, wants: Option<Arc<Wants>>) {
        while let Some(change) = self.changes.try_recv() {
            for event in &change.events {
                self.placement.apply(event, wants.clone(), change.revision);
            }
        }
    }

    /// Records whether the task of `name` completed at the worker the cache shows it on.
    pub(super) fn set_done(&mut self, name: &str, done: bool) {
        let worker = self.assigned(name).filter(|_| done);
        self.placement
            .set_done(&Name::from(name), worker.as_deref());
    }

    /// The worker the cache shows resource `name` assigned to.
    pub(super) fn assigned(&self, name: &str) -> Option<String> {
        let entry = self.placement.resources.get(name)?;
        entry.value.assigned_worker().map(str::to_owned)
    }
}

/// A placement with present workers `ids`, each at `<id>:1` with no capacity and no labels.
pub(super) fn with_workers(ids: &[&str]) -> Fixture {
    let mut p = Fixture::new();
    for id in ids {
        p.upsert_worker(id, &format!("{id}:1"), None, Arc::default());
    }
    p
}

/// Resource `name` written at `revision`, assigned to `worker` (`None`: unassigned).
fn put(name: &str, worker: Option<&str>, revision: i64) -> Update<Resource> {
    let node = worker.map_or(String::new(), |w| format!("{w}|{w}:1"));
    let text = serde_json::json!({"ID": "1", "Name": name, "AssignedNode": node});
    let value = Resource::decode(name, text.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("a test resource decodes: {e}"));
    Update::Put {
        name: Name::from(name),
        value,
        create_revision: revision,
        mod_revision: revision,
    }
}

impl Deref for Fixture {
    type Target = Placement;

    fn deref(&self) -> &Placement {
        &self.placement
    }
}

impl DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut Placement {
        &mut self.placement
    }
}
