//! Scenario 4: how soon a write on the leader shows in a follower's cache and its event stream,
//! against a raw etcd watch.

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, WatchOptions};
use serde_json::json;

use super::harness::{create, sse, wait_for_name};
use super::load::percentile;
use super::report::{Report, ms};
use crate::tools::procs::{Proc, ToolError};

pub(super) async fn propagation(
    report: &mut Report,
    q: bool,
    client: &reqwest::Client,
    leader: &Proc,
    follower: &Proc,
    raw: &Client,
) -> Result<(), ToolError> {
    let n = if q { 30 } else { 500 };
    let mut resources = sse(
        client,
        format!("{}/api/v1/events?kind=resources", follower.url),
    )
    .await?;
    let mut workers = sse(
        client,
        format!("{}/api/v1/events?kind=workers", follower.url),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut write_to_follower, mut register_to_follower) = (Vec::new(), Vec::new());
    let lease = raw.clone().lease_grant(600, None).await?.id();
    for i in 0..n {
        let name = format!("prop-{i}");
        let t = Instant::now();
        if create(client, &leader.url, &name).await
            && let Some(at) = wait_for_name(&mut resources, &name).await
        {
            write_to_follower.push(at.duration_since(t));
        }
        let id = format!("go.micro.server.worker-bench{i}");
        // Capacity 0: these registrations take no resources, so the measurement does not
        // set off a reassignment storm.
        let record = json!({"name":"go.micro.server.worker","version":"latest","metadata":null,
            "endpoints":[],"nodes":[{"id": id,"address":"127.0.0.1:1","metadata":{"capacity":"0"}}]});
        let t = Instant::now();
        raw.clone()
            .put(
                format!("/micro/registry/go.micro.server.worker/{id}"),
                record.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        if let Some(at) = wait_for_name(&mut workers, &id).await {
            register_to_follower.push(at.duration_since(t));
        }
    }
    raw.clone().lease_revoke(lease).await?;
    // etcd's own put-to-watch-event latency, measured the same way.
    let mut stream = raw
        .clone()
        .watch("/bench-watch/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let mut etcd_own = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        raw.clone()
            .put(format!("/bench-watch/{i}"), "x", None)
            .await?;
        while let Ok(Some(resp)) = stream.message().await {
            if !resp.events().is_empty() {
                etcd_own.push(t.elapsed());
                break;
            }
        }
    }
    drop(stream);
    raw.clone()
        .delete(
            "/bench-watch/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    etcd_own.sort();
    write_to_follower.sort();
    register_to_follower.sort();
    let base99 = percentile(&etcd_own, 99);
    for (metric, samples) in [
        (
            "create on leader -> follower cache p50/p99",
            &write_to_follower,
        ),
        (
            "worker registration -> follower cache p50/p99",
            &register_to_follower,
        ),
    ] {
        let p99 = percentile(samples, 99);
        report.add(
            "4 propagation",
            metric,
            format!("{} / {}", ms(percentile(samples, 50)), ms(p99)),
            format!("{} / {}", ms(percentile(&etcd_own, 50)), ms(base99)),
            format!("+{}", ms(p99.saturating_sub(base99))),
            "p99 <= etcd p99 + 5 ms",
            Some(p99 <= base99 + Duration::from_millis(5)),
        );
    }
    Ok(())
}
