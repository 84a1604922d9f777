//! Scenario 11: creates through the API while real worker processes run every task, against
//! the same creates with no worker. Most tasks exit at once (each writes its statuses: the
//! flood a leader must follow), some run until stopped (at most half the workers' capacity, so
//! every task is placed and run whatever the number of creates). Reports
//! the create rate, the leader's CPU per 1,000 creates, the caches' re-lists, and whether
//! creates slow down as the cluster fills (p99 of the last tenth against the first).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::harness::{create, http_client, is_ready_leader, metric_sum, wait_until};
use super::load::{self, percentile};
use super::report::{Report, ms};
use crate::tools::member;
use crate::tools::procs::{self, MOVE_AT_ONCE, Proc, Scratch, ToolError};

const WAIT: Duration = Duration::from_secs(60);
/// Worker processes, each holding at most this many unfinished tasks.
const WORKERS: u32 = 3;
const CAPACITY: u32 = 200;
/// One task in this many runs until stopped; the others exit at once.
const LONG_EVERY: usize = 100;
/// Most tasks that run until stopped: half the workers' capacity, so that they never fill the
/// workers and every other task is placed and run, however many creates there are.
const LONG_MAX: usize = (WORKERS * CAPACITY / 2) as usize;

/// Whether create `i` of `n` runs until stopped: spread evenly, at most [`LONG_MAX`] of them.
fn runs_until_stopped(i: usize, n: usize) -> bool {
    let every = LONG_EVERY.max(n.div_ceil(LONG_MAX));
    i.is_multiple_of(every)
}
/// Concurrent API clients.
const CONCURRENCY: usize = 32;

fn config(dir: &Path) -> Result<PathBuf, ToolError> {
    let path = dir.join("real-load.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 10\n{MOVE_AT_ONCE}\
             worker:\n  lease_ttl_secs: 5\n  capacity: {CAPACITY}\n  data_dir: {data}\n  \
             runners:\n    rules:\n      - tasks: \"long-*\"\n        command: [sleep, \"100000\"]\n    \
             default: [\"true\"]\nlog:\n  level: error\n",
            data = dir.join("workers").display()
        ),
    )?;
    Ok(path)
}

/// CPU seconds used, per part of the system.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    leader: f64,
    etcd: f64,
    workers: f64,
    guards: f64,
    /// The task processes (reaped by the guards).
    tasks: f64,
}

impl Cpu {
    /// What each part has used so far.
    fn now(master: &Proc, etcd: &Proc, workers: &[Proc]) -> Self {
        let of = |p: &Proc| p.pid().and_then(procs::cpu_seconds).unwrap_or_default();
        let mut cpu = Cpu {
            leader: of(master).0,
            etcd: of(etcd).0,
            ..Cpu::default()
        };
        for w in workers {
            cpu.workers += of(w).0;
            let guard = w
                .pid()
                .and_then(procs::guard_of)
                .and_then(procs::cpu_seconds);
            let (own, children) = guard.unwrap_or_default();
            cpu.guards += own;
            cpu.tasks += children;
        }
        cpu
    }

    /// What was used since `before`, per 1,000 of `n`.
    fn per_1000_since(self, before: Cpu, n: usize) -> Self {
        let k = 1000.0 / n.max(1) as f64;
        Cpu {
            leader: (self.leader - before.leader) * k,
            etcd: (self.etcd - before.etcd) * k,
            workers: (self.workers - before.workers) * k,
            guards: (self.guards - before.guards) * k,
            tasks: (self.tasks - before.tasks) * k,
        }
    }
}

/// What one run measured.
struct Run {
    rate: f64,
    errors: usize,
    /// CPU seconds per 1,000 creates.
    cpu: Cpu,
    first_tenth_p99: Duration,
    last_tenth_p99: Duration,
    relists: f64,
    coalesced: f64,
}

/// `n` creates at [`CONCURRENCY`] on a fresh etcd and master, with `workers` worker processes.
async fn run(q: bool, n: usize, workers: u32) -> Result<Run, ToolError> {
    let scratch = Scratch::new(&format!("real-load-{workers}"))?;
    let etcd = member::etcd(&scratch.0).await?;
    let config = config(&scratch.0)?;
    let master = procs::master_on(1, procs::free_port()?, &etcd.url, &config, Stdio::null())?;
    let client = http_client(CONCURRENCY)?;
    wait_until("the master to lead", WAIT, || {
        is_ready_leader(&client, &master.url)
    })
    .await?;
    let mut running = Vec::new();
    for id in 1..=workers {
        let port = procs::free_port()?;
        running.push(procs::worker_on(
            id,
            port,
            &etcd.url,
            &config,
            Stdio::null(),
            &[],
        )?);
    }
    let listed = workers as usize;
    wait_until("the workers to register", WAIT, || async {
        let Ok(r) = client
            .get(format!("{}/api/v1/workers", master.url))
            .send()
            .await
        else {
            return false;
        };
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        body["items"].as_array().map_or(0, Vec::len) == listed
    })
    .await?;
    let cpu_before = Cpu::now(&master, &etcd, &running);
    let timed: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let stats = {
        let client = client.clone();
        let url = master.url.clone();
        let timed = Arc::clone(&timed);
        load::run(n, CONCURRENCY, move |i| {
            let client = client.clone();
            let url = url.clone();
            let timed = Arc::clone(&timed);
            let kind = if runs_until_stopped(i, n) {
                "long"
            } else {
                "once"
            };
            let name = format!("{kind}-{i:07}");
            async move {
                let started = Instant::now();
                let ok = create(&client, &url, &name).await;
                if ok && let Ok(mut t) = timed.lock() {
                    t.push((i, started.elapsed()));
                }
                ok
            }
        })
        .await
    };
    let cpu = Cpu::now(&master, &etcd, &running).per_1000_since(cpu_before, stats.ok);
    let mut timed = timed.lock().map(|t| t.clone()).unwrap_or_default();
    timed.sort_by_key(|(i, _)| *i);
    let tenth = (timed.len() / 10).max(1);
    let p99 = |part: &[(usize, Duration)]| {
        let mut v: Vec<Duration> = part.iter().map(|(_, d)| *d).collect();
        v.sort();
        percentile(&v, 99)
    };
    let first = p99(&timed[..tenth.min(timed.len())]);
    let last = p99(&timed[timed.len().saturating_sub(tenth)..]);
    // Let the workers' statuses settle before the caches' counters are read.
    tokio::time::sleep(Duration::from_millis(if q { 200 } else { 2_000 })).await;
    let run = Run {
        rate: stats.per_sec(),
        errors: stats.errors,
        cpu,
        first_tenth_p99: first,
        last_tenth_p99: last,
        relists: metric_sum(&client, &master.url, "crawler_cache_lists_total").await,
        coalesced: metric_sum(
            &client,
            &master.url,
            "crawler_cache_coalesced_changes_total",
        )
        .await,
    };
    drop(running);
    Ok(run)
}

pub(super) async fn real_load(
    report: &mut Report,
    q: bool,
    scale: Option<usize>,
) -> Result<(), ToolError> {
    let n = scale.unwrap_or(if q { 500 } else { 100_000 });
    let bare = run(q, n, 0).await?;
    let loaded = run(q, n, WORKERS).await?;
    report.add_rate_ratio(
        "11 real load",
        &format!("{n} creates/s c={CONCURRENCY}, {WORKERS} workers running tasks vs none"),
        (loaded.rate, bare.rate),
        ">= 0.5x",
        0.5,
    );
    report.add(
        "11 real load",
        "leader CPU s per 1,000 creates (workers / none)",
        format!("{:.3} s", loaded.cpu.leader),
        format!("{:.3} s", bare.cpu.leader),
        format!("{:.2}x", loaded.cpu.leader / bare.cpu.leader.max(1e-9)),
        "",
        None,
    );
    // Where the cores go: on 2 cores, the task processes alone may bound the rate.
    let c = loaded.cpu;
    report.add(
        "11 real load",
        "CPU s per 1,000 creates: tasks / guards / workers / etcd / leader",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} / {:.2}",
            c.tasks, c.guards, c.workers, c.etcd, c.leader
        ),
        format!("etcd {:.2}, leader {:.2}", bare.cpu.etcd, bare.cpu.leader),
        "",
        "",
        None,
    );
    // Each cache lists once at start; any more is a re-list (O(all objects)).
    let caches = 5.0;
    report.add(
        "11 real load",
        "re-lists beyond the first lists (workers / none)",
        format!("{:.0}", (loaded.relists - caches).max(0.0)),
        format!("{:.0}", (bare.relists - caches).max(0.0)),
        "",
        "0",
        Some(loaded.relists <= caches),
    );
    report.add(
        "11 real load",
        "failed creates; changes coalesced for slow subscribers",
        format!("{}; {:.0}", loaded.errors, loaded.coalesced),
        format!("{}; {:.0}", bare.errors, bare.coalesced),
        "",
        "0 failed",
        Some(loaded.errors == 0 && bare.errors == 0),
    );
    let drift =
        loaded.last_tenth_p99.as_secs_f64() / loaded.first_tenth_p99.as_secs_f64().max(1e-9);
    report.add(
        "11 real load",
        "create p99, last tenth vs first tenth",
        ms(loaded.last_tenth_p99),
        ms(loaded.first_tenth_p99),
        format!("{drift:.2}x"),
        "<= 1.5x",
        Some(drift <= 1.5),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_that_run_until_stopped_never_fill_the_workers() {
        for n in [500, 100_000, 1_000_000] {
            let long = (0..n).filter(|&i| runs_until_stopped(i, n)).count();
            assert!(long <= LONG_MAX, "{long} of {n}");
            assert!(long >= (n / LONG_EVERY).min(LONG_MAX) / 2, "{long} of {n}");
        }
    }
}
