//! Scenario 12: a soak. For a set time (10 minutes, `--soak-secs`, 30 s with `--quick`),
//! clients create, PATCH, restart and delete resources through 3 masters while 3 worker
//! processes run every task (each task writes its own heartbeats), and faults come on a
//! schedule: a worker killed and started again every minute, the leader killed every 3
//! minutes, and one worker cut off from etcd for 20 s every 2 minutes, its packets dropped on
//! connections held open. Reports each process's growth in memory, descriptors and tokio
//! tasks after the warm-up, acknowledged writes lost, overlapping runs judged from the tasks'
//! own records, and tasks left on dead workers at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use serde_json::json;

use super::harness::{get_json, http_client, is_ready, is_ready_leader, metric_sum, wait_until};
use super::report::Report;
use crate::tools::procs::{self, MOVE_AT_ONCE, Proc, Scratch, ToolError, free_port};
use crate::tools::proxy::Proxy;
use crate::tools::runs::{self, heartbeat_runner};

const WAIT: Duration = Duration::from_secs(60);
const MASTERS: u16 = 3;
const WORKERS: u32 = 3;
/// The worker cut off from etcd now and then: it reaches etcd through the proxy.
const CUT_OFF: u32 = 3;
/// Clients, each owning its own names, so that each name's writes come one after another.
const CLIENTS: usize = 4;
/// Most live resources per client.
const LIVE: usize = 50;
/// Between one client's requests.
const PACE: Duration = Duration::from_millis(100);
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

fn config(dir: &Path, log: &Path) -> Result<PathBuf, ToolError> {
    let path = dir.join("soak.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 2\n{MOVE_AT_ONCE}\
             worker:\n  lease_ttl_secs: 3\n  lease_margin_ms: 1000\n  stop_grace_ms: 2000\n  \
             capacity: {capacity}\n  data_dir: {data}\n  runners:\n    rules:\n{rule}\
             log:\n  level: error\n",
            capacity = CLIENTS * LIVE,
            data = dir.join("workers").display(),
            rule = heartbeat_runner("*", log, BEAT),
        ),
    )?;
    Ok(path)
}

/// What a client last had acknowledged for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// Created (or changed) and not deleted; the label `v` last set, if any.
    Present(Option<u64>),
    /// Deleted.
    Absent,
    /// A write whose answer never came: either outcome is right.
    Unknown,
}

/// The clients' book of acknowledged writes.
#[derive(Default)]
struct Book {
    expected: HashMap<String, Expected>,
    acknowledged: u64,
    unanswered: u64,
    /// Answers that contradict an acknowledged write (a 404 for a name that exists).
    contradictions: Vec<String>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One client's loop until `until`: creates, PATCHes, restarts and deletes its own names,
/// each through a master picked at random (followers forward writes).
async fn client_loop(
    client: reqwest::Client,
    masters: Vec<String>,
    id: usize,
    book: Arc<Mutex<Book>>,
    until: Instant,
) {
    let mut live: Vec<String> = Vec::new();
    let mut next = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(PACE).await;
        let (master, roll) = {
            let mut rng = rand::rng();
            (
                masters[rng.random_range(0..masters.len())].clone(),
                rng.random_range(0..100u32),
            )
        };
        let api = format!("{master}/api/v1/resources");
        let create = live.len() < LIVE / 2 || (live.len() < LIVE && roll < 40);
        if create || live.is_empty() {
            next += 1;
            let name = format!("soak-{id}-{next}");
            let answer = client
                .post(&api)
                .json(&json!({ "name": name }))
                .send()
                .await;
            let outcome = match answer.ok().map(|r| r.status().as_u16()) {
                Some(201) => Some(Expected::Present(None)),
                _ => None,
            };
            record(&book, &name, outcome, false);
            if book_says(&book, &name) == Some(Expected::Present(None)) {
                live.push(name);
            }
            continue;
        }
        let index = rand::rng().random_range(0..live.len());
        let name = live[index].clone();
        let url = format!("{api}/{name}");
        if roll < 65 {
            next += 1;
            let answer = client
                .patch(&url)
                .json(&json!({ "labels": { "v": next.to_string() } }))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            record(
                &book,
                &name,
                ok_then(answer, Expected::Present(Some(next))),
                answer == Some(404),
            );
        } else if roll < 80 {
            let answer = client
                .post(format!("{url}/restart"))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            let kept = book_says(&book, &name).unwrap_or(Expected::Unknown);
            record(&book, &name, ok_then(answer, kept), answer == Some(404));
        } else {
            let answer = client
                .delete(&url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            let gone = matches!(answer, Some(200 | 204));
            record(
                &book,
                &name,
                gone.then_some(Expected::Absent),
                answer == Some(404),
            );
            live.swap_remove(index);
            continue;
        }
        // A name whose last write went unanswered is left alone from now on.
        if book_says(&book, &name) == Some(Expected::Unknown) {
            live.retain(|n| *n != name);
        }
    }
}

/// `then` when the answer was a success, `None` (not acknowledged) otherwise.
fn ok_then(answer: Option<u16>, then: Expected) -> Option<Expected> {
    answer
        .is_some_and(|code| (200..300).contains(&code))
        .then_some(then)
}

fn book_says(book: &Arc<Mutex<Book>>, name: &str) -> Option<Expected> {
    book.lock().ok()?.expected.get(name).cloned()
}

/// Notes the answer to a write of `name`: `Some` when acknowledged, `None` when not (the
/// write may or may not have happened). A 404 for a name acknowledged present is a lost write.
fn record(book: &Arc<Mutex<Book>>, name: &str, outcome: Option<Expected>, not_found: bool) {
    let Ok(mut book) = book.lock() else {
        return;
    };
    let before = book.expected.get(name).cloned();
    if not_found && matches!(before, Some(Expected::Present(_))) {
        book.contradictions
            .push(format!("{name}: 404 after an acknowledged write"));
    }
    match outcome {
        Some(expected) => {
            book.acknowledged += 1;
            book.expected.insert(name.to_owned(), expected);
        }
        None => {
            book.unanswered += 1;
            book.expected.insert(name.to_owned(), Expected::Unknown);
        }
    }
}

/// Every resource a master lists (paged), by name: its label `v` and its worker.
async fn listed(
    client: &reqwest::Client,
    master: &str,
) -> Result<BTreeMap<String, (Option<u64>, Option<String>)>, ToolError> {
    let mut out = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{master}/api/v1/resources?limit=500");
        if let Some(token) = &next {
            url.push_str(&format!("&continue={token}"));
        }
        let page: serde_json::Value = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for item in page["items"].as_array().into_iter().flatten() {
            let Some(name) = item["name"].as_str() else {
                continue;
            };
            let v = item["labels"]["v"].as_str().and_then(|v| v.parse().ok());
            let worker = item["assigned_node"]["id"].as_str().map(str::to_owned);
            out.insert(name.to_owned(), (v, worker));
        }
        next = page["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if next.is_none() {
            return Ok(out);
        }
    }
}

/// The node ids of the registered workers.
async fn workers(client: &reqwest::Client, master: &str) -> Vec<String> {
    let body = get_json(client, &format!("{master}/api/v1/workers"))
        .await
        .unwrap_or_default();
    body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect()
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
}

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
struct Samples {
    by_pid: BTreeMap<u32, Series>,
}

impl Samples {
    async fn take(&mut self, client: &reqwest::Client, cluster: &Cluster) {
        let mut all: Vec<(String, u32, Option<String>, bool)> = Vec::new();
        if let Some(pid) = cluster.etcd.pid() {
            all.push(("etcd".into(), pid, None, false));
        }
        for (id, _, proc) in &cluster.masters {
            if let Some(p) = proc
                && let Some(pid) = p.pid()
            {
                all.push((format!("master-{id}"), pid, Some(p.url.clone()), true));
            }
        }
        for (id, _, proc) in &cluster.workers {
            if let Some(p) = proc
                && let Some(pid) = p.pid()
            {
                all.push((format!("worker-{id}"), pid, Some(p.url.clone()), false));
                if let Some(guard) = procs::guard_of(pid) {
                    all.push((format!("guard-{id}"), guard, None, false));
                }
            }
        }
        let now = Instant::now();
        for (name, pid, url, master) in all {
            let rss = rss_of(pid);
            let tasks = match &url {
                Some(url) => tokio_tasks(client, url, master).await,
                None => None,
            };
            let held = match (&url, master) {
                (Some(url), false) => get_json(client, &format!("http://{url}/tasks"))
                    .await
                    .and_then(|b| b["items"].as_array().map(|i| i.len() as u64)),
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
    fn growth(&self, warmup: Duration, span: Duration) -> (f64, f64, f64, Vec<String>) {
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
            samples.take(client, cluster).await;
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
    let config = config(&scratch.0, &log)?;
    let etcd = procs::etcd(&scratch.0).await?;
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
    for line in &lines {
        println!("  soak: {line}");
    }
    for line in lost.iter().take(10) {
        println!("  soak: lost: {line}");
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
