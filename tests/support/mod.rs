//! Test harness: a real etcd on free loopback ports, a cuttable TCP proxy, and in-process
//! masters and workers on port 0.
#![allow(dead_code)]

pub mod etcd;
pub mod process;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use crawler::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use crawler::tools::proxy::Proxy;
#[allow(unused_imports)]
pub use crawler::tools::runs::{logged_runner, overlaps, runs};
#[allow(unused_imports)]
pub use etcd::{Etcd, EtcdCluster};
#[allow(unused_imports)]
pub use process::{
    Proc, Role, crawler_process, fault_config, fault_config_with, master_process, worker_process,
};

/// Runs a third-party tool; returns whether it succeeded and all it printed.
pub fn run_tool(command: &mut std::process::Command) -> (bool, String) {
    let output = command.output().expect("run the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    crawler::tools::procs::free_port().expect("bind a free port")
}

/// A configuration pointing at `endpoints`, with TTLs short enough for tests. Logs of the
/// in-process masters and workers are shown when `RUST_LOG` is set.
pub fn test_config(endpoints: &[String]) -> Config {
    if std::env::var_os("RUST_LOG").is_some() {
        crawler::logging::init(&crawler::config::LogConfig::default());
    }
    let mut config = Config::default();
    config.etcd.endpoints = endpoints.to_vec();
    config.etcd.request_timeout_ms = 2_000;
    config.worker.lease_ttl_secs = 3;
    config.master.session_ttl_secs = 2;
    config.tasks.clear();
    // Tasks move at once (`tests/scheduling.rs` tests the policy).
    config.scheduling = crawler::tools::procs::move_at_once();
    // Task directories of this configuration's own (each worker gets `worker-<id>` in it):
    // the default, `<tmp>/crawler-<node id>`, is shared by every test and every earlier run
    // on the machine, whose logs then show in this test's.
    config.worker.data_dir = Some(scratch_dir("config"));
    config
}

/// A new directory under `<tmp>/crawler-tests/`, named after this test process. Those of test
/// processes no longer running are removed the first time this is called.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static MADE: AtomicU64 = AtomicU64::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let root = std::env::temp_dir().join("crawler-tests");
    SWEPT.call_once(|| {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default();
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!("{}-{what}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process-like thing running in this test: stops when `stop` is called or on drop.
pub struct Running {
    /// Base URL, `http://127.0.0.1:<port>` (`https://` for a master with TLS).
    pub url: String,
    /// Bound address.
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Running {
    /// Signals shutdown and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }

    /// Stops without any graceful step: the task is aborted, as a crash would.
    pub fn crash(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

fn shutdown_pair() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Starts a master in this process on a free port.
pub async fn start_master(config: Config, id: u16) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let scheme = if config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}");
    let options = crawler::server::MasterOptions {
        id,
        advertise: url.clone(),
    };
    let (stop, shutdown) = shutdown_pair();
    let handle = tokio::spawn(async move {
        if let Err(error) = crawler::server::run(listener, config, options, shutdown).await {
            eprintln!("master {id} failed: {error}");
        }
    });
    Running {
        url,
        addr,
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// Starts a worker agent in this process on a free port, its task directories in
/// `<data_dir>/worker-<id>` (the same when it is started again with the same id).
pub async fn start_worker(mut config: Config, id: u32, capacity: u32) -> Running {
    config.worker.data_dir = Some(
        config
            .worker
            .data_dir
            .unwrap_or_else(|| scratch_dir("worker"))
            .join(format!("worker-{id}")),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let options = crawler::worker::WorkerOptions {
        id,
        address: addr.clone(),
        capacity,
        labels: config.worker.labels.clone(),
        program: env!("CARGO_BIN_EXE_crawler").into(),
    };
    let (stop, shutdown) = shutdown_pair();
    let handle = tokio::spawn(async move {
        if let Err(error) = crawler::worker::run(listener, config, options, shutdown).await {
            eprintln!("worker {id} failed: {error}");
        }
    });
    Running {
        url: format!("http://{addr}"),
        addr,
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// A plain HTTP client for tests.
pub fn http() -> reqwest::Client {
    crawler::tls::client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// What [`request`] got back.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The response's headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body; empty for an event stream, which is not read.
    pub text: String,
}

impl Answer {
    /// The body as JSON, or null.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `method url` with a bearer `token`, extra `headers` and a JSON `body`, each when
/// given.
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = http().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let resp = request.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let is_stream = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = if is_stream {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    Answer {
        status,
        headers,
        text,
    }
}

/// GETs `url` and returns status, revision header and JSON body.
pub async fn get_json(url: &str) -> Option<(u16, Option<i64>, serde_json::Value)> {
    let resp = http().get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    let revision = resp
        .headers()
        .get("x-etcd-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.json().await.ok()?;
    Some((status, revision, body))
}

/// The worker ids a master lists.
pub async fn worker_ids(master: &str) -> Option<Vec<String>> {
    let (status, _, body) = get_json(&format!("{master}/api/v1/workers")).await?;
    if status != 200 {
        return None;
    }
    Some(
        body["items"]
            .as_array()?
            .iter()
            .filter_map(|w| w["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// The `/metrics` text of a master.
pub async fn metrics_text(master: &str) -> String {
    http()
        .get(format!("{master}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// A metric summed over its labels, from a master's `/metrics`.
pub async fn metric(master: &str, name: &str) -> f64 {
    metrics_text(master)
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// POSTs a create and returns status and JSON body.
pub async fn create(master: &str, name: &str) -> Option<(u16, serde_json::Value)> {
    create_with(master, serde_json::json!({ "name": name })).await
}

/// POSTs a create with the whole `body` (labels, schedule) and returns status and JSON body.
pub async fn create_with(
    master: &str,
    body: serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let resp = http()
        .post(format!("{master}/api/v1/resources"))
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// The `/api/v1/cluster` view of a master.
pub async fn cluster(master: &str) -> Option<serde_json::Value> {
    let (status, _, body) = get_json(&format!("{master}/api/v1/cluster")).await?;
    (status == 200).then_some(body)
}

/// Waits until `master` answers `/readyz` with 200 (caches synced).
pub async fn wait_ready(master: &str) {
    eventually("the master is ready", Duration::from_secs(20), || async {
        let resp = http().get(format!("{master}/readyz")).send().await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
}

/// Waits until one of `masters` says it is the leader and is ready, and every other one of
/// them knows it (so a write sent to any of them is forwarded, not refused for want of a
/// leader); returns its index.
pub async fn ready_leader(masters: &[&str], timeout: Duration) -> usize {
    eventually("a ready leader, known to every master", timeout, || async {
        for (i, m) in masters.iter().enumerate() {
            let Some(c) = cluster(m).await else { continue };
            if c["self"]["role"] != "leader" {
                continue;
            }
            let ready = http().get(format!("{m}/readyz")).send().await.ok()?;
            if ready.status() != 200 {
                continue;
            }
            let url = c["leader"]["url"].as_str()?.to_owned();
            for other in masters {
                if cluster(other).await?["leader"]["url"].as_str() != Some(url.as_str()) {
                    return None;
                }
            }
            return Some(i);
        }
        None
    })
    .await
}

/// Every resource in etcd under the default prefix, decoded (read in pages, as the master
/// does, so that large prefixes fit etcd-client's message limit).
pub async fn stored_resources(etcd: &Etcd) -> Vec<crawler::model::resource::Resource> {
    use crawler::etcd::cache::Object;
    let client = etcd.client().await;
    let mut out = Vec::new();
    crawler::etcd::list_prefix(&client, "/resources/", 0, Duration::from_secs(10), |kvs| {
        out.extend(kvs.iter().filter_map(|kv| {
            let key = std::str::from_utf8(kv.key()).ok()?;
            let name = key.strip_prefix("/resources/")?;
            crawler::model::resource::Resource::decode(name, kv.value()).ok()
        }));
    })
    .await
    .expect("range");
    out
}

/// Waits until `master` lists exactly `n` workers.
pub async fn wait_workers(master: &str, n: usize) {
    eventually(
        &format!("{n} workers listed"),
        Duration::from_secs(20),
        || async { (worker_ids(master).await?.len() == n).then_some(()) },
    )
    .await;
}

/// A fresh etcd and one master that has become the ready leader.
pub async fn etcd_and_leader() -> (Etcd, Config, Running) {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let master = start_master(config.clone(), 1).await;
    ready_leader(&[&master.url], Duration::from_secs(20)).await;
    (etcd, config, master)
}

/// Polls creates of fresh names on `master` until one gets 201; returns the time since
/// `since` (how long until writes were accepted).
pub async fn first_accepted_write(master: &str, since: Instant) -> Duration {
    let mut attempt = 0u32;
    eventually("a write is accepted", Duration::from_secs(30), || {
        attempt += 1;
        let name = format!("probe-{}-{attempt}", since.elapsed().as_micros());
        async move { (create(master, &name).await?.0 == 201).then_some(()) }
    })
    .await;
    since.elapsed()
}

/// Waits until `master` names `leader` as the leader.
pub async fn wait_leader_known(master: &str, leader: &str) {
    eventually("the leader is known", Duration::from_secs(20), || async {
        (cluster(master).await?["leader"]["url"].as_str() == Some(leader)).then_some(())
    })
    .await;
}

/// Asserts that `master`'s resources and workers equal an etcd range read at the revision the
/// master's responses name (a consistency check for every fault test).
pub async fn assert_consistent(etcd: &Etcd, master: &str) {
    use crawler::etcd::cache::Object;
    for (path, prefix) in [
        ("/api/v1/resources?limit=10000", "/resources/"),
        ("/api/v1/workers", "/micro/registry/go.micro.server.worker/"),
    ] {
        let (status, revision, body) = get_json(&format!("{master}{path}")).await.expect("list");
        assert_eq!(status, 200);
        let revision = revision.expect("revision header");
        let mut client = etcd.client().await;
        let resp = client
            .get(
                prefix,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_revision(revision),
                ),
            )
            .await
            .expect("range at the master's revision");
        let mut from_etcd: Vec<(String, String)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                let name = key.strip_prefix(prefix)?;
                if prefix == "/resources/" {
                    let r = crawler::model::resource::Resource::decode(name, kv.value()).ok()?;
                    Some((
                        r.name.to_string(),
                        r.assigned_worker().unwrap_or("").to_owned(),
                    ))
                } else {
                    Some((name.to_owned(), String::new()))
                }
            })
            .collect();
        from_etcd.sort();
        let mut from_master: Vec<(String, String)> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| {
                if prefix == "/resources/" {
                    (
                        item["name"].as_str().unwrap_or("").to_owned(),
                        item["assigned_node"]["id"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                    )
                } else {
                    (item["id"].as_str().unwrap_or("").to_owned(), String::new())
                }
            })
            .collect();
        from_master.sort();
        assert_eq!(
            from_master, from_etcd,
            "{master}{path} differs from etcd at revision {revision}"
        );
    }
}

/// Waits (up to `timeout`) until every stored resource is assigned to `worker`.
pub async fn wait_all_on(etcd: &Etcd, worker: &str, what: &str, timeout: Duration) {
    eventually(what, timeout, || async {
        stored_resources(etcd)
            .await
            .iter()
            .all(|r| r.assigned_worker() == Some(worker))
            .then_some(())
    })
    .await;
}

/// Two masters (ids 2 and 3) on `config`, once one leads and the other knows it. Returns both,
/// the leader's URL and the follower's URL.
pub async fn leader_and_follower(config: &Config) -> ([Running; 2], String, String) {
    let m2 = start_master(config.clone(), 2).await;
    let m3 = start_master(config.clone(), 3).await;
    let urls = [m2.url.clone(), m3.url.clone()];
    let leader = ready_leader(&[&urls[0], &urls[1]], Duration::from_secs(20)).await;
    let follower = urls[1 - leader].clone();
    wait_leader_known(&follower, &urls[leader]).await;
    ([m2, m3], urls[leader].clone(), follower)
}
