//! Keeping a worker registered: a lease, a key under it, and a keep-alive loop that this code
//! drives itself (etcd-client neither loops nor reconnects).
//!
//! [`crate::etcd::lease::keep_alive`] refreshes the lease; when it reports the lease lost (etcd
//! restarted past the TTL, a partition, expiry), a new lease is granted and the key put again.
//! On cancellation the lease is revoked, so masters see the worker leave at once.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::etcd::backoff::Backoff;
use crate::etcd::lease::{self, LeaseEnd};
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

/// What the rest of the worker learns about its lease.
#[derive(Debug, Clone, Default)]
pub struct LeaseWatch {
    /// The current lease, while registered.
    pub lease: tokio::sync::watch::Sender<Option<i64>>,
    /// When the lease could expire at the earliest, while registered.
    pub expiry: lease::Expiry,
    /// The etcd revision of the current registration's write (0 before the first). What the
    /// worker read before it is stale: it acts only on a cache at this revision or later.
    pub registered_at: tokio::sync::watch::Sender<i64>,
}

/// Keeps `registration` in etcd until `cancel` fires, then revokes the lease.
pub async fn run(
    client: Client,
    registration: Registration,
    watch: LeaseWatch,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        watch.lease.send_replace(None);
        watch.expiry.send_replace(None);
        if cancel.is_cancelled() {
            return;
        }
        let (lease, revision) = match register(&client, &registration).await {
            Ok(registered) => registered,
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
        info!(key = %registration.key, lease, revision, ttl = registration.ttl_secs, "registered");
        watch.registered_at.send_replace(revision);
        watch.lease.send_replace(Some(lease));
        let end = lease::keep_alive(
            &client,
            lease,
            registration.ttl_secs,
            registration.request_timeout,
            &cancel,
            Some(&watch.expiry),
        )
        .await;
        match end {
            LeaseEnd::Cancelled => {
                if lease::revoke(&client, lease, Duration::from_secs(2)).await {
                    info!(lease, "lease revoked; deregistered");
                }
                return;
            }
            LeaseEnd::Lost(reason) => {
                warn!(lease, %reason, "lease lost; registering again");
            }
        }
    }
}

/// Grants a lease and writes the registration under it; returns the lease and the revision of
/// the write.
async fn register(client: &Client, registration: &Registration) -> Result<(i64, i64), EtcdError> {
    let lease = lease::grant(client, registration.ttl_secs, registration.request_timeout).await?;
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
    match put {
        Ok(response) => Ok((lease, response.header().map_or(0, |h| h.revision()))),
        Err(error) => {
            // Don't leave an unused lease behind; it would expire anyway.
            lease::revoke(client, lease, registration.request_timeout).await;
            Err(error)
        }
    }
}
