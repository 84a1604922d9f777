//! Scenario 12: a soak. For a set time (10 minutes, `--soak-secs`, 30 s with `--quick`),
//! clients create, PATCH, restart and delete resources through 3 masters while 3 worker
//! processes run every task (each task writes its own heartbeats), and faults come on a
//! schedule: a worker killed and started again every minute, the leader killed every 3
//! minutes, and one worker cut off from etcd for 20 s every 2 minutes, its packets dropped on
//! connections held open. Reports each process's growth in memory, descriptors and tokio
//! tasks after the warm-up, acknowledged writes lost, overlapping runs judged from the tasks'
//! own records, and tasks left on dead workers at the end.

mod samples;
mod traffic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::harness::{http_client, is_ready, is_ready_leader, wait_until};
use super::report::Report;
use crate::tools::member;
use crate::tools::procs::{self, MOVE_AT_ONCE, Proc, Scratch, ToolError, free_port};
use crate::tools::proxy::Proxy;
use crate::tools::runs::{self, heartbeat_runner};
use samples::{Samples, Watched};
use traffic::{Book, CLIENTS, Expected, LIVE, client_loop, listed, workers};

const WAIT: Duration = Duration::from_secs(60);
const MASTERS: u16 = 3;
const WORKERS: u32 = 3;
/// The worker cut off from etcd now and then: it reaches etcd through the proxy.
const CUT_OFF: u32 = 3;
/// Between two heartbeats of a task.
const BEAT: Duration = Duration::from_millis(500);

/// When each fault comes.
struct Timeline {
    length: Duration,
    warmup: Duration,
    worker_kill_every: Duration,
    leader_kill_every: Duration,
    partition_every: Duration,
    partition_for: Duration,
}

impl Timeline {
    fn new(q: bool, secs: Option<u64>) -> Self {
        if q {
            let s = Duration::from_secs;
            return Self {
                length: s(secs.unwrap_or(30)),
                warmup: s(8),
                worker_kill_every: s(10),
                leader_kill_every: s(15),
                partition_every: s(12),
                partition_for: s(4),
            };
        }
        let s = Duration::from_secs;
        Self {
            length: s(secs.unwrap_or(600)),
            warmup: s(120),
            worker_kill_every: s(60),
            leader_kill_every: s(180),
            partition_every: s(120),
            partition_for: s(20),
        }
    }
}

/// The masters compact etcd's history ten times in a soak (every minute in ten), so that its
/// growth is measured with compaction as deployed, and watches see it happen.
fn config(dir: &Path, log: &Path, length: Duration) -> Result<PathBuf, ToolError> {
    let path = dir.join("soak.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 2\n  compaction_interval_secs: {compaction}\n{MOVE_AT_ONCE}\
             worker:\n  lease_ttl_secs: 3\n  lease_margin_ms: 1000\n  stop_grace_ms: 2000\n  \
             capacity: {capacity}\n  data_dir: {data}\n  runners:\n    rules:\n{rule}\
             log:\n  level: error\n",
            compaction = (length.as_secs() / 10).max(1),
            capacity = CLIENTS * LIVE,
            data = dir.join("workers").display(),
            rule = heartbeat_runner("*", log, BEAT),
        ),
    )?;
    Ok(path)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The processes of the soak, each restartable on its own port.
struct Cluster {
    etcd: Proc,
    proxy: Proxy,
    config: PathBuf,
    masters: Vec<(u16, u16, Option<Proc>)>,
    workers: Vec<(u32, u16, Option<Proc>)>,
}

impl Cluster {
    fn start_master(&mut self, index: usize) -> Result<(), ToolError> {
        let (id, port, _) = self.masters[index];
        let proc = procs::master_on(id, port, &self.etcd.url, &self.config, Stdio::null())?;
        self.masters[index].2 = Some(proc);
        Ok(())
    }

    fn start_worker(&mut self, index: usize) -> Result<(), ToolError> {
        let (id, port, _) = self.workers[index];
        let etcd = if id == CUT_OFF {
            self.proxy.url.clone()
        } else {
            self.etcd.url.clone()
        };
        let proc = procs::worker_on(id, port, &etcd, &self.config, Stdio::null(), &[])?;
        self.workers[index].2 = Some(proc);
        Ok(())
    }

    fn master_urls(&self) -> Vec<String> {
        self.masters
            .iter()
            .map(|(_, port, _)| format!("http://127.0.0.1:{port}"))
            .collect()
    }

    /// The master that leads now, if one does.
    async fn leader(&self, client: &reqwest::Client) -> Option<usize> {
        for (i, url) in self.master_urls().iter().enumerate() {
            if self.masters[i].2.is_some() && is_ready_leader(client, url).await {
                return Some(i);
            }
        }
        None
    }

    /// Every process to sample: (name, pid, URL if it serves HTTP, a master).
    fn watched(&self) -> Vec<Watched> {
        let mut all: Vec<Watched> = Vec::new();
        if let Some(pid) = self.etcd.pid() {
            all.push(("etcd".into(), pid, None, false));
        }
        for (id, _, proc) in &self.masters {
            if let Some(p) = proc
                && let Some(pid) = p.pid()
            {
                all.push((format!("master-{id}"), pid, Some(p.url.clone()), true));
            }
        }
        for (id, _, proc) in &self.workers {
            if let Some(p) = proc
                && let Some(pid) = p.pid()
            {
                all.push((format!("worker-{id}"), pid, Some(p.url.clone()), false));
                if let Some(guard) = procs::guard_of(pid) {
                    all.push((format!("guard-{id}"), guard, None, false));
                }
            }
        }
        all
    }
}

/// What the faults did, for the report.
#[derive(Default)]
struct Faults {
    worker_kills: u32,
    leader_kills: u32,
    partitions: u32,
}

/// Drives the faults on the timeline until `until`, sampling every process as it goes.
async fn faults(
    client: &reqwest::Client,
    cluster: &mut Cluster,
    timeline: &Timeline,
    samples: &mut Samples,
    started: Instant,
    until: Instant,
) -> Result<Faults, ToolError> {
    let mut done = Faults::default();
    let mut next_worker_kill = started + timeline.worker_kill_every;
    let mut next_leader_kill = started + timeline.leader_kill_every;
    let mut next_partition = started + timeline.partition_every;
    let mut partition_ends: Option<Instant> = None;
    // Workers killed in turn, but not the one cut off now and then.
    let mut victim = 0usize;
    let mut sampled = Instant::now() - Duration::from_secs(60);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        if now.duration_since(sampled) >= Duration::from_secs(5) {
            samples.take(client, cluster.watched()).await;
            sampled = now;
        }
        if now >= next_worker_kill {
            next_worker_kill += timeline.worker_kill_every;
            let index = victim % (cluster.workers.len() - 1);
            victim += 1;
            if let Some(mut proc) = cluster.workers[index].2.take() {
                proc.kill();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.start_worker(index)?;
            done.worker_kills += 1;
        }
        if now >= next_leader_kill {
            next_leader_kill += timeline.leader_kill_every;
            if let Some(index) = cluster.leader(client).await {
                if let Some(mut proc) = cluster.masters[index].2.take() {
                    proc.kill();
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.start_master(index)?;
                done.leader_kills += 1;
            }
        }
        if now >= next_partition && partition_ends.is_none() {
            next_partition += timeline.partition_every;
            cluster.proxy.blackhole();
            partition_ends = Some(now + timeline.partition_for);
            done.partitions += 1;
        }
        if partition_ends.is_some_and(|end| now >= end) {
            cluster.proxy.restore();
            partition_ends = None;
        }
    }
    cluster.proxy.restore();
    Ok(done)
}

pub(super) async fn soak(report: &mut Report, q: bool, secs: Option<u64>) -> Result<(), ToolError> {
    let timeline = Timeline::new(q, secs);
    let scratch = Scratch::new("soak")?;
    let log = scratch.0.join("runs.log");
    let config = config(&scratch.0, &log, timeline.length)?;
    let etcd = member::etcd(&scratch.0).await?;
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://")).await?;
    let mut cluster = Cluster {
        etcd,
        proxy,
        config,
        masters: Vec::new(),
        workers: Vec::new(),
    };
    for id in 1..=MASTERS {
        cluster.masters.push((id, free_port()?, None));
        cluster.start_master(usize::from(id - 1))?;
    }
    let client = http_client(16)?;
    let urls = cluster.master_urls();
    wait_until("a leader", WAIT, || async {
        cluster.leader(&client).await.is_some()
    })
    .await?;
    for url in &urls {
        wait_until("every master ready", WAIT, || is_ready(&client, url)).await?;
    }
    for id in 1..=WORKERS {
        cluster.workers.push((id, free_port()?, None));
        cluster.start_worker(id as usize - 1)?;
    }
    wait_until("the workers to register", WAIT, || async {
        workers(&client, &urls[0]).await.len() == WORKERS as usize
    })
    .await?;

    let started = Instant::now();
    let until = started + timeline.length;
    let book = Arc::new(Mutex::new(Book::default()));
    let traffic: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                client.clone(),
                urls.clone(),
                id,
                Arc::clone(&book),
                until,
            ))
        })
        .collect();
    let mut samples = Samples::default();
    let done = faults(
        &client,
        &mut cluster,
        &timeline,
        &mut samples,
        started,
        until,
    )
    .await?;
    for t in traffic {
        let _ = t.await;
    }
    let deadline = Instant::now() + WAIT;
    let (leader, all) = loop {
        if let Some(found) = settled(&client, &cluster, &urls).await {
            break found;
        }
        if Instant::now() >= deadline {
            break match cluster.leader(&client).await {
                Some(l) => (l, listed(&client, &urls[l]).await?),
                None => return Err(ToolError::Setup("no leader after the soak".into())),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let live = workers(&client, &urls[leader]).await;
    let stranded = all
        .values()
        .filter(|(_, w)| w.as_ref().is_none_or(|w| !live.contains(w)))
        .count();
    // Let the last runs write a heartbeat, then judge from the tasks' own records.
    tokio::time::sleep(BEAT * 2).await;
    let overlaps = runs::overlaps(&runs::runs_with_beats(&log, BEAT), now_ns());
    let book = book
        .lock()
        .map_err(|_| ToolError::Setup("book poisoned".into()))?;
    let mut lost: Vec<String> = book.contradictions.clone();
    for (name, expected) in &book.expected {
        let found = all.get(name);
        let wrong = match expected {
            Expected::Present(v) => found.is_none_or(|(got, _)| got != v),
            Expected::Absent => found.is_some(),
            Expected::Unknown => false,
        };
        if wrong {
            lost.push(format!("{name}: expected {expected:?}, found {found:?}"));
        }
    }
    let warmup = timeline.warmup;
    let (rss, fds, tasks, lines) = samples.growth(warmup, timeline.length / 3);
    for line in lines {
        report.note("12 soak", line);
    }
    for line in lost.iter().take(10) {
        report.note("12 soak", format!("lost: {line}"));
    }
    let length = format!("{} s", timeline.length.as_secs());
    report.add(
        "12 soak",
        format!(
            "{length}: {} writes acknowledged, {} unanswered; {} worker kills, {} leader kills, {} partitions",
            book.acknowledged, book.unanswered, done.worker_kills, done.leader_kills, done.partitions
        ),
        format!("{} lost", lost.len()),
        "",
        "",
        "0 lost",
        Some(lost.is_empty()),
    );
    report.add(
        "12 soak",
        "overlapping runs (the tasks' own heartbeats)",
        overlaps.len().to_string(),
        "",
        "",
        "0",
        Some(overlaps.is_empty()),
    );
    report.add(
        "12 soak",
        "tasks left on workers that are gone, at the end",
        stranded.to_string(),
        "",
        "",
        "0",
        Some(stranded == 0),
    );
    let pct = |g: f64| format!("{:+.1}%", g * 100.0);
    report.add(
        "12 soak",
        format!(
            "largest growth after {} s warm-up, masters, workers, guards: RSS / fds / tokio tasks",
            warmup.as_secs()
        ),
        format!("{} / {} / {}", pct(rss), pct(fds), pct(tasks)),
        "",
        "",
        "< 5% each",
        Some(rss < 0.05 && fds < 0.05 && tasks < 0.05),
    );
    Ok(())
}

/// Once settled (a leader, every worker registered, no resource on a worker that is gone):
/// the leader and every resource it lists.
async fn settled(
    client: &reqwest::Client,
    cluster: &Cluster,
    urls: &[String],
) -> Option<(usize, BTreeMap<String, (Option<u64>, Option<String>)>)> {
    let leader = cluster.leader(client).await?;
    let url = &urls[leader];
    let live = workers(client, url).await;
    let all = listed(client, url).await.ok()?;
    let stranded = all
        .values()
        .any(|(_, w)| w.as_ref().is_none_or(|w| !live.contains(w)));
    (live.len() == WORKERS as usize && !stranded).then_some((leader, all))
}
