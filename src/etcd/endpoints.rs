//! Keeping the client's balanced channel on members that answer.
//!
//! etcd-client's balanced channel keeps picking an endpoint whose connection is refused, so a
//! killed member fails a share of every request, keep-alive and watch for as long as it is down.
//! Go's clientv3 takes such a connection out of rotation; [`watch`] does the same: it probes each
//! member on its own connection five times a second with a linearizable read (etcd's `/health`
//! check), removes one that refuses connections at once, or that does not serve while others do,
//! and adds it back as soon as it answers. With no member healthy, all stay.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::EtcdConfig;

/// Starts [`watch`] for `config`'s endpoints in `tasks`, until `cancel` fires.
pub fn spawn(
    client: &Client,
    config: &crate::config::Config,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    tasks.spawn(watch(
        client.clone(),
        config.etcd.clone(),
        config.keys.health_probe_key(),
        cancel.clone(),
    ));
}

/// How often every member is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// One member and its own single-endpoint client, made on first use.
struct Member {
    url: String,
    probe: Option<Client>,
}

/// Probes the members of `config.endpoints` and keeps `client`'s channel on the healthy ones,
/// until `cancel` fires. Does nothing with a single endpoint.
pub async fn watch(
    client: Client,
    config: EtcdConfig,
    probe_key: String,
    cancel: CancellationToken,
) {
    if config.endpoints.len() < 2 {
        return;
    }
    let timeout = probe_timeout(&config);
    // Each member is probed on its own schedule, so a member that refuses connections is
    // taken out at once, not after the slowest probe of a round (survivors that are electing
    // a raft leader answer only when their probe times out).
    let (reports, mut results) = tokio::sync::mpsc::channel::<(usize, Health)>(64);
    let mut probers = tokio::task::JoinSet::new();
    for (index, url) in config.endpoints.iter().enumerate() {
        let mut member = Member {
            url: url.clone(),
            probe: None,
        };
        let (config, key, reports, cancel) = (
            config.clone(),
            probe_key.clone(),
            reports.clone(),
            cancel.clone(),
        );
        probers.spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let health = probe(&mut member, &config, &key, timeout).await;
                if reports.send((index, health)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(reports);
    let mut states: Vec<Health> = vec![Health::Up; config.endpoints.len()];
    let mut in_channel: BTreeSet<String> = config.endpoints.iter().cloned().collect();
    loop {
        let (index, health) = tokio::select! {
            () = cancel.cancelled() => return,
            result = results.recv() => match result {
                Some(result) => result,
                None => return,
            },
        };
        if states[index] == health {
            continue;
        }
        states[index] = health;
        let wanted = desired(config.endpoints.iter().cloned().zip(states.iter().copied()));
        for url in in_channel.difference(&wanted) {
            match client.remove_endpoint(url).await {
                Ok(()) => {
                    warn!(endpoint = %url, "etcd member does not answer: taken out of rotation")
                }
                Err(error) => {
                    warn!(endpoint = %url, %error, "could not take an etcd member out of rotation")
                }
            }
        }
        for url in wanted.difference(&in_channel) {
            match client.add_endpoint(url).await {
                Ok(()) => info!(endpoint = %url, "etcd member answers again: back in rotation"),
                Err(error) => {
                    warn!(endpoint = %url, %error, "could not put an etcd member back in rotation")
                }
            }
        }
        in_channel = wanted;
    }
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// It served a linearizable read.
    Up,
    /// It did not serve: no raft leader, or no answer in time. While the cluster elects a
    /// leader every live member looks like this, and any of them may be the first to serve.
    Unsure,
    /// It refused the connection or broke it: nothing listens there.
    Down,
}

/// The endpoints the channel should hold: the members that serve; while none does (an etcd
/// election), those that are not down; and when all are down, all of them.
fn desired(states: impl IntoIterator<Item = (String, Health)>) -> BTreeSet<String> {
    let states: Vec<(String, Health)> = states.into_iter().collect();
    for acceptable in [&[Health::Up][..], &[Health::Up, Health::Unsure]] {
        let chosen: BTreeSet<String> = states
            .iter()
            .filter(|(_, h)| acceptable.contains(h))
            .map(|(url, _)| url.clone())
            .collect();
        if !chosen.is_empty() {
            return chosen;
        }
    }
    states.into_iter().map(|(url, _)| url).collect()
}

/// A probe must answer well within the interval the lease and the fence can afford.
fn probe_timeout(config: &EtcdConfig) -> Duration {
    Duration::from_millis(config.dial_timeout_ms.min(500))
}

/// Asks the member for a linearizable read. Any answer from etcd itself (even "permission
/// denied" for a user that may not read the key) means it serves; "no leader" or no answer in
/// time means it may be electing; a refused or broken connection means it is down.
async fn probe(member: &mut Member, config: &EtcdConfig, key: &str, timeout: Duration) -> Health {
    if member.probe.is_none() {
        let single = EtcdConfig {
            endpoints: vec![member.url.clone()],
            ..config.clone()
        };
        let Ok(options) = super::client::options(&single) else {
            return Health::Down;
        };
        let connect = Client::connect([member.url.as_str()], Some(options));
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(client)) => member.probe = Some(client),
            Ok(Err(_)) => return Health::Down,
            Err(_) => return Health::Unsure,
        }
    }
    let Some(client) = member.probe.as_mut() else {
        return Health::Down;
    };
    let read = client.get(key, Some(GetOptions::new().with_count_only()));
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(_)) => Health::Up,
        Ok(Err(etcd_client::Error::GRpcStatus(status))) => match i32::from(status.code()) {
            // Unavailable is etcd's "no leader"; tonic's failed connect is Unavailable too,
            // but it says "tcp connect error".
            14 if status.message().contains("connect") => Health::Down,
            // Unavailable (no leader), deadline exceeded.
            4 | 14 => Health::Unsure,
            // Unknown: the connection broke.
            2 => Health::Down,
            // etcd refused this one request: it serves.
            _ => Health::Up,
        },
        Ok(Err(_)) => Health::Down,
        Err(_) => Health::Unsure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn states(of: &[(&str, Health)]) -> Vec<(String, Health)> {
        of.iter().map(|(u, h)| ((*u).to_owned(), *h)).collect()
    }

    #[test]
    fn the_channel_keeps_the_members_that_serve_best() {
        use Health::*;
        let chosen = desired(states(&[("a", Up), ("b", Down), ("c", Up)]));
        assert_eq!(chosen, set(&["a", "c"]));
        // While the survivors elect a leader, the dead member is out already.
        let chosen = desired(states(&[("a", Unsure), ("b", Down), ("c", Unsure)]));
        assert_eq!(chosen, set(&["a", "c"]));
        let chosen = desired(states(&[("a", Unsure), ("b", Up), ("c", Down)]));
        assert_eq!(chosen, set(&["b"]));
        // Nothing answers: keep them all, so the client recovers with the first that does.
        let chosen = desired(states(&[("a", Down), ("b", Down), ("c", Down)]));
        assert_eq!(chosen, set(&["a", "b", "c"]));
    }
}
