//! What every scenario shares: an HTTP client, readiness waits, a create call, an event-stream
//! reader, and the Go-format fixtures that the scale scenario writes straight into etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};
use futures_util::StreamExt;
use serde_json::json;

use crate::tools::procs::{self, Proc, ToolError};

pub(super) fn http_client(concurrency: usize) -> Result<reqwest::Client, ToolError> {
    Ok(crate::tls::client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Polls `check` every 5 ms until it holds; returns how long that took.
pub(super) async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<Duration, ToolError>
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
    Ok(start.elapsed())
}

/// True once a master's caches are synced (and, on the leader, its take-over is done).
pub(super) async fn is_ready(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

pub(super) async fn is_ready_leader(client: &reqwest::Client, url: &str) -> bool {
    let Ok(resp) = client.get(format!("{url}/api/v1/cluster")).send().await else {
        return false;
    };
    let Ok(view) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    view["self"]["role"] == "leader" && is_ready(client, url).await
}

pub(super) async fn create(client: &reqwest::Client, url: &str, name: &str) -> bool {
    client
        .post(format!("{url}/api/v1/resources"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .is_ok_and(|r| r.status() == 201)
}

/// Opens an SSE stream and returns a channel of (event name, object name) as they arrive.
pub(super) async fn sse(
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

pub(super) async fn wait_for_name(
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

pub(super) fn go_worker(i: usize) -> (String, String) {
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

pub(super) fn go_resource(i: usize, worker: usize) -> (String, String) {
    let name = format!("site-{i:06}");
    let value = json!({"ID": format!("{}", 2_125_000_000_000_000_000u64 + i as u64),
        "Name": name, "AssignedNode": format!("go.micro.server.worker-{worker}|10.0.{}.{}:9089", worker / 250, worker % 250),
        "CreationTime": 1_621_344_456_000_000_000i64 + i as i64})
    .to_string();
    (format!("/resources/{name}"), value)
}

/// Writes `kvs` in txns of 128 puts, 8 txns at a time. Returns the bytes written.
pub(super) async fn bulk_put(
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

/// A metric's value summed over its labels, from a master's `/metrics`.
pub(super) async fn metric_sum(client: &reqwest::Client, master: &str, name: &str) -> f64 {
    metric_sums(client, master, [name]).await[0]
}

/// Each metric's value summed over its labels, from one read of a master's `/metrics`.
pub(super) async fn metric_sums<const N: usize>(
    client: &reqwest::Client,
    master: &str,
    names: [&str; N],
) -> [f64; N] {
    let text = match client.get(format!("{master}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    names.map(|name| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

/// The JSON body of a GET, if it answers with one.
pub(super) async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Folds `fold` over every task a worker at `addr` lists, a page at a time (`None` when a page
/// does not answer).
pub(super) async fn worker_tasks<T>(
    client: &reqwest::Client,
    addr: &str,
    mut acc: T,
    fold: impl Fn(&mut T, &serde_json::Value),
) -> Option<T> {
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(t) => format!("http://{addr}/tasks?limit=1000&continue={t}"),
            None => format!("http://{addr}/tasks?limit=1000"),
        };
        let page = get_json(client, &url).await?;
        for task in page["items"].as_array()? {
            fold(&mut acc, task);
        }
        match page["continue"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => return Some(acc),
        }
    }
}

/// CPU seconds `p` has used (its own, not its children's).
pub(super) fn cpu(p: &Proc) -> f64 {
    p.pid()
        .and_then(procs::cpu_seconds)
        .map_or(0.0, |(own, _)| own)
}
