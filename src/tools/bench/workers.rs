//! Scenario 10: a worker's memory at 100,000 tasks over 3 workers. Each `crawler worker` holds
//! its own assignments only (a third), so its memory grows with its own tasks; a fourth worker
//! that holds none stays at its idle size while 100,000 resources exist.
//!
//! The resources and their assignment keys are written straight into etcd, as the leader
//! writes them. The workers have no runner configured, so each task is supervised, fails at
//! once with "no runner" and is reported once, without starting a process (33,000 processes
//! per worker would measure the machine, not the worker). The figure is the worker's whole
//! state for its tasks: its cache of assignments, one supervised task and one report each.

use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client::Client;

use super::harness::{bulk_put, go_resource, http_client, wait_until, worker_tasks};
use super::report::Report;
use crate::keys::KeyLayout;
use crate::tools::member;
use crate::tools::procs::{self, Proc, Scratch, ToolError, free_port};

/// How many tasks a worker's `/tasks` lists with a status (supervised and reported), if it
/// answers: the worker is measured at rest, not while it is still starting its tasks.
async fn listed(client: &reqwest::Client, addr: &str) -> Option<usize> {
    worker_tasks(client, addr, 0, |n, t| {
        *n += usize::from(!t["status"].is_null())
    })
    .await
}

/// The busiest of the first three workers' RSS against the fourth's, which holds no task, per
/// task of `held` above it; met when under `goal`'s bytes, if there is one.
fn rss_row(
    report: &mut Report,
    workers: &[Proc],
    metric: String,
    held: usize,
    goal: Option<(&'static str, u64)>,
) {
    let rss: Vec<u64> = workers.iter().map(|w| w.rss_bytes().unwrap_or(0)).collect();
    let idle = rss[3];
    let busiest = rss[..3].iter().copied().max().unwrap_or(0);
    report.add(
        "10 worker memory",
        metric,
        format!("{:.1} MB", busiest as f64 / 1e6),
        format!("{:.1} MB holding none", idle as f64 / 1e6),
        format!(
            "{:.0} B/task above",
            busiest.saturating_sub(idle) as f64 / held as f64
        ),
        goal.map_or("", |(target, _)| target),
        goal.map(|(_, limit)| busiest > 0 && busiest <= limit),
    );
}

pub(super) async fn worker_memory(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let n = if q { 3_000 } else { 100_000 };
    let scratch = Scratch::new("workers")?;
    let etcd = member::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let keys = KeyLayout::default();
    let mut kvs = Vec::with_capacity(2 * n);
    for i in 0..n {
        let worker = i % 3 + 1;
        let (key, value) = go_resource(i, worker);
        let name = key
            .trim_start_matches(keys.resources_prefix.as_str())
            .to_owned();
        kvs.push((
            keys.assignment_key(&format!("go.micro.server.worker-{worker}"), &name),
            value.clone(),
        ));
        kvs.push((key, value));
    }
    bulk_put(&raw, kvs, None).await?;
    let config = scratch.0.join("worker.yaml");
    std::fs::write(
        &config,
        format!(
            "worker:\n  data_dir: {}\nlog:\n  level: error\n",
            scratch.0.join("data").display()
        ),
    )?;
    let client = http_client(4)?;
    let spawned = Instant::now();
    let mut workers = Vec::new();
    for id in 1..=4u32 {
        workers.push(procs::worker_on(
            id,
            free_port()?,
            &etcd.url,
            &config,
            Stdio::null(),
            &[],
        )?);
    }
    for (i, w) in workers.iter().enumerate() {
        let want = if i < 3 { (n - i).div_ceil(3) } else { 0 };
        wait_until("a worker's tasks", Duration::from_secs(120), || {
            let client = client.clone();
            let url = w.url.clone();
            // Twice a second: a list of 33,000 tasks asked for every 5 ms would measure the
            // responses' memory, not the worker's.
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                listed(&client, &url).await == Some(want)
            }
        })
        .await?;
    }
    let started_all = spawned.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = n.div_ceil(3);
    rss_row(
        report,
        &workers,
        format!("worker RSS, {held} of {n} tasks (3 workers)"),
        held,
        None,
    );
    // At rest: every status reported and every start's scratch gone, as the goal counts it.
    let rest = if q { 2 } else { 20 };
    tokio::time::sleep(Duration::from_secs(rest)).await;
    rss_row(
        report,
        &workers,
        format!("worker RSS at rest, {rest} s later, {held} of {n} tasks"),
        held,
        Some(("<= 60 MB", 60_000_000)),
    );
    report.add(
        "10 worker memory",
        format!("every task supervised and reported, {n} tasks on 3 workers (polled every 0.5 s)"),
        format!("{:.1} s", started_all.as_secs_f64()),
        "",
        "",
        "",
        None,
    );
    Ok(())
}
