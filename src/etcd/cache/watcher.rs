//! The watcher state machine that keeps a [`Writer`] in step with one etcd prefix.
//!
//! ```text
//!   List ──ok──► Watch(from R) ──compacted──► List
//!    │ error        │ error / dead stream
//!    ▼              ▼
//!   backoff, List  backoff, Watch(from last seen + 1)
//! ```
//!
//! A stream with nothing (event or progress report) for `dead_after` is dead; a progress report
//! is asked for every `progress_interval`, so a healthy quiet stream always has something to say.
//! A reader waiting for a revision the cache has not reached has reports asked for at once, so a
//! quiet prefix catches up with etcd in milliseconds, not a progress interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, KeyValue, WatchOptions};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::event::{Entry, Name};
use super::progress::Progress;
use super::store::{Update, Writer};
use super::{DecodeError, Object};
use crate::etcd::backoff::Backoff;
use crate::etcd::{EtcdError, list_prefix, timed};

/// How soon a reader still waiting for a revision gets another progress request: each answer
/// proves the one before it (see [`Progress`]), so a reader waits about this long.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(5);

/// How a watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The key prefix to mirror.
    pub prefix: String,
    /// Deadline for the list request and for creating a watch.
    pub request_timeout: Duration,
    /// How often to ask etcd for a progress report on a quiet stream.
    pub progress_interval: Duration,
    /// Silence after which a stream is declared dead.
    pub dead_after: Duration,
}

impl WatchConfig {
    /// Defaults that notice a dead stream within about three seconds.
    pub fn new(prefix: impl Into<String>, request_timeout: Duration) -> Self {
        Self {
            prefix: prefix.into(),
            request_timeout,
            progress_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
        }
    }
}

/// Why a watch stream ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The revision to resume from was compacted: only a new list can catch up.
    #[error("revision compacted (etcd has history from {0})")]
    Compacted(i64),
    /// A request failed or timed out.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// etcd canceled the watch for another reason (e.g. the member lost its leader).
    #[error("watch canceled by etcd: {0}")]
    Canceled(String),
    /// The stream closed.
    #[error("watch stream ended")]
    Ended,
    /// Nothing arrived for too long.
    #[error("no word from etcd for {0:?}; stream presumed dead")]
    Dead(Duration),
}

impl From<etcd_client::Error> for WatchError {
    fn from(e: etcd_client::Error) -> Self {
        Self::Etcd(EtcdError::Client(e))
    }
}

enum Phase {
    List,
    Watch { from: i64 },
}

/// Mirrors `config.prefix` into `writer` until `cancel` fires.
pub async fn run<T: Object>(
    client: Client,
    config: WatchConfig,
    writer: Writer<T>,
    cancel: CancellationToken,
) {
    let kind = writer_kind(&config);
    let mut backoff = Backoff::default();
    let mut phase = Phase::List;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let outcome = match phase {
            Phase::List => match list(&client, &config, &writer).await {
                Ok(revision) => {
                    info!(cache = %kind, revision, "listed");
                    Ok(revision + 1)
                }
                Err(e) => Err(WatchError::Etcd(e)),
            },
            Phase::Watch { from } => {
                let result = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = watch(&client, &config, &writer, from, &mut backoff) => r,
                };
                writer.set_live(false);
                result.map(|()| writer.revision() + 1)
            }
        };
        match outcome {
            Ok(from) => {
                phase = Phase::Watch { from };
            }
            Err(WatchError::Compacted(compact_revision)) => {
                warn!(cache = %kind, compact_revision, "watch revision compacted; listing again");
                phase = Phase::List;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(cache = %kind, %error, retry_in_ms = delay.as_millis() as u64, "watch failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                if let Phase::Watch { .. } = phase {
                    phase = Phase::Watch {
                        from: writer.revision() + 1,
                    };
                }
            }
        }
    }
}

fn writer_kind(config: &WatchConfig) -> String {
    config.prefix.clone()
}

/// Lists the prefix and swaps the result in. Returns the list's revision.
async fn list<T: Object>(
    client: &Client,
    config: &WatchConfig,
    writer: &Writer<T>,
) -> Result<i64, EtcdError> {
    // Collected in key order and built at once: a map built by inserting sorted keys one by one
    // leaves every node half full (about 78 bytes per entry, against 45 built in bulk).
    let mut objects = Vec::new();
    let revision = list_prefix(client, &config.prefix, 0, config.request_timeout, |kvs| {
        for kv in &kvs {
            if let Some(Update::Put {
                name,
                value,
                create_revision,
                mod_revision,
            }) = decode_kv::<T>(&config.prefix, kv, writer)
            {
                let entry = Entry {
                    value: Arc::new(value),
                    create_revision,
                    mod_revision,
                };
                objects.push((name, entry));
            }
        }
    })
    .await?;
    writer.replace(objects.into_iter().collect::<BTreeMap<_, _>>(), revision);
    Ok(revision)
}

/// Decodes one key-value pair into a `Put`, logging and counting a malformed one.
fn decode_kv<T: Object>(prefix: &str, kv: &KeyValue, writer: &Writer<T>) -> Option<Update<T>> {
    let name = match name_of(prefix, kv.key()) {
        Ok(name) => name,
        Err(error) => {
            writer.count_malformed();
            warn!(prefix, key = %String::from_utf8_lossy(kv.key()), %error, "skipping malformed key");
            return None;
        }
    };
    match T::decode(&name, kv.value()) {
        Ok(value) => Some(Update::Put {
            name: value.key().unwrap_or(name),
            value,
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }),
        Err(error) => {
            writer.count_malformed();
            warn!(prefix, %name, %error, "skipping malformed value");
            None
        }
    }
}

/// The name of `key` under `prefix`: it must be UTF-8 and a direct child of the prefix.
pub fn name_of(prefix: &str, key: &[u8]) -> Result<Name, DecodeError> {
    let key = std::str::from_utf8(key).map_err(|_| DecodeError::new("key is not UTF-8"))?;
    let name = key
        .strip_prefix(prefix)
        .ok_or_else(|| DecodeError::new("key outside prefix"))?;
    if name.is_empty() || name.contains('/') {
        return Err(DecodeError::new("key is not a direct child of the prefix"));
    }
    Ok(Name::from(name))
}

/// Watches from `from` until the stream fails. Never returns `Ok` on its own.
async fn watch<T: Object>(
    client: &Client,
    config: &WatchConfig,
    writer: &Writer<T>,
    from: i64,
    backoff: &mut Backoff,
) -> Result<(), WatchError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_progress_notify()
        .with_start_revision(from);
    let mut watch_client = client.watch_client();
    let (mut requests, mut responses) = timed(
        config.request_timeout,
        watch_client.watch(config.prefix.as_bytes(), Some(options)),
    )
    .await?
    .split();
    let mut last_heard = Instant::now();
    let mut progress = Progress::new(Instant::now(), config.progress_interval);
    // When the one progress request in flight was sent (see `Progress`).
    let mut asked: Option<Instant> = None;
    // When to ask (again) for a reader waiting for a revision: at once on its cue, or shortly
    // after an answer that did not get it there; sent when no request is in flight.
    let mut again: Option<Instant> = None;
    let mut ticker = tokio::time::interval(config.progress_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let idle = asked.is_none();
        tokio::select! {
            _ = ticker.tick() => {
                let silent = last_heard.elapsed();
                if silent > config.dead_after {
                    return Err(WatchError::Dead(silent));
                }
                if let Some(at) = asked
                    && at.elapsed() > config.progress_interval
                {
                    // The answer went missing: a late one must not pass for the next.
                    progress.unsettle(Instant::now());
                    asked = None;
                }
                if asked.is_none() {
                    requests.request_progress().await?;
                    asked = Some(Instant::now());
                }
            }
            () = writer.wanted(), if again.is_none() => again = Some(Instant::now()),
            () = tokio::time::sleep_until(again.unwrap_or_else(Instant::now)),
                if idle && again.is_some() =>
            {
                again = None;
                if writer.progress_wanted() {
                    requests.request_progress().await?;
                    asked = Some(Instant::now());
                }
            }
            message = responses.message() => {
                let Some(resp) = message? else {
                    return Err(WatchError::Ended);
                };
                last_heard = Instant::now();
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        return Err(WatchError::Compacted(resp.compact_revision()));
                    }
                    return Err(WatchError::Canceled(resp.cancel_reason().to_owned()));
                }
                if resp.compact_revision() > 0 {
                    return Err(WatchError::Compacted(resp.compact_revision()));
                }
                if resp.created() {
                    writer.set_live(true);
                    backoff.reset();
                    progress = Progress::new(Instant::now(), config.progress_interval);
                    debug!(prefix = %config.prefix, from, "watch created");
                    continue;
                }
                let events = resp.events();
                if events.is_empty() {
                    let Some(header) = resp.header() else { continue };
                    if resp.watch_id() >= 0 {
                        // etcd's own periodic report, in order with the events.
                        writer.advance(header.revision());
                    } else {
                        asked = None;
                        if let Some(believed) = progress.on_answer(header.revision(), last_heard) {
                            writer.advance(believed);
                        }
                        if writer.progress_wanted() {
                            again = Some(last_heard + ASK_AGAIN_AFTER);
                        }
                    }
                    continue;
                }
                if let Some(first) = events.iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).min() {
                    progress.on_event(first);
                }
                // One response can carry several revisions: each becomes its own batch, in
                // order, so every change is reported at its own revision.
                let mut updates = Vec::with_capacity(events.len());
                let mut revision = 0;
                for event in events {
                    let Some(kv) = event.kv() else { continue };
                    if kv.mod_revision() != revision && !updates.is_empty() {
                        writer.apply(std::mem::take(&mut updates), revision);
                    }
                    revision = kv.mod_revision();
                    match event.event_type() {
                        EventType::Put => match decode_kv::<T>(&config.prefix, kv, writer) {
                            Some(put) => updates.push(put),
                            None => {
                                // The key now holds garbage: whatever was cached is gone.
                                if let Ok(name) = name_of(&config.prefix, kv.key()) {
                                    updates.push(Update::Remove { name });
                                }
                            }
                        },
                        EventType::Delete => {
                            // The previous value may be missing; the cache has its own.
                            if let Ok(name) = name_of(&config.prefix, kv.key()) {
                                updates.push(Update::Remove { name });
                            }
                        }
                    }
                }
                if !updates.is_empty() {
                    writer.apply(updates, revision);
                } else if revision > 0 {
                    // Only keys outside the layout changed: the revision still moved.
                    writer.advance(revision);
                }
            }
        }
    }
}
