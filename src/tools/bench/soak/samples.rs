//! The soak's samples of every process: resident memory, open descriptors and live tokio
//! tasks, and their growth after a warm-up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::super::harness::{get_json, metric_sum, worker_tasks};

/// A process to sample: name, pid, URL if it serves HTTP, and whether it is a master.
pub(super) type Watched = (String, u32, Option<String>, bool);

/// One sample of a process: resident bytes, open descriptors, live tokio tasks.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss: u64,
    fds: u64,
    tasks: Option<u64>,
    /// Tasks a worker holds (assigned to it).
    held: Option<u64>,
    /// Pipes among its descriptors: a worker reads one per task process running.
    pipes: u64,
}

/// Open descriptors, and how many of them are pipes.
fn open_fds(pid: u32) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let (mut all, mut pipes) = (0, 0);
    for entry in dir.flatten() {
        all += 1;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("pipe:") {
            pipes += 1;
        }
    }
    (all, pipes)
}

/// Live tokio tasks: a master's `crawler_runtime_tasks`, a worker's `/healthz`.
async fn tokio_tasks(client: &reqwest::Client, url: &str, master: bool) -> Option<u64> {
    if master {
        return Some(metric_sum(client, url, "crawler_runtime_tasks ").await as u64);
    }
    get_json(client, &format!("http://{url}/healthz")).await?["tokio_tasks"].as_u64()
}

/// One process instance's samples: its name, when sampling it began, and each sample.
type Series = (String, Instant, Vec<(Instant, Sample)>);

/// Samples of each process instance, by pid.
#[derive(Default)]
pub(super) struct Samples {
    by_pid: BTreeMap<u32, Series>,
}

impl Samples {
    /// One sample of each of `processes`: (name, pid, URL if it serves HTTP, a master).
    pub(super) async fn take(&mut self, client: &reqwest::Client, processes: Vec<Watched>) {
        let all = processes;
        let now = Instant::now();
        for (name, pid, url, master) in all {
            let rss = rss_of(pid);
            let tasks = match &url {
                Some(url) => tokio_tasks(client, url, master).await,
                None => None,
            };
            let held = match (&url, master) {
                (Some(url), false) => worker_tasks(client, url, 0u64, |n, _| *n += 1).await,
                _ => None,
            };
            let (fds, pipes) = open_fds(pid);
            let sample = Sample {
                rss,
                fds,
                tasks,
                held,
                pipes,
            };
            self.by_pid
                .entry(pid)
                .or_insert_with(|| (name, now, Vec::new()))
                .2
                .push((now, sample));
        }
    }

    /// The largest growth of each measure over the processes sampled for at least `span`
    /// after `warmup` of their life: the mean of the last quarter of those samples against the
    /// mean of the first quarter. A worker's descriptors and tokio tasks follow the tasks it
    /// holds (a supervising tokio task each; a pipe and a tokio task copying it while a
    /// process runs), and its share changes as the others are killed and come back empty
    /// (the soak does not rebalance), so what is compared is what it holds beyond those.
    pub(super) fn growth(&self, warmup: Duration, span: Duration) -> (f64, f64, f64, Vec<String>) {
        let (mut rss, mut fds, mut tasks) = (0.0f64, 0.0f64, 0.0f64);
        let mut lines = Vec::new();
        for (name, first, samples) in self.by_pid.values() {
            let after: Vec<&Sample> = samples
                .iter()
                .filter(|(at, _)| *at >= *first + warmup)
                .map(|(_, s)| s)
                .collect();
            let covered = samples
                .last()
                .map(|(at, _)| at.duration_since(*first + warmup));
            if after.len() < 4 || covered.is_none_or(|c| c < span) {
                continue;
            }
            let quarter = after.len() / 4;
            let (early, late) = (&after[..quarter], &after[after.len() - quarter..]);
            let mean = |part: &[&Sample], f: &dyn Fn(&Sample) -> f64| {
                part.iter().map(|s| f(s)).sum::<f64>() / part.len() as f64
            };
            // A worker's own, beyond what its tasks hold; anything else's, all of them.
            let net_fds = |s: &Sample| match s.held {
                Some(_) => s.fds.saturating_sub(s.pipes) as f64,
                None => s.fds as f64,
            };
            let net_tasks = |s: &Sample| {
                let t = s.tasks.unwrap_or(0);
                s.held.map_or(t, |h| t.saturating_sub(h + s.pipes)) as f64
            };
            let measures: [&dyn Fn(&Sample) -> f64; 4] =
                [&|s| s.rss as f64, &net_fds, &net_tasks, &|s| {
                    s.held.unwrap_or(0) as f64
                }];
            let [r, f, t, h] = measures.map(|m| (mean(early, m), mean(late, m)));
            let grew = |(a, b): (f64, f64)| if a > 0.0 { b / a - 1.0 } else { 0.0 };
            let unit = if samples.iter().any(|(_, s)| s.held.is_some()) {
                format!(" beyond its tasks' (held {:.0} -> {:.0})", h.0, h.1)
            } else {
                String::new()
            };
            lines.push(format!(
                "{name}: RSS {:.1} -> {:.1} MB; fds {:.2} -> {:.2}, tokio tasks {:.2} -> {:.2}{unit}",
                r.0 / 1e6,
                r.1 / 1e6,
                f.0,
                f.1,
                t.0,
                t.1,
            ));
            // etcd is shown, but the goal is about this project's processes.
            if name != "etcd" {
                rss = rss.max(grew(r));
                fds = fds.max(grew(f));
                tasks = tasks.max(grew(t));
            }
        }
        (rss, fds, tasks, lines)
    }
}

fn rss_of(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
