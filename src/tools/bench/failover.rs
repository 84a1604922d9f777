//! Scenario 5: leader SIGKILL to the first write accepted by the new leader, against the session
//! TTL.

use std::time::{Duration, Instant};

use super::harness::{create, is_ready, wait_until};
use super::report::{Report, ms};
use nix::sys::signal::Signal;

use crate::tools::procs::{self, Proc, ToolError};

#[allow(clippy::too_many_arguments)]
pub(super) async fn failover(
    report: &mut Report,
    client: &reqwest::Client,
    mut leader: Proc,
    follower: Proc,
    etcd: &Proc,
    config: &std::path::Path,
    ttl_secs: u64,
) -> Result<(), ToolError> {
    let ttl = Duration::from_secs(ttl_secs);
    let first_write = |url: String, since: Instant| {
        let client = client.clone();
        async move {
            let mut i = 0u64;
            loop {
                i += 1;
                if create(
                    &client,
                    &url,
                    &format!("fo-{}-{i}", since.elapsed().as_micros()),
                )
                .await
                {
                    return since.elapsed();
                }
                if since.elapsed() > Duration::from_secs(60) {
                    return since.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    leader.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let kill9 = first_write(follower.url.clone(), killed).await;
    leader.kill();
    let r = kill9.as_secs_f64() / ttl.as_secs_f64();
    report.add(
        "5 failover",
        format!("kill -9 leader -> first accepted write (TTL {ttl_secs} s)"),
        ms(kill9),
        format!("TTL {}", ms(ttl)),
        format!("{r:.2}x TTL"),
        "<= 1.3x TTL",
        Some(r <= 1.3),
    );
    let third = procs::master(3, &etcd.url, config)?;
    // Ready: its caches, the masters' campaign keys included, are synced.
    wait_until(
        "the third master to follow",
        Duration::from_secs(30),
        || is_ready(client, &third.url),
    )
    .await?;
    follower.signal(Signal::SIGTERM);
    let stopping = Instant::now();
    let graceful = first_write(third.url.clone(), stopping).await;
    let r = graceful.as_secs_f64() / ttl.as_secs_f64();
    report.add(
        "5 failover",
        "SIGTERM leader -> first accepted write",
        ms(graceful),
        format!("TTL {}", ms(ttl)),
        format!("{r:.2}x TTL"),
        "<= 0.1x TTL",
        Some(r <= 0.1),
    );
    Ok(())
}
