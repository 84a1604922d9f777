//! etcd leases kept alive by this code, since etcd-client neither loops keep-alives nor
//! reopens a broken keep-alive stream.
//!
//! [`keep_alive`] refreshes a lease every third of its TTL, reopens the stream when it breaks,
//! and reports the lease lost when etcd says it expired, or when no refresh has been confirmed
//! for a whole TTL counted from the moment the last confirmed refresh was *sent* (so the holder
//! gives up no later than etcd could expire it). Workers use it for their registration, masters
//! for their election session.

use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::etcd::backoff::Backoff;
use crate::etcd::{EtcdError, timed};

/// Why [`keep_alive`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The token was cancelled; the lease is still alive and the caller should revoke it.
    Cancelled,
    /// The lease is gone or may be gone.
    Lost(String),
}

/// Grants a lease of `ttl_secs`.
pub async fn grant(client: &Client, ttl_secs: i64, deadline: Duration) -> Result<i64, EtcdError> {
    let mut leases = client.lease_client();
    Ok(timed(deadline, leases.grant(ttl_secs, None)).await?.id())
}

/// Revokes a lease, logging (not returning) a failure: an unrevoked lease still expires.
pub async fn revoke(client: &Client, lease: i64, deadline: Duration) -> bool {
    let mut leases = client.lease_client();
    match timed(deadline, leases.revoke(lease)).await {
        Ok(_) => true,
        Err(error) => {
            warn!(lease, %error, "could not revoke lease; it will expire");
            false
        }
    }
}

/// The earliest moment the lease could expire, as the holder can prove it: updated at every
/// confirmed refresh. A worker stops its tasks some margin before it.
pub type Expiry = tokio::sync::watch::Sender<Option<Instant>>;

/// Keeps `lease` alive until `cancel` fires or the lease is lost, publishing its expiry to
/// `expiry` when given.
pub async fn keep_alive(
    client: &Client,
    lease: i64,
    ttl_secs: i64,
    deadline: Duration,
    cancel: &CancellationToken,
    expiry: Option<&Expiry>,
) -> LeaseEnd {
    let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
    let period = ttl / 3;
    let publish = |at: Instant| {
        if let Some(expiry) = expiry {
            expiry.send_replace(Some(at));
        }
    };
    // Granted just now: the lease lives at least until a TTL from now.
    let mut expires_at = Instant::now() + ttl;
    publish(expires_at);
    let mut backoff = Backoff::new(Duration::from_millis(100), period);
    loop {
        let mut leases = client.lease_client();
        let sent = Instant::now();
        let opened = tokio::select! {
            () = cancel.cancelled() => return LeaseEnd::Cancelled,
            () = tokio::time::sleep_until(expires_at) => return expired(),
            r = timed(deadline, leases.keep_alive(lease)) => r,
        };
        let (mut keeper, mut stream) = match opened {
            Ok(pair) => pair,
            Err(EtcdError::Client(etcd_client::Error::LeaseKeepAliveError(reason)))
                if reason.contains("not found") =>
            {
                return LeaseEnd::Lost("etcd reports the lease expired".into());
            }
            Err(error) => {
                warn!(lease, %error, "keep-alive stream failed to open");
                tokio::select! {
                    () = cancel.cancelled() => return LeaseEnd::Cancelled,
                    () = tokio::time::sleep_until(expires_at) => return expired(),
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        // Opening the stream sent a first refresh and consumed its (positive) answer.
        expires_at = sent + ttl;
        publish(expires_at);
        backoff.reset();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return LeaseEnd::Cancelled,
                () = tokio::time::sleep_until(expires_at) => return expired(),
                () = tokio::time::sleep(period) => {}
            }
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            let answer = tokio::select! {
                () = cancel.cancelled() => return LeaseEnd::Cancelled,
                () = tokio::time::sleep_until(expires_at) => return expired(),
                r = tokio::time::timeout(period, stream.message()) => r,
            };
            match answer {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    expires_at = sent + Duration::from_secs(resp.ttl() as u64);
                    publish(expires_at);
                }
                Ok(Ok(Some(_))) => return LeaseEnd::Lost("etcd reports the lease expired".into()),
                Ok(Ok(None)) => {
                    warn!(lease, "keep-alive stream closed");
                    break;
                }
                Ok(Err(error)) => {
                    warn!(lease, %error, "keep-alive stream failed");
                    break;
                }
                Err(_) => {
                    warn!(lease, "keep-alive answer timed out");
                    break;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return LeaseEnd::Cancelled,
            () = tokio::time::sleep_until(expires_at) => return expired(),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn expired() -> LeaseEnd {
    LeaseEnd::Lost("no keep-alive was confirmed for a whole TTL".into())
}
