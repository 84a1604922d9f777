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
//!
//! Where a larger W's create p99 comes from is split three ways: W registered workers with
//! few watch streams (the master's side), few registered with W watch streams, and raw etcd
//! txns writing a create's keys with no master at all, with W streams or few (etcd's side,
//! with its CPU per txn).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, Txn, TxnOp, WatchOptions};
use futures_util::StreamExt;

use super::harness::{bulk_put, create, go_worker, http_client, is_ready_leader, wait_until};
use super::load;
use super::report::{Report, ms};
use crate::keys::KeyLayout;
use crate::tools::member;
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
        // Established once etcd answers that it created the watch.
        match stream.next().await {
            Some(Ok(created)) if created.created() => {}
            _ => {
                return Err(ToolError::Setup(
                    "a fan-out agent's watch was not created".into(),
                ));
            }
        }
        let events = Arc::clone(&events);
        tasks.spawn(async move {
            while let Some(Ok(resp)) = stream.next().await {
                events.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
        });
    }
    Ok(Agents { events, tasks })
}

/// One run: `w` registered agents, `watching` of them with a watch of one design, `creates`
/// creates through the leader. Returns (events per change, create p50, create p99).
async fn run_once(
    w: usize,
    watching: usize,
    own: bool,
    creates: usize,
) -> Result<(f64, Duration, Duration), ToolError> {
    let scratch = Scratch::new("fanout")?;
    let etcd = member::etcd(&scratch.0).await?;
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
    let mut agents = agents(&raw, watching, own).await?;
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

/// The control without a master: `creates` raw etcd txns at c = 8, each putting a resource
/// key and one agent's assignment key (the keys a create writes), with `watching` agents
/// watching their own prefixes. Returns (etcd's CPU ms per txn, p50, p99).
async fn raw_once(watching: usize, creates: usize) -> Result<(f64, Duration, Duration), ToolError> {
    let scratch = Scratch::new("fanout-raw")?;
    let etcd = member::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let mut agents = agents(&raw, watching, true).await?;
    // The load has its own connection, as the master has: the agents' streams share another.
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let keys = KeyLayout::default();
    let cpu = || etcd.pid().and_then(procs::cpu_seconds).map_or(0.0, |c| c.0);
    let cpu_before = cpu();
    let stats = load::run(creates, 8, move |i| {
        let mut kv = raw.kv_client();
        let name = format!("fan-{i:06}");
        let worker = format!("go.micro.server.worker-{}", i % watching.max(1));
        let ops = vec![
            TxnOp::put(format!("{}{name}", keys.resources_prefix), "{}", None),
            TxnOp::put(keys.assignment_key(&worker, &name), "{}", None),
        ];
        async move { kv.txn(Txn::new().and_then(ops)).await.is_ok() }
    })
    .await;
    let cpu_ms = (cpu() - cpu_before) * 1000.0 / stats.ok.max(1) as f64;
    agents.tasks.abort_all();
    Ok((cpu_ms, stats.pct(50), stats.pct(99)))
}

/// Medians over the runs of one configuration, and the range of its p99s. Each run is its
/// figure (events per change through the master; etcd's CPU ms per txn for a raw run), p50
/// and p99.
struct Runs(Vec<(f64, Duration, Duration)>);

impl Runs {
    fn median<T: Copy + PartialOrd>(&self, f: impl Fn(&(f64, Duration, Duration)) -> T) -> T {
        let mut v: Vec<T> = self.0.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    fn figure(&self) -> f64 {
        self.median(|r| r.0)
    }
    fn p50(&self) -> Duration {
        self.median(|r| r.1)
    }
    fn p99(&self) -> Duration {
        self.median(|r| r.2)
    }
    fn p99_range(&self) -> String {
        let lo = self.0.iter().map(|r| r.2).min().unwrap_or_default();
        let hi = self.0.iter().map(|r| r.2).max().unwrap_or_default();
        format!("{}-{}", ms(lo), ms(hi))
    }
}

pub(super) async fn fanout(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (small, large, creates, reps) = if q {
        (2, 20, 50, 1)
    } else {
        (10, 1_000, 2_000, 3)
    };
    // Each configuration runs `reps` times, interleaved with the others, so that the
    // machine's drift falls on all alike. The last two split W = large in two: as many
    // registered workers (the master's side) or as many watch streams (etcd's side), with
    // the small number of the other.
    let configs = [
        (small, small, true),
        (large, large, true),
        (small, small, false),
        (large, large, false),
        (large, small, true),
        (small, large, true),
    ];
    let mut runs: Vec<Runs> = configs.iter().map(|_| Runs(Vec::new())).collect();
    let (mut raw_small, mut raw_large) = (Runs(Vec::new()), Runs(Vec::new()));
    for _ in 0..reps {
        for (i, &(w, watching, own)) in configs.iter().enumerate() {
            runs[i].0.push(run_once(w, watching, own, creates).await?);
        }
        raw_small.0.push(raw_once(small, creates).await?);
        raw_large.0.push(raw_once(large, creates).await?);
    }
    let [
        ours_small,
        ours_large,
        old_small,
        old_large,
        registered,
        watched,
    ] = &runs[..]
    else {
        return Err(ToolError::Setup("six fan-out configurations".into()));
    };
    for (w, ours, old) in [
        (small, ours_small, old_small),
        (large, ours_large, old_large),
    ] {
        report.add(
            "9 fan-out",
            format!("etcd watch events per change, W = {w}"),
            format!("{:.2}", ours.figure()),
            format!("{:.2} (all watch /resources/)", old.figure()),
            format!(
                "{:.3}x",
                ours.figure() / old.figure().max(f64::MIN_POSITIVE)
            ),
            "independent of W",
            Some(ours.figure() <= 1.0 + 1e-9),
        );
    }
    for (w, ours, old) in [
        (small, ours_small, old_small),
        (large, ours_large, old_large),
    ] {
        report.add(
            "9 fan-out",
            format!("create p50 / p99 with W = {w} agents, median of {reps} (p99 range)"),
            format!(
                "{} / {} ({})",
                ms(ours.p50()),
                ms(ours.p99()),
                ours.p99_range()
            ),
            format!("{} / {} (all watch)", ms(old.p50()), ms(old.p99())),
            "",
            "",
            None,
        );
    }
    for (what, r) in [
        (format!("{large} registered, {small} watching"), registered),
        (format!("{small} registered, {large} watching"), watched),
    ] {
        report.add(
            "9 fan-out",
            format!("create p50 / p99 with {what} (where the p99 goes)"),
            format!("{} / {} ({})", ms(r.p50()), ms(r.p99()), r.p99_range()),
            ms(ours_small.p99()),
            format!(
                "{:.2}x",
                r.p99().as_secs_f64() / ours_small.p99().as_secs_f64().max(1e-9)
            ),
            "",
            None,
        );
    }
    let raw_ratio = raw_large.p99().as_secs_f64() / raw_small.p99().as_secs_f64().max(1e-9);
    report.add(
        "9 fan-out",
        format!(
            "raw etcd txn p50 / p99 (the create's two keys, c=8, no master), {large} vs {small} watching"
        ),
        format!(
            "{} / {} ({})",
            ms(raw_large.p50()),
            ms(raw_large.p99()),
            raw_large.p99_range()
        ),
        format!(
            "{} / {} ({})",
            ms(raw_small.p50()),
            ms(raw_small.p99()),
            raw_small.p99_range()
        ),
        format!("{raw_ratio:.2}x"),
        "",
        None,
    );
    report.add(
        "9 fan-out",
        format!("etcd CPU ms per raw txn, {large} vs {small} watching, medians"),
        format!("{:.3} ms", raw_large.figure()),
        format!("{:.3} ms", raw_small.figure()),
        format!(
            "{:.2}x",
            raw_large.figure() / raw_small.figure().max(f64::MIN_POSITIVE)
        ),
        "",
        None,
    );
    let ratio = ours_large.p99().as_secs_f64() / ours_small.p99().as_secs_f64().max(1e-9);
    report.add(
        "9 fan-out",
        format!("create p99, W = {large} vs W = {small}, medians of {reps}"),
        ms(ours_large.p99()),
        ms(ours_small.p99()),
        format!("{ratio:.2}x"),
        "<= 1.5x",
        Some(ratio <= 1.5),
    );
    Ok(())
}
