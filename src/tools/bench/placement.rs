//! Scenario 14: placement with constraints, on real masters. 10,000 labelled workers and
//! 100,000 tasks with selectors, tolerations, preferences and spread are written straight into
//! etcd, assigned to workers they fit; beside them the same numbers of plain workers and tasks.
//! Three take-overs of each are timed. Then 20,000 more tasks, unassigned, are written into
//! each, and the leader places them: its own count of the time it spent choosing
//! (`crawler_placement_seconds_total` over `crawler_placements_total`) gives the microseconds
//! per placement, against plain tasks, and against a tenth of the workers (a scan of every
//! worker per placement would make them ten times dearer).

use std::time::Duration;

use etcd_client::Client;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::harness::{
    bulk_put, go_resource, http_client, is_ready, is_ready_leader, metric_sum, metric_sums,
    wait_until,
};
use super::report::{Report, ms};
use crate::keys::KeyLayout;
use crate::model::constraints::{Constraints, Labels};
use crate::tools::member;
use crate::tools::procs::{self, Proc, Scratch, ToolError};

const REGIONS: [&str; 5] = ["eu", "us", "ap", "sa", "af"];
const SCENARIO: &str = "14 placement";

/// A key and its value, to write.
type Kv = (String, String);

/// Worker `i`'s labels: a region, a browser on every 4th, and every 50th dedicated to `acme`.
fn worker_labels(i: usize) -> Labels {
    let mut l = Labels::new();
    l.insert("region".into(), REGIONS[i % REGIONS.len()].into());
    if i.is_multiple_of(4) {
        l.insert("browser".into(), "chromium".into());
    }
    if i % 50 == 7 {
        l.insert("dedicated".into(), "acme".into());
    }
    l
}

/// Task `j`'s placement and labels: one of six kinds, from none to a spread over regions.
fn task_placement(j: usize) -> (Value, Value) {
    let site = json!({ "site": format!("s-{}", j % 100) });
    let placement = match j % 6 {
        0 => json!({}),
        1 => json!({"selector": {"match_labels": {"region": "eu"}}}),
        2 => json!({"selector": {"match_expressions":
            [{"key": "region", "operator": "In", "values": ["eu", "us"]}]}, "priority": 10}),
        3 => json!({"selector": {"match_expressions": [{"key": "browser", "operator": "Exists"}]},
            "preferences": [{"weight": 50, "selector": {"match_labels": {"region": "us"}}}]}),
        4 => json!({"tolerations": ["acme"], "selector": {"match_expressions":
            [{"key": "region", "operator": "NotIn", "values": ["af"]}]}}),
        _ => json!({"spread": {"over": "region", "by": "site"}}),
    };
    (placement, site)
}

fn constraints(placement: &Value) -> Constraints {
    Constraints::parse(placement).unwrap_or_default()
}

/// A fleet's registrations: `workers` workers, labelled or not.
fn registrations(workers: usize, constrained: bool) -> Vec<(String, String)> {
    (0..workers)
        .map(|i| {
            let id = format!("go.micro.server.worker-{i}");
            let mut metadata = json!({"registry": "etcd", "server": "grpc"});
            if constrained {
                for (k, v) in worker_labels(i) {
                    metadata[k] = json!(v);
                }
            }
            let value = json!({"name": "go.micro.server.worker", "version": "latest",
                "metadata": null, "endpoints": [], "nodes": [{"id": id,
                "address": format!("10.0.{}.{}:9089", i / 250, i % 250), "metadata": metadata}]});
            (
                format!("/micro/registry/go.micro.server.worker/{id}"),
                value.to_string(),
            )
        })
        .collect()
}

/// Tasks `from..to` (constrained or not): each assigned to a worker it fits among `workers`,
/// with the assignment key our leader writes beside it, or unassigned.
fn tasks(
    range: std::ops::Range<usize>,
    workers: Option<usize>,
    constrained: bool,
) -> (Vec<Kv>, Vec<Kv>) {
    let keys = KeyLayout::default();
    let (mut resources, mut assignments) = (Vec::new(), Vec::new());
    for j in range {
        let (placement, labels) = task_placement(j);
        let c = constraints(&placement);
        let worker = workers.map(|n| {
            (0..n)
                .map(|k| (j + k) % n)
                .find(|&w| !constrained || c.admits(&worker_labels(w)))
                .unwrap_or(0)
        });
        let (key, value) = go_resource(j, worker.unwrap_or(0));
        let mut v: Value = serde_json::from_str(&value).unwrap_or_default();
        if worker.is_none() {
            v["AssignedNode"] = json!("");
        }
        if constrained {
            v["Placement"] = placement;
            v["Labels"] = labels;
        }
        let value = v.to_string();
        if let Some(w) = worker {
            let name = key.trim_start_matches(keys.resources_prefix.as_str());
            let holder = format!("go.micro.server.worker-{w}");
            assignments.push((keys.assignment_key(&holder, name), value.clone()));
        }
        resources.push((key, value));
    }
    (resources, assignments)
}

/// What one fleet measured: its take-overs, and the leader's microseconds per placement of
/// the tasks added unassigned.
struct Measured {
    takeovers: Vec<Duration>,
    per_placement_us: f64,
}

/// A fleet in a fresh etcd: `trials` take-overs (each time a new master follows, the leader
/// resigns, and the follower's time to lead, its take-over done, is measured), then `added`
/// unassigned tasks placed by the last leader.
async fn fleet(
    workers: usize,
    assigned: usize,
    added: usize,
    constrained: bool,
    trials: usize,
) -> Result<Measured, ToolError> {
    let scratch = Scratch::new(if constrained { "constrained" } else { "plain" })?;
    let etcd = member::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let lease = raw.clone().lease_grant(3_600, None).await?.id();
    bulk_put(&raw, registrations(workers, constrained), Some(lease)).await?;
    let (resources, assignments) = tasks(0..assigned, Some(workers), constrained);
    bulk_put(&raw, resources, None).await?;
    bulk_put(&raw, assignments, None).await?;
    let config = procs::master_config(&scratch.0, 10)?;
    let client = http_client(4)?;
    let mut leader: Proc = procs::master(1, &etcd.url, &config)?;
    wait_until("the first master", Duration::from_secs(120), || {
        is_ready_leader(&client, &leader.url)
    })
    .await?;
    let mut takeovers = Vec::with_capacity(trials);
    for trial in 0..trials {
        let next = procs::master(2 + trial as u16, &etcd.url, &config)?;
        wait_until("a follower's caches", Duration::from_secs(120), || {
            is_ready(&client, &next.url)
        })
        .await?;
        if !is_ready_leader(&client, &leader.url).await {
            return Err(ToolError::Setup(
                "the leader lost its leadership before the take-over was timed".into(),
            ));
        }
        leader.signal(Signal::SIGTERM);
        let took = wait_until(
            "the follower to take over",
            Duration::from_secs(120),
            || is_ready_leader(&client, &next.url),
        )
        .await?;
        leader.wait_exit(Duration::from_secs(10)).await;
        takeovers.push(took);
        leader = next;
    }
    let seconds = "crawler_placement_seconds_total";
    let placed = "crawler_placements_total";
    let [s0, p0] = metric_sums(&client, &leader.url, [seconds, placed]).await;
    let (resources, _) = tasks(assigned..assigned + added, None, constrained);
    bulk_put(&raw, resources, None).await?;
    let target = p0 + added as f64;
    wait_until(
        "the added tasks' placement",
        Duration::from_secs(300),
        || {
            let (client, url) = (client.clone(), leader.url.clone());
            async move { metric_sum(&client, &url, placed).await >= target }
        },
    )
    .await?;
    let [s1, p1] = metric_sums(&client, &leader.url, [seconds, placed]).await;
    Ok(Measured {
        takeovers,
        per_placement_us: (s1 - s0) * 1e6 / (p1 - p0).max(1.0),
    })
}

fn median(mut d: Vec<Duration>) -> (Duration, Duration, Duration) {
    d.sort();
    let at = |i: usize| d.get(i).copied().unwrap_or_default();
    (at(d.len() / 2), at(0), at(d.len().saturating_sub(1)))
}

pub(super) async fn placement(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (small, large, assigned, added) = if q {
        (10, 100, 1_000, 200)
    } else {
        (1_000, 10_000, 100_000, 20_000)
    };
    let trials = if q { 1 } else { 3 };
    let plain = fleet(large, assigned, added, false, trials).await?;
    let constrained = fleet(large, assigned, added, true, trials).await?;
    let narrow = fleet(small, assigned, added, true, 0).await?;
    let us = constrained.per_placement_us;
    report.add(
        SCENARIO,
        format!("leader µs per placement, {added} constrained tasks, {large} workers"),
        format!("{us:.2} µs"),
        format!("{:.2} µs plain", plain.per_placement_us),
        format!("{:.2}x", us / plain.per_placement_us.max(1e-9)),
        "",
        None,
    );
    report.add(
        SCENARIO,
        format!("leader µs per constrained placement, {large} vs {small} workers"),
        format!("{us:.2} µs"),
        format!("{:.2} µs", narrow.per_placement_us),
        format!("{:.2}x", us / narrow.per_placement_us.max(1e-9)),
        "<= 2x (a scan of every worker: 10x)",
        Some(us <= 2.0 * narrow.per_placement_us),
    );
    let (c, p) = (median(constrained.takeovers), median(plain.takeovers));
    let ratio = c.0.as_secs_f64() / p.0.as_secs_f64().max(1e-9);
    report.add(
        SCENARIO,
        format!(
            "take-over, {large} labelled workers, {assigned} constrained tasks, median of {trials}"
        ),
        format!("{} ({}–{})", ms(c.0), ms(c.1), ms(c.2)),
        format!("{} ({}–{}) plain", ms(p.0), ms(p.1), ms(p.2)),
        format!("{ratio:.2}x"),
        "<= 1.5x",
        Some(ratio <= 1.5),
    );
    Ok(())
}
