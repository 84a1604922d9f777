//! Keeping a worker registered: a lease, a key under it, and a keep-alive loop that this code
//! drives itself (etcd-client neither loops nor reconnects).
//!
//! The loop sends a keep-alive every third of the TTL. When the stream breaks it is reopened on
//! the same lease; when etcd says the lease is gone (TTL 0), or the lease has certainly expired
//! because no keep-alive succeeded for a whole TTL, a new lease is granted and the key put again.
//! On cancellation the lease is revoked, so masters see the worker leave at once.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::etcd::{EtcdError, timed};

/// What to keep registered.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The key, `/micro/registry/<service>/<node-id>`.
    pub key: String,
    /// The go-micro service document.
    pub value: String,
    /// Lease TTL in seconds.
    pub ttl_secs: i64,
    /// Deadline for single requests.
    pub request_timeout: Duration,
}

enum LeaseEnd {
    Cancelled,
    Lost(String),
}

/// Keeps `registration` in etcd until `cancel` fires, then revokes the lease.
pub async fn run(client: Client, registration: Registration, cancel: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let lease = match register(&client, &registration).await {
            Ok(lease) => lease,
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "registration failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        info!(key = %registration.key, lease, ttl = registration.ttl_secs, "registered");
        match keep_alive(&client, &registration, lease, &cancel).await {
            LeaseEnd::Cancelled => {
                let mut leases = client.lease_client();
                match timed(Duration::from_secs(2), leases.revoke(lease)).await {
                    Ok(_) => info!(lease, "lease revoked; deregistered"),
                    Err(error) => warn!(lease, %error, "could not revoke lease; it will expire"),
                }
                return;
            }
            LeaseEnd::Lost(reason) => {
                warn!(lease, %reason, "lease lost; registering again");
            }
        }
    }
}

async fn register(client: &Client, registration: &Registration) -> Result<i64, EtcdError> {
    let mut leases = client.lease_client();
    let grant = timed(
        registration.request_timeout,
        leases.grant(registration.ttl_secs, None),
    )
    .await?;
    let lease = grant.id();
    let mut kv = client.kv_client();
    let put = timed(
        registration.request_timeout,
        kv.put(
            registration.key.as_bytes(),
            registration.value.as_bytes(),
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await;
    if let Err(error) = put {
        // Don't leave an unused lease behind; it would expire anyway.
        let _ = timed(registration.request_timeout, leases.revoke(lease)).await;
        return Err(error);
    }
    Ok(lease)
}

async fn keep_alive(
    client: &Client,
    registration: &Registration,
    lease: i64,
    cancel: &CancellationToken,
) -> LeaseEnd {
    let ttl = Duration::from_secs(registration.ttl_secs.max(1) as u64);
    let period = ttl / 3;
    let mut expires_at = Instant::now() + ttl;
    let mut backoff = Backoff::new(Duration::from_millis(100), period);
    loop {
        if Instant::now() >= expires_at {
            return LeaseEnd::Lost("no keep-alive succeeded for a whole TTL".into());
        }
        let mut leases = client.lease_client();
        let opened = tokio::select! {
            () = cancel.cancelled() => return LeaseEnd::Cancelled,
            r = timed(registration.request_timeout, leases.keep_alive(lease)) => r,
        };
        let (mut keeper, mut stream) = match opened {
            Ok(pair) => pair,
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(lease, %error, "keep-alive stream failed to open");
                tokio::select! {
                    () = cancel.cancelled() => return LeaseEnd::Cancelled,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // `keep_alive` already sent the first request.
        loop {
            let answer = tokio::select! {
                () = cancel.cancelled() => return LeaseEnd::Cancelled,
                r = tokio::time::timeout(period, stream.message()) => r,
            };
            match answer {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    expires_at = Instant::now() + Duration::from_secs(resp.ttl() as u64);
                    backoff.reset();
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
            tokio::select! {
                () = cancel.cancelled() => return LeaseEnd::Cancelled,
                () = tokio::time::sleep(period) => {}
            }
            if keeper.keep_alive().await.is_err() {
                break;
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = cancel.cancelled() => return LeaseEnd::Cancelled,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
