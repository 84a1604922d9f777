//! Scenario 9: fan-out. How many etcd watch events one change costs with W workers, and what
//! W connected workers do to create latency, for W = 10 and W = 1,000.
//!
//! The agents are simulated, all in this one process: each registers in go-micro's format on
//! a shared lease (so the leader assigns to it) and opens its own etcd watch stream, over one
//! shared gRPC connection, on what a worker of that design follows. *Ours*: the worker's
//! assignment prefix, as `crawler worker` does. *Baseline*: all of `/resources/`, as every
//! worker did before (and as Go workers still do). Each agent counts the events it receives;
//! it does no other work, so the figures are etcd's fan-out and the master's cost, not a
//! worker's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, WatchOptions};
use futures_util::StreamExt;

use super::harness::{bulk_put, create, go_worker, http_client, is_ready_leader, wait_until};
use super::load;
use super::report::{Report, ms};
use crate::keys::KeyLayout;
use crate::tools::procs::{self, Scratch, ToolError};

/// Events received by every agent, and the tasks that count them.
struct Agents {
    events: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

/// Starts `n` agents watching, each its own prefix (`own`) or all of `/resources/`.
async fn agents(raw: &Client, n: usize, own: bool) -> Result<Agents, ToolError> {
    let keys = KeyLayout::default();
    let events = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let prefix = if own {
            keys.assignment_prefix(&format!("go.micro.server.worker-{i}"))
        } else {
            keys.resources_prefix.clone()
        };
        let mut stream = raw
            .clone()
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await?;
        let events = Arc::clone(&events);
        tasks.spawn(async move {
            while let Some(Ok(resp)) = stream.next().await {
                events.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
        });
    }
    Ok(Agents { events, tasks })
}

/// One run: W registered agents of one design, `creates` creates through the leader.
/// Returns (events per change, create p50, create p99).
async fn run_once(
    w: usize,
    own: bool,
    creates: usize,
) -> Result<(f64, Duration, Duration), ToolError> {
    let scratch = Scratch::new("fanout")?;
    let etcd = procs::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let lease = raw.clone().lease_grant(3_600, None).await?.id();
    bulk_put(&raw, (0..w).map(go_worker).collect(), Some(lease)).await?;
    let config = procs::master_config(&scratch.0, 2)?;
    let master = procs::master(1, &etcd.url, &config)?;
    let client = http_client(8)?;
    wait_until("the fan-out master", Duration::from_secs(60), || {
        is_ready_leader(&client, &master.url)
    })
    .await?;
    let mut agents = agents(&raw, w, own).await?;
    // Let every watch be established before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = agents.events.load(Ordering::Relaxed);
    let url = master.url.clone();
    let stats = load::run(creates, 8, move |i| {
        let client = client.clone();
        let url = url.clone();
        async move { create(&client, &url, &format!("fan-{i:06}")).await }
    })
    .await;
    // Wait until the events stop arriving (each create is one change).
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = agents.events.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let received = agents.events.load(Ordering::Relaxed) - before;
    agents.tasks.abort_all();
    let per_change = received as f64 / stats.ok.max(1) as f64;
    Ok((per_change, stats.pct(50), stats.pct(99)))
}

pub(super) async fn fanout(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (small, large, creates) = if q { (2, 20, 50) } else { (10, 1_000, 2_000) };
    let ours_small = run_once(small, true, creates).await?;
    let ours_large = run_once(large, true, creates).await?;
    let old_small = run_once(small, false, creates).await?;
    let old_large = run_once(large, false, creates).await?;
    for (w, ours, old) in [
        (small, ours_small, old_small),
        (large, ours_large, old_large),
    ] {
        report.add(
            "9 fan-out",
            format!("etcd watch events per change, W = {w}"),
            format!("{:.2}", ours.0),
            format!("{:.2} (all watch /resources/)", old.0),
            format!("{:.3}x", ours.0 / old.0.max(f64::MIN_POSITIVE)),
            "independent of W",
            Some(ours.0 <= 1.0 + 1e-9),
        );
    }
    for (w, ours, old) in [
        (small, ours_small, old_small),
        (large, ours_large, old_large),
    ] {
        report.add(
            "9 fan-out",
            format!("create p50 / p99 with W = {w} agents"),
            format!("{} / {}", ms(ours.1), ms(ours.2)),
            format!("{} / {} (all watch)", ms(old.1), ms(old.2)),
            "",
            "",
            None,
        );
    }
    let ratio = ours_large.2.as_secs_f64() / ours_small.2.as_secs_f64().max(1e-9);
    report.add(
        "9 fan-out",
        format!("create p99, W = {large} vs W = {small}"),
        ms(ours_large.2),
        ms(ours_small.2),
        format!("{ratio:.2}x"),
        "<= 2x",
        Some(ratio <= 2.0),
    );
    Ok(())
}
