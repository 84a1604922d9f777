//! A short history every master keeps for the dashboard's trends: a sample every
//! `master.trends_sample_ms` (10 s: the last hour in [`KEEP`] samples), of tasks by state, the busiest workers' loads, and the
//! creates, moves and failures since the sample before.
//!
//! The counts come from the caches' indexes (no pass over every object), and the events from
//! the caches' coalescing subscriptions, so a slow sampler merges changes rather than falling
//! behind: a name changed twice between two reads counts once. A re-list is not counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::etcd::cache::{Change, Event, Store};
use crate::model::resource::Resource;
use crate::model::status::{TaskState, TaskStatus, now_ms};

/// Samples kept: an hour at the default interval.
pub const KEEP: usize = 360;
/// Workers whose load a sample keeps: the busiest (a fleet of thousands would otherwise cost
/// an hour of thousands of loads).
pub const TOP_WORKERS: usize = 12;

/// One sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When, Unix ms.
    pub at_ms: i64,
    /// Tasks by the state their workers report (`unknown`: none reported yet).
    pub states: BTreeMap<String, usize>,
    /// Resources no worker holds.
    pub unassigned: usize,
    /// Resources created since the sample before.
    pub creates: u64,
    /// Resources moved from one worker to another since the sample before.
    pub moves: u64,
    /// Tasks that became `failed` since the sample before.
    pub failures: u64,
    /// Load of the [`TOP_WORKERS`] busiest workers.
    pub loads: BTreeMap<String, usize>,
}

/// The history; cheap to clone, read by the API.
#[derive(Debug, Clone)]
pub struct Trends {
    samples: Arc<Mutex<VecDeque<Sample>>>,
    every: Duration,
}

impl Trends {
    /// An empty history sampled every `every` (at least 10 ms).
    pub fn new(every: Duration) -> Self {
        Self {
            samples: Arc::default(),
            every: every.max(Duration::from_millis(10)),
        }
    }

    /// Between two samples.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().iter().cloned().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.lock();
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts of what happened between two samples.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    creates: u64,
    moves: u64,
    failures: u64,
}

impl Tally {
    fn resources(&mut self, change: &Change<Resource>) {
        if change.relisted {
            return;
        }
        for event in &change.events {
            match event {
                Event::Added { .. } => self.creates += 1,
                Event::Modified { old, new, .. } => {
                    let (from, to) = (old.value.assigned_worker(), new.value.assigned_worker());
                    if from.is_some() && to.is_some() && from != to {
                        self.moves += 1;
                    }
                }
                Event::Deleted { .. } => {}
            }
        }
    }

    fn statuses(&mut self, change: &Change<TaskStatus>) {
        if change.relisted {
            return;
        }
        for event in &change.events {
            let (old, new) = match event {
                Event::Added { new, .. } => (None, new),
                Event::Modified { old, new, .. } => (Some(old), new),
                Event::Deleted { .. } => continue,
            };
            let was_failed = old.is_some_and(|o| o.value.state == TaskState::Failed);
            if new.value.state == TaskState::Failed && !was_failed {
                self.failures += 1;
            }
        }
    }
}

/// What the caches hold now, with `tally` since the sample before.
fn sample(resources: &Store<Resource>, statuses: &Store<TaskStatus>, tally: Tally) -> Sample {
    let (total, assigned, mut loads) = resources.with_index(|objects, index, _| {
        let loads: Vec<(String, usize)> = index.groups().map(|(w, n)| (w.to_owned(), n)).collect();
        (
            objects.len(),
            loads.iter().map(|(_, n)| n).sum::<usize>(),
            loads,
        )
    });
    loads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    loads.truncate(TOP_WORKERS);
    let mut states: BTreeMap<String, usize> = statuses.with_index(|_, index, _| {
        TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), index.count(s.as_str())))
            .collect()
    });
    let reported: usize = states.values().sum();
    states.insert("unknown".to_owned(), total.saturating_sub(reported));
    Sample {
        at_ms: now_ms(),
        states,
        unassigned: total.saturating_sub(assigned),
        creates: tally.creates,
        moves: tally.moves,
        failures: tally.failures,
        loads: loads.into_iter().collect(),
    }
}

/// Samples into `trends` until `cancel` fires.
pub async fn run(
    trends: Trends,
    resources: Store<Resource>,
    statuses: Store<TaskStatus>,
    cancel: CancellationToken,
) {
    let mut resource_changes = resources.subscribe();
    let mut status_changes = statuses.subscribe();
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(trends.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                if resources.is_ready() && statuses.is_ready() {
                    trends.push(sample(&resources, &statuses, std::mem::take(&mut tally)));
                }
            }
            change = resource_changes.recv() => match change {
                Some(change) => tally.resources(&change),
                None => return,
            },
            change = status_changes.recv() => match change {
                Some(change) => tally.statuses(&change),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_last_hour() {
        let trends = Trends::new(Duration::from_secs(10));
        for i in 0..(KEEP as i64 + 5) {
            trends.push(Sample {
                at_ms: i,
                ..Sample::default()
            });
        }
        let samples = trends.samples();
        assert_eq!(samples.len(), KEEP);
        assert_eq!(samples[0].at_ms, 5);
        assert_eq!(samples[KEEP - 1].at_ms, KEEP as i64 + 4);
    }

    fn entry(state: TaskState) -> crate::etcd::cache::Entry<TaskStatus> {
        crate::etcd::cache::Entry {
            value: Arc::new(TaskStatus {
                worker: "w".into(),
                epoch: 1,
                state,
                pid: None,
                started_at_ms: None,
                restarts: 0,
                exit_code: None,
                message: String::new(),
                summary: None,
                updated_at_ms: 0,
            }),
            create_revision: 1,
            mod_revision: 2,
        }
    }

    #[test]
    fn a_failure_counts_once_when_a_task_becomes_failed_and_a_relist_never() {
        let change = |events, relisted| Change {
            revision: 3,
            relisted,
            events,
        };
        let mut tally = Tally::default();
        tally.statuses(&change(
            vec![
                Event::Modified {
                    name: "a".into(),
                    old: entry(TaskState::Running),
                    new: entry(TaskState::Failed),
                },
                // Still failed: not a new failure.
                Event::Modified {
                    name: "b".into(),
                    old: entry(TaskState::Failed),
                    new: entry(TaskState::Failed),
                },
                Event::Added {
                    name: "c".into(),
                    new: entry(TaskState::Failed),
                },
                Event::Added {
                    name: "d".into(),
                    new: entry(TaskState::Running),
                },
            ],
            false,
        ));
        assert_eq!(tally.failures, 2);
        tally.statuses(&change(
            vec![Event::Added {
                name: "e".into(),
                new: entry(TaskState::Failed),
            }],
            true,
        ));
        assert_eq!(tally.failures, 2, "a re-list is not a failure");
    }
}
