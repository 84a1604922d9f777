//! The masters compact etcd's history: nothing else would, and an uncompacted etcd grows with
//! every write (statuses are written many times per task) until it reaches its quota and
//! refuses writes.
//!
//! The protocol is the Kubernetes apiserver's, so that leader changes cannot stop it (a term
//! shorter than the interval would never compact). Every master runs a round each interval. A
//! round is one txn on the compaction key: if the key's version (the rounds so far) is the one
//! this master saw at its last round, it claims the round (puts, bumping the version) and
//! compacts to the revision it read at its last round; otherwise it adopts the version and
//! compacts nothing. So about one master per interval compacts, history of at least one
//! interval is kept (between one and two when masters fail), and a master that dies leaves
//! the rounds to the others.
//!
//! A watch that lags by less than an interval resumes; one that lags more lists again.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::etcd::EtcdError;
use crate::etcd::client::timed;
use crate::metrics::Metrics;

/// What the compactor needs.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// How often to run a round, and how much history to keep. Zero: never compact.
    pub interval: Duration,
    /// The compaction clock's key.
    pub key: String,
    /// Deadline for one etcd request.
    pub request_timeout: Duration,
}

/// What this master knows of the rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Clock {
    /// The compaction key's version at this master's last round.
    version: i64,
    /// etcd's revision at this master's last round (0: none yet).
    revision: i64,
}

/// How a round's txn went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// This master claimed the round at etcd revision `now`.
    Claimed { now: i64 },
    /// Another master ran a round since; the key is at `version`, etcd at revision `now`.
    Lost { version: i64, now: i64 },
}

impl Clock {
    /// The clock after `round`, and the revision to compact to, if this master should.
    fn after(self, round: Round) -> (Clock, Option<i64>) {
        match round {
            Round::Claimed { now } => (
                Clock {
                    version: self.version + 1,
                    revision: now,
                },
                (self.revision > 0).then_some(self.revision),
            ),
            Round::Lost { version, now } => (
                Clock {
                    version,
                    revision: now,
                },
                None,
            ),
        }
    }
}

/// Runs a compaction round every interval until `cancel` fires.
pub async fn run(
    client: Client,
    config: CompactorConfig,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    if config.interval.is_zero() {
        return;
    }
    let mut clock = Clock::default();
    let start = tokio::time::Instant::now() + config.interval;
    let mut tick = tokio::time::interval_at(start, config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let round = match claim(&client, &config, clock).await {
            Ok(round) => round,
            Err(error) => {
                warn!(%error, "a compaction round failed; trying again next interval");
                continue;
            }
        };
        let (next, compact_to) = clock.after(round);
        clock = next;
        let Some(revision) = compact_to else {
            continue;
        };
        match compact(&client, revision, config.request_timeout).await {
            Ok(()) => {
                metrics.compactions.inc();
                metrics.compacted_revision.set(revision);
                debug!(revision, "compacted etcd's history");
            }
            Err(error) => warn!(revision, %error, "compacting etcd's history failed"),
        }
    }
}

/// The round's txn: put the revision of this master's last round if the key's version is the
/// one it saw then, else read the key.
async fn claim(
    client: &Client,
    config: &CompactorConfig,
    clock: Clock,
) -> Result<Round, EtcdError> {
    let key = config.key.as_str();
    let txn = Txn::new()
        .when([Compare::version(key, CompareOp::Equal, clock.version)])
        .and_then([TxnOp::put(key, clock.revision.to_string(), None)])
        .or_else([TxnOp::get(key, None)]);
    let mut kv = client.kv_client();
    let resp = timed(config.request_timeout, kv.txn(txn)).await?;
    let now = resp.header().map_or(0, |h| h.revision());
    if resp.succeeded() {
        return Ok(Round::Claimed { now });
    }
    let version = resp
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.version())),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Round::Lost { version, now })
}

/// Compacts etcd's history up to `revision`. History already compacted past it is success.
async fn compact(client: &Client, revision: i64, deadline: Duration) -> Result<(), EtcdError> {
    let mut kv = client.kv_client();
    match timed(deadline, kv.compact(revision, None)).await {
        Err(EtcdError::Client(e)) if e.to_string().contains("has been compacted") => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claimed_round_compacts_nothing_and_the_next_compacts_to_its_revision() {
        let (clock, to) = Clock::default().after(Round::Claimed { now: 100 });
        assert_eq!(to, None);
        assert_eq!(
            clock,
            Clock {
                version: 1,
                revision: 100
            }
        );
        let (clock, to) = clock.after(Round::Claimed { now: 250 });
        assert_eq!(to, Some(100));
        assert_eq!(clock.version, 2);
        assert_eq!(clock.revision, 250);
    }

    #[test]
    fn a_lost_round_adopts_the_version_and_compacts_nothing() {
        let mine = Clock {
            version: 3,
            revision: 400,
        };
        let (clock, to) = mine.after(Round::Lost {
            version: 5,
            now: 900,
        });
        assert_eq!(to, None);
        assert_eq!(
            clock,
            Clock {
                version: 5,
                revision: 900
            }
        );
        // Its next round, if nobody ran one since, compacts to what it read when it lost:
        // one interval old.
        assert_eq!(clock.after(Round::Claimed { now: 1_200 }).1, Some(900));
    }

    /// Two masters ticking in turn: only one round in each pair claims and compacts.
    #[test]
    fn two_masters_alternating_compact_once_per_pair_of_ticks() {
        let mut version = 0i64;
        let mut clocks = [Clock::default(); 2];
        let mut compactions = 0;
        let mut revision = 10;
        for tick in 0..20 {
            let who = tick % 2;
            revision += 7;
            let round = if clocks[who].version == version {
                version += 1;
                Round::Claimed { now: revision }
            } else {
                Round::Lost {
                    version,
                    now: revision,
                }
            };
            let (clock, to) = clocks[who].after(round);
            clocks[who] = clock;
            compactions += usize::from(to.is_some());
        }
        // 20 ticks of two masters, 10 intervals: one claim per interval, the first compacts
        // nothing.
        assert_eq!(version, 10);
        assert_eq!(compactions, 9);
    }
}
