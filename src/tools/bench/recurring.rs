//! Scenario 13: the scheduler's cost. 100,000 scheduled resources (`every: 1h`, none due while
//! measured) held by a registered worker, a leader and a follower over them, and two real
//! workers running the runs of a few hundred resources due `every: 2s`. Reports the leader's
//! CPU per second at rest against the follower's (same caches, no scheduling: a ratio near 1
//! means no per-tick work in the number of schedules), and the lateness of the runs (the
//! leader's decision after each slot, from every run's own record), p50 and p99.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::Client;
use serde_json::json;

use super::harness::{
    bulk_put, cpu, get_json, go_worker, http_client, is_ready, is_ready_leader, wait_until,
};
use super::load::percentile;
use super::report::{Report, ms};
use crate::keys::KeyLayout;
use crate::tools::member;
use crate::tools::procs::{self, MOVE_AT_ONCE, Proc, Scratch, ToolError};

const WAIT: Duration = Duration::from_secs(120);
/// The registered worker that holds the schedules at rest (it never reports, and is never due).
const HOLDER: usize = 9_999;

fn config(dir: &Path) -> Result<PathBuf, ToolError> {
    let path = dir.join("recurring.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 10\n{MOVE_AT_ONCE}\
             worker:\n  lease_ttl_secs: 5\n  data_dir: {data}\n  runners:\n    default: [\"true\"]\n\
             log:\n  level: error\n",
            data = dir.join("workers").display()
        ),
    )?;
    Ok(path)
}

/// A scheduled resource at rest: every hour, counted from a moment within the last 50 minutes,
/// so none is due for ten minutes.
fn at_rest(i: usize, now_ms: i64, keys: &KeyLayout) -> [(String, String); 2] {
    let name = format!("rest-{i:06}");
    let node = format!("go.micro.server.worker-{HOLDER}");
    let since = now_ms - (i as i64 % 3_000) * 1_000;
    let value = json!({"ID": format!("{}", 2_126_000_000_000_000_000u64 + i as u64),
        "Name": name, "AssignedNode": format!("{node}|10.0.39.249:9089"),
        "CreationTime": 1_621_344_456_000_000_000i64 + i as i64,
        "Schedule": {"rule": {"every": "1h", "time_zone": "UTC", "overlap": "skip", "suspend": false},
                     "progress": {"since_ms": since, "missed": 0, "skipped": 0}}})
    .to_string();
    [
        (keys.resource_key(&name), value.clone()),
        (keys.assignment_key(&node, &name), value),
    ]
}

/// CPU seconds per second of `a` and `b` over `window`.
async fn cpu_per_second(a: &Proc, b: &Proc, window: Duration) -> (f64, f64) {
    let (a0, b0, t0) = (cpu(a), cpu(b), Instant::now());
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    ((cpu(a) - a0) / secs, (cpu(b) - b0) / secs)
}

pub(super) async fn recurring(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (n, fast, window) = if q {
        (2_000, 20, Duration::from_secs(5))
    } else {
        (100_000, 200, Duration::from_secs(20))
    };
    let scratch = Scratch::new("recurring")?;
    let etcd = member::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let config = config(&scratch.0)?;
    let keys = KeyLayout::default();
    let lease = raw.clone().lease_grant(3_600, None).await?.id();
    bulk_put(&raw, vec![go_worker(HOLDER)], Some(lease)).await?;
    let now = crate::model::status::now_ms();
    bulk_put(
        &raw,
        (0..n).flat_map(|i| at_rest(i, now, &keys)).collect(),
        None,
    )
    .await?;
    let client = http_client(32)?;
    let leader = procs::master(1, &etcd.url, &config)?;
    wait_until("the leader", WAIT, || is_ready_leader(&client, &leader.url)).await?;
    let follower = procs::master(2, &etcd.url, &config)?;
    wait_until("the follower", WAIT, || is_ready(&client, &follower.url)).await?;
    let mut workers = Vec::new();
    for id in 1..=2u32 {
        workers.push(procs::worker_on(
            id,
            procs::free_port()?,
            &etcd.url,
            &config,
            std::process::Stdio::null(),
            &[],
        )?);
    }
    // Settled: the take-over's verification done, the workers registered.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rest_leader, rest_follower) = cpu_per_second(&leader, &follower, window).await;
    let ratio = rest_leader / rest_follower.max(1e-6);
    report.add(
        "13 recurring",
        format!("leader CPU/s at rest, {n} schedules (vs follower)"),
        format!("{rest_leader:.4} s"),
        format!("{rest_follower:.4} s"),
        format!("{ratio:.2}x"),
        "<= 1.5x: nothing per tick",
        Some(ratio <= 1.5),
    );

    // Runs due every 2 s, run by real workers.
    let names: Vec<String> = (0..fast).map(|i| format!("often-{i:04}")).collect();
    let mut created = 0;
    for name in &names {
        let ok = client
            .post(format!("{}/api/v1/resources", leader.url))
            .json(&json!({"name": name, "schedule": {"every": "2s"}}))
            .send()
            .await
            .is_ok_and(|r| r.status() == 201);
        created += usize::from(ok);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (busy_leader, busy_follower) = cpu_per_second(&leader, &follower, window).await;
    let mut lateness: Vec<Duration> = Vec::new();
    let (mut runs, mut passed) = (0usize, 0u64);
    for name in &names {
        let url = format!("{}/api/v1/resources/{name}/runs", leader.url);
        let Some(history) = get_json(&client, &url).await else {
            continue;
        };
        for run in history["items"].as_array().into_iter().flatten() {
            let (Some(slot), Some(started)) =
                (run["scheduled_for"].as_str(), run["started_at"].as_str())
            else {
                continue;
            };
            let (Ok(slot), Ok(started)) = (
                humantime::parse_rfc3339(slot),
                humantime::parse_rfc3339(started),
            ) else {
                continue;
            };
            runs += 1;
            lateness.push(started.duration_since(slot).unwrap_or_default());
        }
        for p in history["passed"].as_array().into_iter().flatten() {
            passed += p["count"].as_u64().unwrap_or(0);
        }
    }
    lateness.sort_unstable();
    let (p50, p99) = (percentile(&lateness, 50), percentile(&lateness, 99));
    report.add(
        "13 recurring",
        format!("lateness of {runs} runs every 2s (p50 / p99)"),
        format!("{} / {}", ms(p50), ms(p99)),
        format!("{created} resources"),
        "",
        "p99 < 1 s",
        Some(runs > 0 && p99 < Duration::from_secs(1)),
    );
    report.note(
        "13 recurring",
        format!(
            "leader CPU/s with {created} resources due every 2 s beside the {n} at rest: \
             {busy_leader:.3} s (follower {busy_follower:.3} s); slots passed without a run: \
             {passed}"
        ),
    );
    drop(workers);
    Ok(())
}
