//! `GET /api/v1/events`: a Server-Sent Events stream of worker and resource changes.
//!
//! A [`Feed`] follows the caches and keeps a bounded history. Each change is one event (`added`,
//! `modified`, `deleted`); the last event of a revision carries it as its SSE `id`, so a client
//! that reconnects with `Last-Event-ID: N` resumes after N and misses nothing. When the history no
//! longer reaches back to N it gets `relist`; a client that falls behind the live stream by more
//! than its buffer gets `dropped` and is disconnected, so no client holds memory without bound.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;

use super::extract::ApiQuery;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::etcd::cache::{Change, Event, Store};
use crate::model::registry::Worker;
use crate::model::resource::Resource;
use crate::model::status::TaskStatus;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A worker registration.
    Workers,
    /// A resource.
    Resources,
    /// A task's status, as its worker reports it.
    Statuses,
}

/// One change, as streamed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedEvent {
    /// `workers`, `resources` or `statuses`.
    pub kind: Kind,
    /// `added`, `modified` or `deleted`.
    pub action: &'static str,
    /// Worker node id, or resource name (for resources and statuses).
    pub name: String,
    /// etcd revision of the change.
    pub revision: i64,
    /// The object after the change (absent on delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
    /// True on the last change of its revision (the one that carries the SSE id).
    #[serde(skip)]
    pub closes_revision: bool,
    /// The event as JSON, made once for every subscriber.
    #[serde(skip)]
    data: std::sync::OnceLock<String>,
}

impl FeedEvent {
    /// The event as JSON; the first subscriber to send it serializes it.
    pub fn data(&self) -> &str {
        self.data
            .get_or_init(|| serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()))
    }
}

/// The data of a `relist` or `dropped` event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamNotice {
    /// Why the stream asks the client to list again or to reconnect.
    pub reason: String,
}

/// The data of any event on the stream: a change (`added`, `modified`, `deleted`), or a notice
/// (`relist`, `dropped`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StreamData {
    /// A change.
    Change(FeedEvent),
    /// A notice.
    Notice(StreamNotice),
}

struct Log {
    events: VecDeque<Arc<FeedEvent>>,
    /// Every change with a revision above this is in `events`.
    floor: i64,
    /// False until both caches finished their first list.
    started: bool,
}

/// The bounded history and live fan-out of changes. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    log: Arc<Mutex<Log>>,
    live: broadcast::Sender<Arc<FeedEvent>>,
    history: usize,
}

/// Where a subscriber starts.
pub enum Resume {
    /// These kept changes first, then the live stream.
    Replay(Vec<Arc<FeedEvent>>),
    /// The history does not reach back far enough: list again.
    Relist,
}

impl Feed {
    /// A feed keeping `history` changes and buffering `buffer` live ones per subscriber.
    pub fn new(history: usize, buffer: usize) -> Self {
        Self {
            log: Arc::new(Mutex::new(Log {
                events: VecDeque::new(),
                floor: i64::MAX,
                started: false,
            })),
            live: broadcast::channel(buffer.max(1)).0,
            history: history.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts keeping history: changes above `revision` are complete from now on.
    pub fn start(&self, revision: i64) {
        let mut log = self.lock();
        if !log.started {
            log.started = true;
            log.floor = revision;
        }
    }

    /// Appends changes and sends them to live subscribers.
    pub fn publish(&self, events: Vec<FeedEvent>) {
        let mut log = self.lock();
        if !log.started {
            return;
        }
        for event in events {
            let event = Arc::new(event);
            log.events.push_back(Arc::clone(&event));
            // No subscriber is fine.
            let _ = self.live.send(event);
        }
        while log.events.len() > self.history {
            if let Some(old) = log.events.pop_front() {
                log.floor = log.floor.max(old.revision);
            }
        }
    }

    /// Subscribes, resuming after revision `after` when given.
    pub fn subscribe(&self, after: Option<i64>) -> (Resume, broadcast::Receiver<Arc<FeedEvent>>) {
        let log = self.lock();
        // Under the lock: nothing is both replayed and received live, nothing falls between.
        let live = self.live.subscribe();
        let resume = match after {
            None => Resume::Replay(Vec::new()),
            Some(n) if log.started && n >= log.floor => {
                // The two caches' batches arrive in their own order, so a batch with a lower
                // revision can follow one with a higher. When this master sent `n`, resume
                // right after where it sent it; otherwise (an id from another master) send
                // everything kept above `n`.
                let sent_here = log
                    .events
                    .iter()
                    .rposition(|e| e.revision == n && e.closes_revision);
                Resume::Replay(match sent_here {
                    Some(at) => log.events.iter().skip(at + 1).cloned().collect(),
                    None => log
                        .events
                        .iter()
                        .filter(|e| e.revision > n)
                        .cloned()
                        .collect(),
                })
            }
            Some(_) => Resume::Relist,
        };
        (resume, live)
    }
}

fn to_events<T>(
    kind: Kind,
    change: &Change<T>,
    object: impl Fn(&T) -> Option<serde_json::Value>,
) -> Vec<FeedEvent> {
    let count = change.events.len();
    change
        .events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let (action, value) = match event {
                Event::Added { new, .. } => ("added", object(&new.value)),
                Event::Modified { new, .. } => ("modified", object(&new.value)),
                Event::Deleted { .. } => ("deleted", None),
            };
            FeedEvent {
                kind,
                action,
                name: event.name().to_owned(),
                revision: change.revision,
                object: value,
                closes_revision: i + 1 == count,
                data: Default::default(),
            }
        })
        .collect()
}

fn worker_object(worker: &Worker) -> Option<serde_json::Value> {
    // A registration event: load and operators' state are not part of it.
    let mut value = serde_json::to_value(super::views::view(worker, 0, None)).ok()?;
    if let Some(map) = value.as_object_mut() {
        map.remove("load");
        map.remove("state");
    }
    Some(value)
}

fn resource_object(resource: &Resource) -> Option<serde_json::Value> {
    serde_json::to_value(super::resources::ResourceView::of(resource)).ok()
}

fn status_object(status: &TaskStatus) -> Option<serde_json::Value> {
    serde_json::to_value(status).ok()
}

/// The caches' first lists are not changes; watch events above the older cache's revision are.
fn is_fresh<T>(change: &Change<T>, oldest: i64, newest: i64) -> bool {
    if change.relisted {
        change.revision > newest
    } else {
        change.revision > oldest
    }
}

/// Feeds `feed` from the workers, resources and statuses caches until `cancel` fires.
pub async fn run(
    feed: Feed,
    workers: Store<Worker>,
    resources: Store<Resource>,
    statuses: Store<TaskStatus>,
    cancel: CancellationToken,
) {
    let mut worker_changes = workers.subscribe();
    let mut resource_changes = resources.subscribe();
    let mut status_changes = statuses.subscribe();
    tokio::select! {
        () = cancel.cancelled() => return,
        () = async {
            workers.wait_ready().await;
            resources.wait_ready().await;
            statuses.wait_ready().await;
        } => {}
    }
    // The first lists are not changes; watch events above the oldest cache's revision are.
    let revisions = [
        workers.revision(),
        resources.revision(),
        statuses.revision(),
    ];
    let oldest = revisions.iter().copied().min().unwrap_or(0);
    let newest = revisions.iter().copied().max().unwrap_or(0);
    feed.start(oldest);

    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            change = worker_changes.recv() => match change {
                Some(c) if is_fresh(&c, oldest, newest) => {
                    feed.publish(to_events(Kind::Workers, &c, worker_object));
                }
                Some(_) => {}
                None => return,
            },
            change = resource_changes.recv() => match change {
                Some(c) if is_fresh(&c, oldest, newest) => {
                    feed.publish(to_events(Kind::Resources, &c, resource_object));
                }
                Some(_) => {}
                None => return,
            },
            change = status_changes.recv() => match change {
                Some(c) if is_fresh(&c, oldest, newest) => {
                    feed.publish(to_events(Kind::Statuses, &c, status_object));
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// Query of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only changes of this kind: `workers`, `resources` or `statuses`.
    pub kind: Option<Kind>,
}

fn sse(event: &FeedEvent) -> SseEvent {
    let mut out = SseEvent::default().event(event.action).data(event.data());
    if event.closes_revision {
        out = out.id(event.revision.to_string());
    }
    out
}

/// A `relist` or `dropped` event.
fn notice(event: &'static str, reason: &str) -> SseEvent {
    let data = StreamData::Notice(StreamNotice {
        reason: reason.to_owned(),
    });
    SseEvent::default()
        .event(event)
        .data(serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned()))
}

struct Subscriber {
    replay: std::vec::IntoIter<Arc<FeedEvent>>,
    live: broadcast::Receiver<Arc<FeedEvent>>,
    kind: Option<Kind>,
    relist: bool,
    done: bool,
}

/// Streams worker and resource changes as Server-Sent Events.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "stream_events",
    params(EventsQuery,
        ("last-event-id" = Option<i64>, Header, description = "Resume after this revision")),
    responses(
        (status = 200, description = "An event stream (text/event-stream). Events: added, modified, deleted (data: FeedEvent, id: revision on the last change of a revision); relist (history too short: list again); dropped (too slow: reconnect).",
            content_type = "text/event-stream", body = StreamData)))]
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_field("Last-Event-ID", "Last-Event-ID must be a revision")
                })?,
        ),
    };
    let (resume, live) = state.feed.subscribe(after);
    let (replay, relist) = match resume {
        Resume::Replay(events) => (events, false),
        Resume::Relist => (Vec::new(), true),
    };
    let subscriber = Subscriber {
        replay: replay.into_iter(),
        live,
        kind: query.kind,
        relist,
        done: false,
    };
    let events = futures_util::stream::unfold(subscriber, |mut s| async move {
        if s.done {
            return None;
        }
        if s.relist {
            s.relist = false;
            let e = notice(
                "relist",
                "the history no longer reaches back to Last-Event-ID; list again",
            );
            return Some((Ok(e), s));
        }
        for event in s.replay.by_ref() {
            if s.kind.is_none_or(|k| k == event.kind) {
                return Some((Ok(sse(&event)), s));
            }
        }
        loop {
            match s.live.recv().await {
                Ok(event) if s.kind.is_none_or(|k| k == event.kind) => {
                    return Some((Ok(sse(&event)), s));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    s.done = true;
                    let e = notice(
                        "dropped",
                        "this client fell too far behind; reconnect with Last-Event-ID",
                    );
                    return Some((Ok(e), s));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // Streams end when the master starts shutting down, so draining is not held up by them.
    let events = events.take_until(state.draining.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: i64, name: &str) -> FeedEvent {
        FeedEvent {
            kind: Kind::Resources,
            action: "added",
            name: name.into(),
            revision,
            object: None,
            closes_revision: true,
            data: Default::default(),
        }
    }

    #[test]
    fn resumes_after_a_revision_or_asks_to_relist() {
        let feed = Feed::new(3, 16);
        feed.publish(vec![event(1, "ignored before start")]);
        feed.start(10);
        feed.publish(vec![event(11, "a"), event(12, "b")]);
        let (resume, _) = feed.subscribe(Some(11));
        let Resume::Replay(events) = resume else {
            panic!("expected a replay")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "b");
        assert!(matches!(feed.subscribe(Some(9)).0, Resume::Relist));
        // History is bounded: older changes fall out and the floor rises.
        feed.publish(vec![event(13, "c"), event(14, "d")]);
        assert!(matches!(feed.subscribe(Some(10)).0, Resume::Relist));
        let Resume::Replay(events) = feed.subscribe(Some(11)).0 else {
            panic!("expected a replay")
        };
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn a_lower_revision_arriving_later_is_not_lost_on_resume() {
        let feed = Feed::new(100, 16);
        feed.start(10);
        // A resources batch at 12 is published before a workers batch at 11.
        feed.publish(vec![event(12, "resource")]);
        let mut worker = event(11, "worker");
        worker.kind = Kind::Workers;
        feed.publish(vec![worker]);
        // A client that received only the first (id 12) resumes: it gets the second.
        let Resume::Replay(events) = feed.subscribe(Some(12)).0 else {
            panic!("expected a replay")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "worker");
    }

    #[tokio::test]
    async fn live_subscribers_receive_and_a_slow_one_lags() {
        let feed = Feed::new(100, 2);
        feed.start(0);
        let (_, mut rx) = feed.subscribe(None);
        feed.publish(vec![event(1, "a")]);
        assert_eq!(rx.recv().await.map(|e| e.revision).ok(), Some(1));
        feed.publish(vec![event(2, "b"), event(3, "c"), event(4, "d")]);
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
