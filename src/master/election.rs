//! Leader election through etcd's v3 election API, on a session lease this code keeps alive.
//!
//! ```text
//!   grant lease ─► campaign ──won──► verify ──ok──► Won ─► (take-over) ─► Ready
//!        ▲            │ own key gone,   │ not ours              │ lease lost, fence failed,
//!        └────────────┴─ lease lost ────┴── revoke ◄── resign ◄─┘ another leader seen
//! ```
//!
//! etcd's Campaign does not re-check the lease after waiting, so a win is verified first: our
//! key is the oldest, on our lease, and the lease lives. The candidates cache ([`Candidate`])
//! mirrors the election prefix, so every master knows the leader without asking etcd.

use std::time::Duration;

use etcd_client::{Client, GetOptions, ResignOptions, SortOrder, SortTarget};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::etcd::backoff::Backoff;
use crate::etcd::cache::{DecodeError, Object, Store};
use crate::etcd::lease::{self, LeaseEnd};
use crate::etcd::{EtcdError, timed};
use crate::master::leadership::{Fence, Leadership};

/// A master taking part in the election, as its campaign value says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The master's id.
    pub id: u16,
    /// The URL other masters and clients reach it on.
    pub url: String,
}

impl Object for Candidate {
    fn decode(_name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(value)
            .map_err(|e| DecodeError::new(format!("not a campaign value: {e}")))
    }
}

/// The leader as the candidates cache shows it: the candidate whose key is oldest.
pub fn leader_of(candidates: &Store<Candidate>) -> Option<(String, Candidate, i64)> {
    candidates.with(|objects, _| {
        objects
            .iter()
            .min_by_key(|(_, e)| e.create_revision)
            .map(|(name, e)| (name.to_string(), (*e.value).clone(), e.create_revision))
    })
}

/// A term at least this long resets the backoff between campaigns.
const STABLE_TERM: Duration = Duration::from_secs(30);

/// What the election needs.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Election name (`/crawler/election`); keys are `<name>/<lease hex>`.
    pub name: String,
    /// This master.
    pub me: Candidate,
    /// Session TTL in seconds.
    pub ttl_secs: i64,
    /// Deadline for unary requests.
    pub request_timeout: Duration,
}

impl ElectionConfig {
    fn key_of(&self, lease: i64) -> String {
        format!("{}/{lease:x}", self.name)
    }
}

/// Campaigns, leads and campaigns again until `cancel` fires; then resigns and revokes.
pub async fn run(
    client: Client,
    config: ElectionConfig,
    leadership: Leadership,
    candidates: Store<Candidate>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let value = match serde_json::to_string(&config.me) {
        Ok(v) => v,
        Err(error) => {
            warn!(%error, "cannot encode campaign value; not campaigning");
            return;
        }
    };
    while !cancel.is_cancelled() {
        let lease = match lease::grant(&client, config.ttl_secs, config.request_timeout).await {
            Ok(lease) => lease,
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot grant session lease");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let session = cancel.child_token();
        let session_started = tokio::time::Instant::now();
        // The keep-alive runs in this task, so that aborting the task (a crash in tests) also
        // stops it and the lease expires as a dead process's would.
        let keeper = async {
            let end = lease::keep_alive(
                &client,
                lease,
                config.ttl_secs,
                config.request_timeout,
                &session,
                None,
            )
            .await;
            if let LeaseEnd::Lost(reason) = &end {
                warn!(lease, %reason, "election session lost");
            }
            session.cancel();
        };
        let leading = async {
            let outcome = term(
                &client,
                &config,
                &value,
                lease,
                &leadership,
                &candidates,
                &session,
            )
            .await;
            // Not ready first, then resign and revoke.
            if let Some(fence) = &outcome {
                leadership.step_down(fence);
            }
            session.cancel();
            outcome
        };
        let ((), outcome) = tokio::join!(keeper, leading);
        if let Some(fence) = &outcome {
            resign(&client, &config, fence).await;
        }
        lease::revoke(&client, lease, config.request_timeout).await;
        // A long term forgives past failures; a session or term that ended quickly (a take-over
        // that failed, a lease lost at once) waits with growing backoff, never a hot loop.
        if outcome.is_some() && session_started.elapsed() >= STABLE_TERM {
            backoff.reset();
        }
        if !cancel.is_cancelled() {
            let delay = backoff.next_delay();
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// One session: campaign, verify, lead. Returns the fence if we led.
async fn term(
    client: &Client,
    config: &ElectionConfig,
    value: &str,
    lease: i64,
    leadership: &Leadership,
    candidates: &Store<Candidate>,
    session: &CancellationToken,
) -> Option<Fence> {
    let won = tokio::select! {
        () = session.cancelled() => return None,
        () = own_key_vanishes(client, config, lease) => {
            warn!(lease, "our campaign key vanished while campaigning; starting over");
            return None;
        }
        r = async {
            let mut election = client.election_client();
            election.campaign(config.name.as_bytes(), value.as_bytes(), lease).await
        } => r,
    };
    let leader = match won {
        Ok(mut resp) => resp.take_leader()?,
        Err(error) => {
            warn!(%error, "campaign failed");
            return None;
        }
    };
    let fence = Fence {
        key: String::from_utf8_lossy(leader.key()).into_owned(),
        create_revision: leader.rev(),
        lease,
    };
    match verify(client, config, &fence).await {
        Ok(true) => {}
        Ok(false) => {
            warn!(key = %fence.key, "campaign returned but we do not hold the oldest live key");
            return None;
        }
        Err(error) => {
            warn!(%error, "could not verify the campaign; starting over");
            return None;
        }
    }
    info!(id = config.me.id, key = %fence.key, revision = fence.create_revision, "elected leader");
    leadership.won(fence.clone());
    lead(config, &fence, leadership, candidates, session).await;
    Some(fence)
}

/// Completes when our campaign key, once created, is gone.
async fn own_key_vanishes(client: &Client, config: &ElectionConfig, lease: i64) {
    let key = config.key_of(lease);
    let mut seen = false;
    let mut misses = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut kv = client.kv_client();
        match timed(config.request_timeout, kv.get(key.as_bytes(), None)).await {
            Ok(resp) if resp.kvs().is_empty() => {
                misses += 1;
                // Before the server created it, the key may legitimately be missing.
                if seen || misses >= 4 {
                    return;
                }
            }
            Ok(_) => {
                seen = true;
                misses = 0;
            }
            Err(_) => {}
        }
    }
}

/// True when `fence` is the oldest key under the election, on our lease, and the lease lives.
async fn verify(
    client: &Client,
    config: &ElectionConfig,
    fence: &Fence,
) -> Result<bool, EtcdError> {
    let mut kv = client.kv_client();
    let prefix = format!("{}/", config.name);
    let oldest = timed(
        config.request_timeout,
        kv.get(
            prefix.as_bytes(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(1),
            ),
        ),
    )
    .await?;
    let Some(first) = oldest.kvs().first() else {
        return Ok(false);
    };
    if first.key() != fence.key.as_bytes()
        || first.lease() != fence.lease
        || first.create_revision() != fence.create_revision
    {
        return Ok(false);
    }
    let mut leases = client.lease_client();
    let ttl = timed(
        config.request_timeout,
        leases.time_to_live(fence.lease, None),
    )
    .await?;
    Ok(ttl.ttl() > 0)
}

/// Leads until the session ends, the term is ended elsewhere, or another leader is seen.
async fn lead(
    config: &ElectionConfig,
    fence: &Fence,
    leadership: &Leadership,
    candidates: &Store<Candidate>,
    session: &CancellationToken,
) {
    let mut term = leadership.subscribe();
    let mut changes = candidates.subscribe();
    loop {
        if term.borrow_and_update().fence() != Some(fence) {
            info!(
                id = config.me.id,
                "leadership ended (a write was fenced off)"
            );
            return;
        }
        if candidates.revision() >= fence.create_revision
            && let Some((key, other, _)) = leader_of(candidates)
            && format!("{}/{key}", config.name) != fence.key
        {
            warn!(
                id = config.me.id,
                other = other.id,
                "another leader is observed; stepping down"
            );
            return;
        }
        tokio::select! {
            () = session.cancelled() => return,
            changed = term.changed() => if changed.is_err() { return },
            change = changes.recv() => if change.is_none() { return },
        }
    }
}

async fn resign(client: &Client, config: &ElectionConfig, fence: &Fence) {
    let mut election = client.election_client();
    let leader = etcd_client::LeaderKey::new()
        .with_name(config.name.as_bytes())
        .with_key(fence.key.as_bytes())
        .with_rev(fence.create_revision)
        .with_lease(fence.lease);
    match timed(
        config.request_timeout,
        election.resign(Some(ResignOptions::new().with_leader(leader))),
    )
    .await
    {
        Ok(_) => info!(key = %fence.key, "resigned leadership"),
        Err(error) => warn!(%error, "could not resign; revoking the lease ends the term"),
    }
}
