//! `crawler bench`: how close the control plane gets to raw etcd and to a bare HTTP handler,
//! and how it scales, measured in one run on this machine and reported as ratios.
//!
//! It starts its own etcd, masters and a bare HTTP server as child processes on loopback,
//! drives them with a closed-loop HTTP/1.1 keep-alive client at fixed concurrency
//! ([`load`]), prints a table and writes a Markdown report. `--quick` runs every scenario
//! with tiny counts, as a smoke test.

pub mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use futures_util::StreamExt;
use serde_json::json;

use crate::tools::procs::{self, Proc, Scratch, ToolError};
use load::{Stats, percentile};

/// How to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tiny counts, for a smoke test.
    pub quick: bool,
    /// Where to write the report.
    pub out: PathBuf,
    /// Only these scenarios (all when empty).
    pub only: Vec<u8>,
}

impl BenchOptions {
    fn runs(&self, scenario: u8) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }
}

/// One row of the report.
struct Row {
    scenario: &'static str,
    metric: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: Option<bool>,
}

struct Report {
    rows: Vec<Row>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        scenario: &'static str,
        metric: impl Into<String>,
        ours: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        target: &'static str,
        met: Option<bool>,
    ) {
        let row = Row {
            scenario,
            metric: metric.into(),
            ours: ours.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            target,
            met,
        };
        println!(
            "{:<22} {:<44} {:>16} {:>16} {:>8} {:<28} {}",
            row.scenario,
            row.metric,
            row.ours,
            row.baseline,
            row.ratio,
            row.target,
            verdict(row.met)
        );
        self.rows.push(row);
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rate(r: f64) -> String {
    format!("{r:.0}/s")
}

fn http_client(concurrency: usize) -> Result<reqwest::Client, ToolError> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<(), ToolError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            return Err(ToolError::Setup(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// True once a master's caches are synced (and, on the leader, its take-over is done).
async fn is_ready(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

async fn is_ready_leader(client: &reqwest::Client, url: &str) -> bool {
    let Ok(resp) = client.get(format!("{url}/api/v1/cluster")).send().await else {
        return false;
    };
    let Ok(view) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    view["self"]["role"] == "leader" && is_ready(client, url).await
}

async fn create(client: &reqwest::Client, url: &str, name: &str) -> bool {
    client
        .post(format!("{url}/api/v1/resources"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .is_ok_and(|r| r.status() == 201)
}

/// Runs every scenario and writes the report.
pub async fn run(options: BenchOptions) -> Result<(), ToolError> {
    let q = options.quick;
    let mut report = Report { rows: Vec::new() };
    println!(
        "{:<22} {:<44} {:>16} {:>16} {:>8} {:<28}",
        "scenario", "metric", "ours", "baseline", "ratio", "target"
    );
    let started = Instant::now();
    let scratch = Scratch::new("main")?;
    let etcd = procs::etcd(&scratch.0).await?;
    let ttl_secs = 2;
    let config = procs::master_config(&scratch.0, ttl_secs)?;
    let leader = procs::master(1, &etcd.url, &config)?;
    let client = http_client(64)?;
    wait_until("the first master to lead", Duration::from_secs(30), || {
        is_ready_leader(&client, &leader.url)
    })
    .await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;

    if options.runs(1) {
        cached_read(&mut report, q, &scratch, &client, &leader, &raw).await?;
    }
    if options.runs(2) {
        create_on_leader(&mut report, q, &client, &leader, &raw).await?;
    }
    let follower = procs::master(2, &etcd.url, &config)?;
    wait_until("the follower", Duration::from_secs(30), || {
        is_ready(&client, &follower.url)
    })
    .await?;
    if options.runs(3) {
        through_follower(&mut report, q, &client, &leader, &follower).await?;
    }
    if options.runs(4) {
        propagation(&mut report, q, &client, &leader, &follower, &raw).await?;
    }
    if options.runs(5) {
        failover(
            &mut report,
            &client,
            leader,
            follower,
            &etcd,
            &config,
            ttl_secs,
        )
        .await?;
    }
    drop(raw);
    drop(etcd);
    if options.runs(6) {
        scale(&mut report, q).await?;
    }
    if options.runs(7) {
        ids(&mut report, q);
    }

    let total = started.elapsed();
    println!("benchmark finished in {:.1} s", total.as_secs_f64());
    write_report(&options, &report, total)?;
    Ok(())
}

async fn cached_read(
    report: &mut Report,
    q: bool,
    scratch: &Scratch,
    client: &reqwest::Client,
    leader: &Proc,
    raw: &Client,
) -> Result<(), ToolError> {
    if !create(client, &leader.url, "bench-read").await {
        return Err(ToolError::Setup("could not create the read target".into()));
    }
    let url = format!("{}/api/v1/resources/bench-read", leader.url);
    let body = client.get(&url).send().await?.bytes().await?;
    let body_file = scratch.0.join("body.json");
    std::fs::write(&body_file, &body)?;
    let bare = procs::bare(&body_file)?;
    wait_until("the bare server", Duration::from_secs(10), || async {
        client.get(&bare.url).send().await.is_ok()
    })
    .await?;
    let n = if q { 500 } else { 40_000 };
    let get = |url: String| {
        let client = client.clone();
        move |_| {
            let client = client.clone();
            let url = url.clone();
            async move {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    };
    // Warm both up, then measure them alternately, twice, and keep each one's better run.
    load::run(n / 10, 64, get(url.clone())).await;
    load::run(n / 10, 64, get(bare.url.clone())).await;
    let mut ours: Option<Stats> = None;
    let mut base: Option<Stats> = None;
    for _ in 0..2 {
        let o = load::run(n, 64, get(url.clone())).await;
        let b = load::run(n, 64, get(bare.url.clone())).await;
        if ours.as_ref().is_none_or(|x| o.per_sec() > x.per_sec()) {
            ours = Some(o);
        }
        if base.as_ref().is_none_or(|x| b.per_sec() > x.per_sec()) {
            base = Some(b);
        }
    }
    let (ours, base) = (
        ours.ok_or_else(|| ToolError::Setup("no run".into()))?,
        base.ok_or_else(|| ToolError::Setup("no run".into()))?,
    );
    let etcd_n = if q { 500 } else { 20_000 };
    let key = "/resources/bench-read";
    let range = {
        let raw = raw.clone();
        load::run(etcd_n, 64, move |_| {
            let mut raw = raw.clone();
            async move {
                raw.get(key, Some(GetOptions::new().with_serializable()))
                    .await
                    .is_ok()
            }
        })
        .await
    };
    let r1 = ours.per_sec() / base.per_sec();
    report.add(
        "1 cached read c=64",
        "GET /api/v1/resources/{name} vs bare axum",
        rate(ours.per_sec()),
        rate(base.per_sec()),
        format!("{r1:.2}x"),
        ">= 0.8x",
        Some(r1 >= 0.8),
    );
    report.add(
        "1 cached read c=64",
        "p50 / p99 (ours)",
        format!("{} / {}", ms(ours.pct(50)), ms(ours.pct(99))),
        format!("{} / {}", ms(base.pct(50)), ms(base.pct(99))),
        "",
        "",
        None,
    );
    let r2 = ours.per_sec() / range.per_sec();
    report.add(
        "1 cached read c=64",
        "GET vs etcd serializable range",
        rate(ours.per_sec()),
        rate(range.per_sec()),
        format!("{r2:.2}x"),
        ">= 10x",
        Some(r2 >= 10.0),
    );
    Ok(())
}

/// A raw etcd txn shaped like the leader's create: a fence compare around a nested txn that
/// creates the key only if it does not exist.
async fn raw_create(mut raw: Client, fence: (String, i64), key: String, value: Vec<u8>) -> bool {
    let inner = Txn::new()
        .when([Compare::create_revision(
            key.as_bytes(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(key.as_bytes(), value, None)]);
    let outer = Txn::new()
        .when([Compare::create_revision(
            fence.0.as_bytes(),
            CompareOp::Equal,
            fence.1,
        )])
        .and_then([TxnOp::txn(inner)]);
    raw.txn(outer).await.is_ok_and(|r| r.succeeded())
}

async fn create_on_leader(
    report: &mut Report,
    q: bool,
    client: &reqwest::Client,
    leader: &Proc,
    raw: &Client,
) -> Result<(), ToolError> {
    let mut c = raw.clone();
    let put = c.put("/bench/fence", "x", None).await?;
    let fence = (
        "/bench/fence".to_owned(),
        put.header().map_or(0, |h| h.revision()),
    );
    let value = serde_json::to_vec(&crate::model::resource::Resource {
        id: "2125152218540679168".into(),
        name: "bench-raw-000000".into(),
        assigned_node: String::new(),
        creation_time: 1,
        extra: BTreeMap::new(),
    })
    .unwrap_or_default();
    for (concurrency, n) in [
        (1usize, if q { 50 } else { 1_000 }),
        (64, if q { 500 } else { 20_000 }),
    ] {
        let tag = format!("c{concurrency}");
        let ours = {
            let client = client.clone();
            let url = leader.url.clone();
            let tag = tag.clone();
            load::run(n, concurrency, move |i| {
                let client = client.clone();
                let url = url.clone();
                let name = format!("create-{tag}-{i}");
                async move { create(&client, &url, &name).await }
            })
            .await
        };
        let base = {
            let raw = raw.clone();
            let fence = fence.clone();
            let value = value.clone();
            let tag = tag.clone();
            load::run(n, concurrency, move |i| {
                raw_create(
                    raw.clone(),
                    fence.clone(),
                    format!("/bench/raw/{tag}-{i}"),
                    value.clone(),
                )
            })
            .await
        };
        if concurrency == 1 {
            let limit = base.pct(50).mul_f64(1.3) + Duration::from_millis(1);
            report.add(
                "2 create on leader c=1",
                "p50 vs raw fenced txn",
                ms(ours.pct(50)),
                ms(base.pct(50)),
                format!(
                    "{:.2}x",
                    ours.pct(50).as_secs_f64() / base.pct(50).as_secs_f64().max(1e-9)
                ),
                "<= 1.3x raw + 1 ms",
                Some(ours.pct(50) <= limit),
            );
            report.add(
                "2 create on leader c=1",
                "p99 (ours / raw)",
                ms(ours.pct(99)),
                ms(base.pct(99)),
                "",
                "",
                None,
            );
        } else {
            let r = ours.per_sec() / base.per_sec();
            report.add(
                "2 create on leader c=64",
                "creates/s vs raw fenced txns/s",
                rate(ours.per_sec()),
                rate(base.per_sec()),
                format!("{r:.2}x"),
                ">= 0.5x",
                Some(r >= 0.5),
            );
        }
    }
    // Don't leave the raw keys around for later scenarios.
    c.delete(
        "/bench/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await?;
    Ok(())
}

async fn through_follower(
    report: &mut Report,
    q: bool,
    client: &reqwest::Client,
    leader: &Proc,
    follower: &Proc,
) -> Result<(), ToolError> {
    let n = if q { 50 } else { 1_000 };
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for i in 0..n {
        for (url, samples, tag) in [
            (&leader.url, &mut direct, "d"),
            (&follower.url, &mut proxied, "p"),
        ] {
            let t = Instant::now();
            if create(client, url, &format!("via-{tag}-{i}")).await {
                samples.push(t.elapsed());
            }
        }
    }
    direct.sort();
    proxied.sort();
    let (d, p) = (percentile(&direct, 50), percentile(&proxied, 50));
    report.add(
        "3 create via follower",
        "p50 proxied vs direct (c=1, interleaved)",
        ms(p),
        ms(d),
        format!("+{}", ms(p.saturating_sub(d))),
        "<= direct + 1 ms",
        Some(p <= d + Duration::from_millis(1)),
    );
    report.add(
        "3 create via follower",
        "p99 proxied / direct",
        ms(percentile(&proxied, 99)),
        ms(percentile(&direct, 99)),
        "",
        "",
        None,
    );
    Ok(())
}

/// Opens an SSE stream and returns a channel of (event name, object name) as they arrive.
async fn sse(
    client: &reqwest::Client,
    url: String,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>, ToolError> {
    let resp = client.get(url).send().await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let now = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data:")
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim())
                        && let Some(name) = v["name"].as_str()
                        && tx.send((name.to_owned(), now)).is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

async fn wait_for_name(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    name: &str,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (seen, at) = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if seen == name {
            return Some(at);
        }
    }
}

async fn propagation(
    report: &mut Report,
    q: bool,
    client: &reqwest::Client,
    leader: &Proc,
    follower: &Proc,
    raw: &Client,
) -> Result<(), ToolError> {
    let n = if q { 30 } else { 500 };
    let mut resources = sse(
        client,
        format!("{}/api/v1/events?kind=resources", follower.url),
    )
    .await?;
    let mut workers = sse(
        client,
        format!("{}/api/v1/events?kind=workers", follower.url),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut write_to_follower, mut register_to_follower) = (Vec::new(), Vec::new());
    let lease = raw.clone().lease_grant(600, None).await?.id();
    for i in 0..n {
        let name = format!("prop-{i}");
        let t = Instant::now();
        if create(client, &leader.url, &name).await
            && let Some(at) = wait_for_name(&mut resources, &name).await
        {
            write_to_follower.push(at.duration_since(t));
        }
        let id = format!("go.micro.server.worker-bench{i}");
        // Capacity 0: these registrations take no resources, so the measurement does not
        // set off a reassignment storm.
        let record = json!({"name":"go.micro.server.worker","version":"latest","metadata":null,
            "endpoints":[],"nodes":[{"id": id,"address":"127.0.0.1:1","metadata":{"capacity":"0"}}]});
        let t = Instant::now();
        raw.clone()
            .put(
                format!("/micro/registry/go.micro.server.worker/{id}"),
                record.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        if let Some(at) = wait_for_name(&mut workers, &id).await {
            register_to_follower.push(at.duration_since(t));
        }
    }
    raw.clone().lease_revoke(lease).await?;
    // etcd's own put-to-watch-event latency, measured the same way.
    let mut stream = raw
        .clone()
        .watch("/bench-watch/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let mut etcd_own = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        raw.clone()
            .put(format!("/bench-watch/{i}"), "x", None)
            .await?;
        while let Ok(Some(resp)) = stream.message().await {
            if !resp.events().is_empty() {
                etcd_own.push(t.elapsed());
                break;
            }
        }
    }
    drop(stream);
    raw.clone()
        .delete(
            "/bench-watch/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    etcd_own.sort();
    write_to_follower.sort();
    register_to_follower.sort();
    let base99 = percentile(&etcd_own, 99);
    for (metric, samples) in [
        (
            "create on leader -> follower cache p50/p99",
            &write_to_follower,
        ),
        (
            "worker registration -> follower cache p50/p99",
            &register_to_follower,
        ),
    ] {
        let p99 = percentile(samples, 99);
        report.add(
            "4 propagation",
            metric,
            format!("{} / {}", ms(percentile(samples, 50)), ms(p99)),
            format!("{} / {}", ms(percentile(&etcd_own, 50)), ms(base99)),
            format!("+{}", ms(p99.saturating_sub(base99))),
            "p99 <= etcd p99 + 5 ms",
            Some(p99 <= base99 + Duration::from_millis(5)),
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn failover(
    report: &mut Report,
    client: &reqwest::Client,
    mut leader: Proc,
    follower: Proc,
    etcd: &Proc,
    config: &std::path::Path,
    ttl_secs: u64,
) -> Result<(), ToolError> {
    let ttl = Duration::from_secs(ttl_secs);
    let first_write = |url: String, since: Instant| {
        let client = client.clone();
        async move {
            let mut i = 0u64;
            loop {
                i += 1;
                if create(
                    &client,
                    &url,
                    &format!("fo-{}-{i}", since.elapsed().as_micros()),
                )
                .await
                {
                    return since.elapsed();
                }
                if since.elapsed() > Duration::from_secs(60) {
                    return since.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    leader.signal(9);
    let killed = Instant::now();
    let kill9 = first_write(follower.url.clone(), killed).await;
    leader.kill();
    let r = kill9.as_secs_f64() / ttl.as_secs_f64();
    report.add(
        "5 failover",
        format!("kill -9 leader -> first accepted write (TTL {ttl_secs} s)"),
        ms(kill9),
        format!("TTL {}", ms(ttl)),
        format!("{r:.2}x TTL"),
        "<= 1.3x TTL",
        Some(r <= 1.3),
    );
    let third = procs::master(3, &etcd.url, config)?;
    // Ready: its caches, the masters' campaign keys included, are synced.
    wait_until(
        "the third master to follow",
        Duration::from_secs(30),
        || is_ready(client, &third.url),
    )
    .await?;
    follower.signal(15);
    let stopping = Instant::now();
    let graceful = first_write(third.url.clone(), stopping).await;
    let r = graceful.as_secs_f64() / ttl.as_secs_f64();
    report.add(
        "5 failover",
        "SIGTERM leader -> first accepted write",
        ms(graceful),
        format!("TTL {}", ms(ttl)),
        format!("{r:.2}x TTL"),
        "<= 0.1x TTL",
        Some(r <= 0.1),
    );
    Ok(())
}

fn go_worker(i: usize) -> (String, String) {
    let id = format!("go.micro.server.worker-{i}");
    let value = json!({"name":"go.micro.server.worker","version":"latest","metadata":null,
        "endpoints":[],"nodes":[{"id": id,"address": format!("10.0.{}.{}:9089", i / 250, i % 250),
        "metadata":{"registry":"etcd","server":"grpc"}}]})
    .to_string();
    (
        format!("/micro/registry/go.micro.server.worker/{id}"),
        value,
    )
}

fn go_resource(i: usize, worker: usize) -> (String, String) {
    let name = format!("site-{i:06}");
    let value = json!({"ID": format!("{}", 2_125_000_000_000_000_000u64 + i as u64),
        "Name": name, "AssignedNode": format!("go.micro.server.worker-{worker}|10.0.{}.{}:9089", worker / 250, worker % 250),
        "CreationTime": 1_621_344_456_000_000_000i64 + i as i64})
    .to_string();
    (format!("/resources/{name}"), value)
}

/// Writes `kvs` in txns of 128 puts, 8 txns at a time. Returns the bytes written.
async fn bulk_put(
    raw: &Client,
    kvs: Vec<(String, String)>,
    lease: Option<i64>,
) -> Result<usize, ToolError> {
    let bytes = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
    let batches: Vec<Vec<(String, String)>> = kvs.chunks(128).map(<[_]>::to_vec).collect();
    let batches = Arc::new(std::sync::Mutex::new(batches));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let raw = raw.clone();
        let batches = Arc::clone(&batches);
        tasks.spawn(async move {
            loop {
                let batch = batches.lock().ok().and_then(|mut b| b.pop());
                let Some(batch) = batch else { return Ok(()) };
                let ops: Vec<TxnOp> = batch
                    .into_iter()
                    .map(|(k, v)| TxnOp::put(k, v, lease.map(|l| PutOptions::new().with_lease(l))))
                    .collect();
                raw.clone().txn(Txn::new().and_then(ops)).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(ToolError::Etcd(e));
        }
    }
    Ok(bytes)
}

async fn scale(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (n_workers, n_resources) = if q { (100, 1_000) } else { (10_000, 100_000) };
    let scratch = Scratch::new("scale")?;
    let etcd = procs::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let lease = raw.clone().lease_grant(3_600, None).await?.id();
    let written = Instant::now();
    let worker_bytes = bulk_put(&raw, (0..n_workers).map(go_worker).collect(), Some(lease)).await?;
    let resource_bytes = bulk_put(
        &raw,
        (0..n_resources)
            .map(|i| go_resource(i, i % n_workers))
            .collect(),
        None,
    )
    .await?;
    println!(
        "scale: wrote {n_workers} workers and {n_resources} resources ({:.1} MB) in {:.1} s",
        (worker_bytes + resource_bytes) as f64 / 1e6,
        written.elapsed().as_secs_f64()
    );
    let config = procs::master_config(&scratch.0, 2)?;
    let client = http_client(8)?;
    let spawned = Instant::now();
    let a = procs::master(1, &etcd.url, &config)?;
    wait_until("the first master", Duration::from_secs(120), || {
        is_ready_leader(&client, &a.url)
    })
    .await?;
    let cold = spawned.elapsed();
    let b = procs::master(2, &etcd.url, &config)?;
    wait_until(
        "the second master's caches",
        Duration::from_secs(120),
        || is_ready(&client, &b.url),
    )
    .await?;
    a.signal(15);
    let handover = Instant::now();
    wait_until(
        "the second master to take over",
        Duration::from_secs(120),
        || is_ready_leader(&client, &b.url),
    )
    .await?;
    let takeover = handover.elapsed();
    report.add(
        "6 scale",
        format!("take-over with {n_workers} workers, {n_resources} resources"),
        ms(takeover),
        format!("cold start {}", ms(cold)),
        "",
        "< 2 s",
        Some(takeover < Duration::from_secs(2)),
    );
    let objects = n_workers + n_resources;
    let serialized = worker_bytes + resource_bytes;
    let rss = b.rss_bytes().unwrap_or(0) as usize;
    let budget = 2 * serialized + 200 * objects;
    report.add(
        "6 scale",
        "master RSS vs 2x serialized + 200 B/object",
        format!("{:.1} MB", rss as f64 / 1e6),
        format!("{:.1} MB", budget as f64 / 1e6),
        format!("{:.0} B/obj", rss as f64 / objects as f64),
        "RSS < budget",
        Some(rss > 0 && rss < budget),
    );
    // A follower holds the caches but not the leader's placement.
    let c = procs::master(3, &etcd.url, &config)?;
    wait_until("a follower's caches", Duration::from_secs(120), || {
        is_ready(&client, &c.url)
    })
    .await?;
    let follower_rss = c.rss_bytes().unwrap_or(0);
    report.add(
        "6 scale",
        "follower RSS (caches only, no placement)",
        format!("{:.1} MB", follower_rss as f64 / 1e6),
        format!("{:.1} MB", budget as f64 / 1e6),
        format!("{:.0} B/obj", follower_rss as f64 / objects as f64),
        "",
        None,
    );
    drop(c);
    report.add(
        "6 scale",
        "serialized size per object",
        format!("{:.0} B", serialized as f64 / objects as f64),
        "",
        "",
        "",
        None,
    );
    let pages = if q { 20 } else { 200 };
    let page = {
        let client = client.clone();
        let url = format!("{}/api/v1/resources?limit=1000", b.url);
        load::run(pages, 1, move |_| {
            let client = client.clone();
            let url = url.clone();
            async move {
                match client.get(&url).send().await {
                    Ok(r) => r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };
    report.add(
        "6 scale",
        "GET /api/v1/resources?limit=1000 p50 / p99",
        format!("{} / {}", ms(page.pct(50)), ms(page.pct(99))),
        "",
        "",
        "",
        None,
    );
    // A worker holding 1,000 resources dies.
    let big = 1_000.min(n_resources);
    let big_lease = raw.clone().lease_grant(3_600, None).await?.id();
    let (key, value) = go_worker(n_workers + 1);
    raw.clone()
        .put(key, value, Some(PutOptions::new().with_lease(big_lease)))
        .await?;
    bulk_put(
        &raw,
        (0..big)
            .map(|i| go_resource(n_resources + i, n_workers + 1))
            .collect(),
        None,
    )
    .await?;
    let held = format!(
        "{}/api/v1/resources?limit=10000&worker=go.micro.server.worker-{}",
        b.url,
        n_workers + 1
    );
    let count = |client: reqwest::Client, url: String| async move {
        let Ok(resp) = client.get(url).send().await else {
            return usize::MAX;
        };
        resp.json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(usize::MAX)
    };
    wait_until(
        "the big worker's resources",
        Duration::from_secs(60),
        || {
            let (client, held) = (client.clone(), held.clone());
            async move { count(client, held).await == big }
        },
    )
    .await?;
    raw.clone().lease_revoke(big_lease).await?;
    let died = Instant::now();
    wait_until("reassignment", Duration::from_secs(60), || {
        let (client, held) = (client.clone(), held.clone());
        async move { count(client, held).await == 0 }
    })
    .await?;
    let moved = died.elapsed();
    report.add(
        "6 scale",
        format!("reassign the {big} resources of a dead worker"),
        ms(moved),
        "",
        "",
        "< 1 s",
        Some(moved < Duration::from_secs(1)),
    );
    Ok(())
}

fn ids(report: &mut Report, q: bool) {
    let n: u64 = if q { 1_000_000 } else { 20_000_000 };
    let Ok(generator) = crate::model::snowflake::Generator::new(1) else {
        return;
    };
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..n {
        if let Ok(id) = generator.next_id() {
            last = std::hint::black_box(id);
        }
    }
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(last);
    report.add(
        "7 IDs",
        "snowflake IDs per second, one thread",
        format!("{:.1}M/s", per_sec / 1e6),
        "",
        "",
        ">= 1M/s",
        Some(per_sec >= 1e6),
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.0} GiB", kb as f64 / 1048576.0),
        );
    let etcd = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory} memory; {etcd}; one etcd member on loopback")
}

fn write_report(options: &BenchOptions, report: &Report, total: Duration) -> Result<(), ToolError> {
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `cargo run --release -- bench`{} on {date}, in {:.0} s.\n",
        if options.quick {
            " --quick (smoke counts, not figures to quote)"
        } else {
            ""
        },
        total.as_secs_f64()
    );
    let _ = writeln!(md, "Machine: {}.\n", machine());
    let _ = writeln!(
        md,
        "Every figure is measured in the same run as its baseline; ratios, not absolute numbers, \
         are what carry over to another machine. The load generator is a closed-loop HTTP/1.1 \
         keep-alive client (reqwest) in the benchmark process, sharing the machine's cores with \
         etcd and the masters.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | metric | ours | baseline | ratio | target | |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in &report.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.metric,
            r.ours,
            r.baseline,
            r.ratio,
            r.target,
            verdict(r.met)
        );
    }
    std::fs::write(&options.out, md)?;
    println!("report written to {}", options.out.display());
    Ok(())
}
