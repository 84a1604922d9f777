//! Scenario 16: one token hammering writes against another's. A "quiet" caller creates a task
//! every 50 ms and times each create, alone and then while a "flood" caller creates as fast
//! as 64 connections allow (ignoring Retry-After), on three masters: per-caller quotas whose
//! over-rate requests wait their turn (`max_wait: 1s`, the default), the same quotas refusing
//! at once (`max_wait: 0s`), and no quotas. Reports the quiet caller's p50 and p99 in each case
//! against its own alone, and what the flood got through.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{http_client, is_ready_leader, wait_until};
use super::load::percentile;
use super::report::{Report, ms};
use crate::tools::member;
use crate::tools::procs::{self, MOVE_AT_ONCE, Scratch, ToolError};

const QUIET: &str = "quiet-token-0123456789";
const FLOOD: &str = "flood-token-0123456789";
/// The per-caller rate of the master with quotas, requests/s.
const RATE: u32 = 100;

fn config(dir: &Path, rate: u32, max_wait: &str) -> Result<PathBuf, ToolError> {
    let path = dir.join(format!("fair-use-{rate}-{max_wait}.yaml"));
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 10\n{MOVE_AT_ONCE}\
             auth:\n  clients:\n    - {{name: quiet, role: admin, token: {QUIET}}}\n    - {{name: flood, role: admin, token: {FLOOD}}}\n\
             quotas:\n  rate: {rate}\n  burst: 20\n  max_wait: {max_wait}\n\
             log:\n  level: error\n"
        ),
    )?;
    Ok(path)
}

async fn create(client: &reqwest::Client, url: &str, token: &str, name: &str) -> Option<u16> {
    let resp = client
        .post(format!("{url}/api/v1/resources"))
        .bearer_auth(token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// The quiet caller's create latencies, `n` of them 50 ms apart, sorted.
async fn quiet(client: &reqwest::Client, url: &str, tag: &str, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..n {
        tick.tick().await;
        let t = Instant::now();
        if create(client, url, QUIET, &format!("quiet-{tag}-{i}")).await == Some(201) {
            took.push(t.elapsed());
        }
    }
    took.sort();
    took
}

/// What the flood got: creates accepted, and refusals (429).
struct Flood {
    stop: Arc<AtomicBool>,
    created: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
    started: Instant,
}

fn flood(client: &reqwest::Client, url: &str, tag: &str) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let (created, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, url, tag) = (client.clone(), url.to_owned(), tag.to_owned());
        let (stop, created, refused, next) =
            (stop.clone(), created.clone(), refused.clone(), next.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match create(&client, &url, FLOOD, &format!("flood-{tag}-{i}")).await {
                    Some(201) => created.fetch_add(1, Ordering::Relaxed),
                    Some(429) => refused.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        });
    }
    Flood {
        stop,
        created,
        refused,
        tasks,
        started: Instant::now(),
    }
}

impl Flood {
    /// Stops it; returns creates/s and refusals/s.
    async fn stop(mut self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        (
            self.created.load(Ordering::Relaxed) as f64 / secs,
            self.refused.load(Ordering::Relaxed) as f64 / secs,
        )
    }
}

/// One master on its own etcd at `rate` (0: no quotas): the quiet caller alone, then under the
/// flood. Returns (alone, flooded, flood's creates/s, flood's refusals/s).
async fn measure(
    q: bool,
    rate: u32,
    max_wait: &str,
) -> Result<(Vec<Duration>, Vec<Duration>, f64, f64), ToolError> {
    let scratch = Scratch::new("fair-use")?;
    let etcd = member::etcd(&scratch.0).await?;
    let config = config(&scratch.0, rate, max_wait)?;
    let master = procs::master(1, &etcd.url, &config)?;
    let client = http_client(80)?;
    wait_until(
        "the fair-use master to lead",
        Duration::from_secs(30),
        || is_ready_leader(&client, &master.url),
    )
    .await?;
    let n = if q { 40 } else { 400 };
    let alone = quiet(&client, &master.url, "alone", n).await;
    let flooding = flood(&client, &master.url, "f");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flooded = quiet(&client, &master.url, "flooded", n).await;
    let (created, refused) = flooding.stop().await;
    Ok((alone, flooded, created, refused))
}

pub(super) async fn fair_use(report: &mut Report, q: bool) -> Result<(), ToolError> {
    const S: &str = "16 fair use";
    for (rate, max_wait) in [(RATE, "1s"), (RATE, "0s"), (0, "0s")] {
        let (alone, flooded, created, refused) = measure(q, rate, max_wait).await?;
        let what = match (rate, max_wait) {
            (0, _) => "no quotas".to_owned(),
            (_, "0s") => format!("{RATE}/s, refusing"),
            _ => format!("{RATE}/s, queueing"),
        };
        for p in [50, 99] {
            let (ours, base) = (percentile(&flooded, p), percentile(&alone, p));
            let ratio = ours.as_secs_f64() / base.as_secs_f64().max(1e-9);
            let (target, met) = match (rate > 0 && max_wait != "0s", p) {
                (true, 99) => ("<= 2x alone", Some(ratio <= 2.0)),
                _ => ("", None),
            };
            report.add(
                S,
                format!("quiet p{p} under a flood, {what} / alone"),
                ms(ours),
                ms(base),
                format!("{ratio:.2}x"),
                target,
                met,
            );
        }
        report.note(
            S,
            format!(
                "{what}: the flood (64 connections, ignoring Retry-After) got {created:.0} creates/s \
                 through and {refused:.0}/s refused (429); the quiet caller's creates: {} of {} alone, \
                 {} under the flood",
                alone.len(),
                if q { 40 } else { 400 },
                flooded.len()
            ),
        );
    }
    Ok(())
}
