//! Scenario 6: a take-over with 10,000 workers and 100,000 resources written straight into etcd
//! in the Go format, and the memory of the masters that hold them.

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};

use super::harness::{
    bulk_put, go_resource, go_worker, http_client, is_ready, is_ready_leader, wait_until,
};
use super::load;
use super::report::{Report, ms};
use crate::tools::procs::{self, Scratch, ToolError};

pub(super) async fn scale(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (n_workers, n_resources) = if q { (100, 1_000) } else { (10_000, 100_000) };
    let scratch = Scratch::new("scale")?;
    let etcd = procs::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let lease = raw.clone().lease_grant(3_600, None).await?.id();
    let written = Instant::now();
    let worker_bytes = bulk_put(&raw, (0..n_workers).map(go_worker).collect(), Some(lease)).await?;
    let resource_bytes = bulk_put(
        &raw,
        (0..n_resources)
            .map(|i| go_resource(i, i % n_workers))
            .collect(),
        None,
    )
    .await?;
    println!(
        "scale: wrote {n_workers} workers and {n_resources} resources ({:.1} MB) in {:.1} s",
        (worker_bytes + resource_bytes) as f64 / 1e6,
        written.elapsed().as_secs_f64()
    );
    let config = procs::master_config(&scratch.0, 2)?;
    let client = http_client(8)?;
    let spawned = Instant::now();
    let a = procs::master(1, &etcd.url, &config)?;
    wait_until("the first master", Duration::from_secs(120), || {
        is_ready_leader(&client, &a.url)
    })
    .await?;
    let cold = spawned.elapsed();
    let b = procs::master(2, &etcd.url, &config)?;
    wait_until(
        "the second master's caches",
        Duration::from_secs(120),
        || is_ready(&client, &b.url),
    )
    .await?;
    a.signal(15);
    let takeover = wait_until(
        "the second master to take over",
        Duration::from_secs(120),
        || is_ready_leader(&client, &b.url),
    )
    .await?;
    report.add_duration(
        "6 scale",
        format!("take-over with {n_workers} workers, {n_resources} resources"),
        takeover,
        format!("cold start {}", ms(cold)),
        ("< 2 s", Duration::from_secs(2)),
    );
    let objects = n_workers + n_resources;
    let serialized = worker_bytes + resource_bytes;
    let rss = b.rss_bytes().unwrap_or(0) as usize;
    let budget = 2 * serialized + 200 * objects;
    let memory_row = |report: &mut Report, metric, rss: usize, target, met| {
        report.add(
            "6 scale",
            metric,
            format!("{:.1} MB", rss as f64 / 1e6),
            format!("{:.1} MB", budget as f64 / 1e6),
            format!("{:.0} B/obj", rss as f64 / objects as f64),
            target,
            met,
        );
    };
    memory_row(
        report,
        "master RSS vs 2x serialized + 200 B/object",
        rss,
        "RSS < budget",
        Some(rss > 0 && rss < budget),
    );
    // A follower holds the caches but not the leader's placement.
    let c = procs::master(3, &etcd.url, &config)?;
    wait_until("a follower's caches", Duration::from_secs(120), || {
        is_ready(&client, &c.url)
    })
    .await?;
    let follower_rss = c.rss_bytes().unwrap_or(0) as usize;
    memory_row(
        report,
        "follower RSS (caches only, no placement)",
        follower_rss,
        "",
        None,
    );
    drop(c);
    report.add(
        "6 scale",
        "serialized size per object",
        format!("{:.0} B", serialized as f64 / objects as f64),
        "",
        "",
        "",
        None,
    );
    let pages = if q { 20 } else { 200 };
    let page = {
        let client = client.clone();
        let url = format!("{}/api/v1/resources?limit=1000", b.url);
        load::run(pages, 1, move |_| {
            let client = client.clone();
            let url = url.clone();
            async move {
                match client.get(&url).send().await {
                    Ok(r) => r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };
    report.add(
        "6 scale",
        "GET /api/v1/resources?limit=1000 p50 / p99",
        format!("{} / {}", ms(page.pct(50)), ms(page.pct(99))),
        "",
        "",
        "",
        None,
    );
    // A worker holding 1,000 resources dies.
    let big = 1_000.min(n_resources);
    let big_lease = raw.clone().lease_grant(3_600, None).await?.id();
    let (key, value) = go_worker(n_workers + 1);
    raw.clone()
        .put(key, value, Some(PutOptions::new().with_lease(big_lease)))
        .await?;
    bulk_put(
        &raw,
        (0..big)
            .map(|i| go_resource(n_resources + i, n_workers + 1))
            .collect(),
        None,
    )
    .await?;
    let held = format!(
        "{}/api/v1/resources?limit=10000&worker=go.micro.server.worker-{}",
        b.url,
        n_workers + 1
    );
    let count = |client: reqwest::Client, url: String| async move {
        let Ok(resp) = client.get(url).send().await else {
            return usize::MAX;
        };
        resp.json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(usize::MAX)
    };
    wait_until(
        "the big worker's resources",
        Duration::from_secs(60),
        || {
            let (client, held) = (client.clone(), held.clone());
            async move { count(client, held).await == big }
        },
    )
    .await?;
    raw.clone().lease_revoke(big_lease).await?;
    let moved = wait_until("reassignment", Duration::from_secs(60), || {
        let (client, held) = (client.clone(), held.clone());
        async move { count(client, held).await == 0 }
    })
    .await?;
    report.add_duration(
        "6 scale",
        format!("reassign the {big} resources of a dead worker"),
        moved,
        String::new(),
        ("< 1 s", Duration::from_secs(1)),
    );
    Ok(())
}
