//! Connecting to etcd, with the settings that let a dead connection be noticed.
//!
//! etcd-client neither reconnects watches nor notices a dead TCP connection by itself. The
//! channel therefore pings with HTTP/2 keep-alive (also while idle), asks etcd to refuse
//! requests from a member without a leader (`require_leader`), and every unary request made by
//! this crate goes through [`timed`], because a balanced channel with no reachable endpoint can
//! wait forever.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions,
};

use crate::config::EtcdConfig;

/// An etcd request that failed or did not answer in time.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// etcd answered with an error, or the transport failed.
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    /// No answer within the deadline.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// etcd answered with something this code cannot use.
    #[error("unexpected answer from etcd: {0}")]
    Malformed(String),
    /// One failure answered to several requests that shared a txn.
    #[error(transparent)]
    Shared(std::sync::Arc<EtcdError>),
}

/// Opens a client. Without etcd authentication the channel is lazy: this succeeds even while
/// etcd is down, and requests fail (or time out) until it is back. With a user, the client must
/// log in first, so this retries with backoff until etcd answers or rejects the credentials.
pub async fn connect(config: &EtcdConfig) -> Result<Client, EtcdError> {
    let options = options(config)?;
    let mut backoff = crate::etcd::backoff::Backoff::default();
    loop {
        match Client::connect(&config.endpoints, Some(options.clone())).await {
            Ok(client) => return Ok(client),
            Err(error) if config.username.is_some() && !is_rejection(&error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot log in to etcd yet");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// True when etcd refused the credentials (no point retrying): gRPC codes 3 (invalid
/// argument: bad user or password), 7 (permission denied), 9 (failed precondition: auth not
/// enabled) and 16 (unauthenticated).
fn is_rejection(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if matches!(i32::from(status.code()), 3 | 7 | 9 | 16))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| EtcdError::Malformed(format!("{}: {e}", path.display())))
}

pub(super) fn options(config: &EtcdConfig) -> Result<ConnectOptions, EtcdError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(config.dial_timeout_ms))
        .with_keep_alive(
            Duration::from_millis(config.keep_alive_interval_ms),
            Duration::from_millis(config.keep_alive_timeout_ms),
        )
        .with_keep_alive_while_idle(true)
        .with_tcp_keepalive(Duration::from_secs(10))
        .with_require_leader(true);
    if let Some(user) = &config.username {
        let password = std::env::var("CRAWLER_ETCD_PASSWORD")
            .ok()
            .or_else(|| config.password.clone())
            .unwrap_or_default();
        options = options.with_user(user.clone(), password);
    }
    if let Some(tls) = &config.tls {
        let mut settings = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            settings = settings.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            settings = settings.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &tls.domain {
            settings = settings.domain_name(domain.clone());
        }
        options = options.with_tls(settings);
    }
    Ok(options)
}

/// Runs one etcd request with a deadline.
pub async fn timed<T>(
    deadline: Duration,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(deadline, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(EtcdError::Timeout(deadline)),
    }
}

/// etcd's current revision, by a linearizable count-only read of `key`.
pub async fn current_revision(
    client: &Client,
    key: &str,
    deadline: Duration,
) -> Result<i64, EtcdError> {
    let mut kv = client.kv_client();
    let resp = timed(
        deadline,
        kv.get(key.as_bytes(), Some(GetOptions::new().with_count_only())),
    )
    .await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// Keys in the first page when listing a prefix. etcd-client refuses responses over 4 MiB, so
/// a large prefix (100,000 resources is about 20 MB) is read in pages at one revision.
const PAGE: i64 = 1_000;
/// Bytes a page aims at: the pages after the first are sized from the bytes per key seen so
/// far. Fewer, larger pages matter because etcd 3.4 walks its index from a page's start to the
/// prefix's end for every page, whatever the limit: with pages of 1,000, a million keys cost
/// it 500 million index steps.
const PAGE_BYTES: usize = 2 << 20;
/// Most keys in a page.
const MAX_PAGE: i64 = 50_000;

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// Every key-value under `prefix` at one revision (the current one when `revision` is 0),
/// handed to `page` a page at a time, so that a large prefix is never held twice (raw and
/// decoded). Returns the revision read at. A page too large for a response is split further.
pub async fn list_prefix(
    client: &Client,
    prefix: &str,
    revision: i64,
    deadline: Duration,
    page_of: impl FnMut(Vec<KeyValue>),
) -> Result<i64, EtcdError> {
    list(client, prefix, revision, deadline, false, page_of).await
}

/// Like [`list_prefix`], with keys only (values are left empty).
pub async fn list_keys(
    client: &Client,
    prefix: &str,
    revision: i64,
    deadline: Duration,
    page_of: impl FnMut(Vec<KeyValue>),
) -> Result<i64, EtcdError> {
    list(client, prefix, revision, deadline, true, page_of).await
}

async fn list(
    client: &Client,
    prefix: &str,
    revision: i64,
    deadline: Duration,
    keys_only: bool,
    mut page_of: impl FnMut(Vec<KeyValue>),
) -> Result<i64, EtcdError> {
    let mut kv = client.kv_client();
    let end = prefix_end(prefix.as_bytes());
    let mut start = prefix.as_bytes().to_vec();
    let mut revision = revision;
    let mut page = PAGE;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(page)
            .with_revision(revision);
        if keys_only {
            options = options.with_keys_only();
        }
        let mut resp = match timed(deadline, kv.get(start.clone(), Some(options))).await {
            Ok(resp) => resp,
            Err(EtcdError::Client(e))
                if page > 1 && e.to_string().contains("message length too large") =>
            {
                page = (page / 4).max(1);
                continue;
            }
            Err(e) => return Err(e),
        };
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        let bytes: usize = kvs
            .iter()
            .map(|kv| kv.key().len() + kv.value().len() + 16)
            .sum();
        if let Some(per_key) = bytes.checked_div(kvs.len()) {
            page = ((PAGE_BYTES / per_key.max(1)) as i64).clamp(1, MAX_PAGE);
        }
        if let Some(last) = kvs.last() {
            start = last.key().to_vec();
            start.push(0);
        }
        page_of(kvs);
        if !more {
            return Ok(revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/resources/"), b"/resources0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
