//! The take-over that starts every term: load the scheduling state, resources and workers at
//! one revision into a new placement and fleet, add the missing seed tasks, and assign the
//! resources that have no worker. Those of absent workers are not moved here: their grace
//! period runs from the departure etcd records (or from now, for a departure no leader saw),
//! and a storm freeze etcd holds stays in force.

use std::collections::{HashMap, HashSet};

use tracing::info;

use super::fleet::Fleet;
use super::{Leader, MOVES, WriteError};
use crate::etcd::cache::Object;
use crate::etcd::cache::watcher::name_of;
use crate::etcd::list_prefix;
use crate::master::leadership::Fence;
use crate::master::placement::Placement;
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::schedule::Record;

impl Leader {
    /// Steps 1 to 4 of a take-over. Returns the revision everything was loaded at.
    pub(super) async fn take_over(&self, fence: &Fence) -> Result<i64, WriteError> {
        // Both prefixes are read at one revision, page by page straight into the placement;
        // only the resources that need a worker are kept whole.
        let deadline = self.inner.config.request_timeout;
        let keys = &self.inner.config.keys;
        let client = &self.inner.client;
        let revision = self.current_revision().await?;
        let mut placement = Placement::new();
        let mut fleet = Fleet::new(
            self.inner.config.scheduling.reassign_rate,
            crate::model::status::now_ms(),
        );
        list_prefix(client, &keys.schedule_prefix, revision, deadline, |kvs| {
            for (record, _) in decode_all::<Record>(&keys.schedule_prefix, &kvs) {
                match record {
                    Record::Control(id, control) => {
                        placement.set_cordoned(&id, true);
                        fleet.controls.insert(id, control);
                    }
                    Record::Departed(id, d) => {
                        fleet.recorded.insert(id.clone());
                        fleet.departed.insert(id, d.at_ms);
                    }
                    Record::Storm(storm) => fleet.storm = Some(storm),
                }
            }
        })
        .await?;
        let mut workers = 0usize;
        list_prefix(client, &keys.worker_prefix, revision, deadline, |kvs| {
            for (w, _) in decode_all::<Worker>(&keys.worker_prefix, &kvs) {
                placement.upsert_worker(&w.id, &w.address, w.capacity());
                // Back while no leader watched: it keeps its tasks.
                fleet.departed.remove(&w.id);
                workers += 1;
            }
        })
        .await?;
        // Which worker's key holds each resource, read beside the resources and checked
        // against them after.
        let keyed = self.load_assignments(revision);
        let seeds: HashSet<&str> = self.inner.config.seeds.iter().map(String::as_str).collect();
        let mut present: HashSet<String> = HashSet::new();
        let mut resources = 0usize;
        let mut loaded: HashMap<String, (Resource, i64)> = HashMap::new();
        let listed = list_prefix(client, &keys.resources_prefix, revision, deadline, |kvs| {
            for (r, mod_revision) in decode_all::<Resource>(&keys.resources_prefix, &kvs) {
                resources += 1;
                placement.set_resource_shared(&r.name, Some(r.assigned_worker()), revision);
                placement.set_done(
                    &r.name,
                    self.completed(&r.name, r.assigned_worker(), mod_revision),
                );
                if let Some(id) = r.id.as_u64() {
                    self.inner.ids.advance_past(id);
                }
                if seeds.contains(&*r.name) {
                    present.insert(r.name.to_string());
                }
                if placement.needs(&r.name) {
                    loaded.insert(r.name.to_string(), (r, mod_revision));
                }
            }
        });
        let (keyed, listed) = tokio::join!(keyed, listed);
        let keyed = keyed?;
        listed?;
        placement.advance(revision);
        self.check_listed(placement.assignments());
        let to_repair = self.check_gone(|name| placement.has_resource(name));
        info!(
            revision,
            resources,
            workers,
            assignment_keys = keyed,
            to_repair,
            departed = fleet.departed.len(),
            cordoned = fleet.controls.len(),
            frozen = fleet.frozen(),
            "leader loaded the scheduling state, resources and workers"
        );
        self.inner.metrics.frozen.set(i64::from(fleet.frozen()));
        *self.placement() = placement;
        *self.fleet() = fleet;
        crate::etcd::cache::release_free_memory();
        self.inner.applied.send_replace(revision);
        for seed in &self.inner.config.seeds {
            if present.contains(seed) {
                continue;
            }
            match self.create_fenced(fence, seed).await {
                Ok(created) => {
                    info!(name = %seed, node = %created.resource.assigned_node, "seed task added");
                    loaded.insert(seed.clone(), (created.resource, created.revision));
                }
                Err(WriteError::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        let lookup = |name: &str| loaded.get(name).cloned();
        loop {
            let moves = self.placement().plan(MOVES, 0, revision);
            if moves.is_empty() {
                break;
            }
            match self.write_moves(fence, &moves, &lookup).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(WriteError::Deposed) => return Err(self.deposed(fence)),
                Err(e) => return Err(e),
            }
        }
        Ok(revision)
    }
}

/// Decodes every well-formed value, with its mod revision; malformed ones are skipped (the
/// caches count and log them).
fn decode_all<T: Object>(prefix: &str, kvs: &[etcd_client::KeyValue]) -> Vec<(T, i64)> {
    kvs.iter()
        .filter_map(|kv| {
            let name = name_of(prefix, kv.key()).ok()?;
            Some((T::decode(&name, kv.value()).ok()?, kv.mod_revision()))
        })
        .collect()
}
