//! Connecting to etcd, with the settings that let a dead connection be noticed.
//!
//! etcd-client neither reconnects watches nor notices a dead TCP connection by itself. The
//! channel therefore pings with HTTP/2 keep-alive (also while idle), asks etcd to refuse
//! requests from a member without a leader (`require_leader`), and every unary request made by
//! this crate goes through [`timed`], because a balanced channel with no reachable endpoint can
//! wait forever.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

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
}

/// Opens a client. The channel is lazy: this succeeds even while etcd is down, and requests
/// fail (or time out) until it is back.
pub async fn connect(config: &EtcdConfig) -> Result<Client, EtcdError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(config.dial_timeout_ms))
        .with_keep_alive(
            Duration::from_millis(config.keep_alive_interval_ms),
            Duration::from_millis(config.keep_alive_timeout_ms),
        )
        .with_keep_alive_while_idle(true)
        .with_tcp_keepalive(Duration::from_secs(10))
        .with_require_leader(true);
    Ok(Client::connect(&config.endpoints, Some(options)).await?)
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
