//! The take-over that starts every term: load the scheduling state and workers from etcd and
//! the resources from this master's cache into a new placement and scheduling, add the missing seed
//! tasks, and assign the resources that have no worker. Those of absent workers are not moved
//! here: their grace period runs from the departure etcd records (or from now, for a departure
//! no leader saw), and a storm freeze etcd holds stays in force.

use std::collections::{HashMap, HashSet};

use tracing::info;

use super::scheduling::Scheduling;
use super::{Leader, MOVES, WriteError};
use crate::etcd::cache::watcher::name_of;
use crate::etcd::cache::{Object, Subscription};
use crate::etcd::list_prefix;
use crate::master::leadership::Fence;
use crate::master::placement::Placement;
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::schedule::Record;

impl Leader {
    /// Steps 1 to 4 of a take-over. Returns the revisions the resources and the workers were
    /// loaded at: the change batches after them are the term's to apply.
    pub(super) async fn take_over(
        &self,
        fence: &Fence,
        resource_changes: &mut Subscription<Resource>,
    ) -> Result<Loaded, WriteError> {
        // The scheduling state and the workers are read from etcd at its current revision; the
        // resources come from this master's own cache, a consistent copy at the cache's
        // revision, whose later batches this term applies (it subscribed before). Nothing this
        // master already holds is listed and decoded again (at a million resources that took
        // most of a 20 s take-over), and the placement shares the cache's names. The
        // assignment keys are verified after the term is ready. The caches' first lists publish
        // no batch, so what they hold is read once they are ready.
        self.inner.resources.wait_ready().await;
        self.inner.statuses.wait_ready().await;
        self.inner.workers.wait_ready().await;
        self.reset_assignments();
        let (mut placement, scheduling, workers, workers_revision) = self.load_scheduling().await?;
        let snapshot = resource_changes.snapshot();
        let revision = snapshot.revision;
        let seeds: HashSet<&str> = self
            .inner
            .config
            .seeds
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let mut present: HashSet<String> = HashSet::new();
        let resources = snapshot.objects.len();
        let mut loaded: HashMap<String, (Resource, i64)> = HashMap::new();
        self.place(&mut placement, &snapshot);
        self.queue_schedules(&snapshot);
        for (name, entry) in &snapshot.objects {
            let r = &entry.value;
            if let Some(id) = r.id.as_u64() {
                self.inner.ids.advance_past(id);
            }
            if seeds.contains(&**name) {
                present.insert(name.to_string());
            }
            if placement.needs(name) {
                loaded.insert(name.to_string(), ((**r).clone(), entry.mod_revision));
            }
        }
        drop(snapshot);
        info!(
            revision,
            workers_revision,
            resources,
            workers,
            departed = scheduling.departed.len(),
            cordoned = scheduling.controls.len(),
            frozen = scheduling.frozen(),
            "leader loaded the scheduling state, resources and workers"
        );
        self.inner
            .metrics
            .frozen
            .set(i64::from(scheduling.frozen()));
        *self.placement() = placement;
        *self.scheduling() = scheduling;
        self.inner.applied.send_replace(revision);
        for seed in &self.inner.config.seeds {
            if present.contains(&seed.name) {
                continue;
            }
            let init = super::Init {
                labels: Default::default(),
                schedule: seed.schedule.clone(),
                constraints: seed.placement.clone(),
            };
            match self.create_fenced(fence, &seed.name, &init).await {
                Ok(created) => {
                    info!(name = %seed.name, node = %created.resource.assigned_node, "seed task added");
                    loaded.insert(seed.name.clone(), (created.resource, created.revision));
                }
                Err(WriteError::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        let lookup = |name: &str| loaded.get(name).cloned();
        loop {
            let moves = self.choose(|p| p.plan(MOVES, 0, 0, revision), Vec::len);
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
        Ok(Loaded {
            resources: revision,
            workers: workers_revision,
        })
    }
}

impl Leader {
    /// The scheduling state and the workers at etcd's current revision, in a new placement and
    /// scheduling; the number of workers and the revision.
    async fn load_scheduling(&self) -> Result<(Placement, Scheduling, usize, i64), WriteError> {
        let revision = self.current_revision().await?;
        let deadline = self.inner.config.request_timeout;
        let keys = &self.inner.config.keys;
        let client = &self.inner.client;
        let mut placement = Placement::new(self.inner.resources.clone());
        let mut scheduling = Scheduling::new(
            self.inner.config.scheduling.reassign_rate,
            crate::model::status::now_ms(),
        );
        list_prefix(client, &keys.schedule_prefix, revision, deadline, |kvs| {
            for (record, _) in decode_all::<Record>(&keys.schedule_prefix, &kvs) {
                match record {
                    Record::Control(id, control) => {
                        placement.set_cordoned(&id, true);
                        scheduling.controls.insert(id, control);
                    }
                    Record::Departed(id, d) => {
                        scheduling.recorded.insert(id.clone());
                        scheduling.departed.insert(id, d.at_ms);
                    }
                    Record::Storm(storm) => scheduling.storm = Some(storm),
                }
            }
        })
        .await?;
        let mut workers = 0usize;
        list_prefix(client, &keys.worker_prefix, revision, deadline, |kvs| {
            for (w, _) in decode_all::<Worker>(&keys.worker_prefix, &kvs) {
                placement.upsert_worker(&w.id, &w.address, w.capacity(), w.labels());
                // Back while no leader watched: it keeps its tasks.
                scheduling.departed.remove(&w.id);
                workers += 1;
            }
        })
        .await?;
        Ok((placement, scheduling, workers, revision))
    }
}

/// The revisions a take-over loaded the resources (from the cache) and the workers (from etcd)
/// at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loaded {
    /// The resources cache's revision.
    pub resources: i64,
    /// etcd's revision when the workers and the scheduling state were read.
    pub workers: i64,
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
