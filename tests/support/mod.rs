//! Test harness: a real etcd on free loopback ports, a cuttable TCP proxy, and in-process
//! masters and workers on port 0.
#![allow(dead_code)]

pub mod etcd;
pub mod proxy;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

use crawler::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use etcd::Etcd;
pub use proxy::Proxy;

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A configuration pointing at `endpoints`, with TTLs short enough for tests.
pub fn test_config(endpoints: &[String]) -> Config {
    let mut config = Config::default();
    config.etcd.endpoints = endpoints.to_vec();
    config.etcd.request_timeout_ms = 2_000;
    config.worker.lease_ttl_secs = 3;
    config.master.session_ttl_secs = 2;
    config.tasks.clear();
    config
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
    /// Base URL, `http://127.0.0.1:<port>`.
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
    let url = format!("http://{addr}");
    let options = crawler::master::MasterOptions {
        id,
        advertise: url.clone(),
    };
    let (stop, shutdown) = shutdown_pair();
    let handle = tokio::spawn(async move {
        if let Err(error) = crawler::master::run(listener, config, options, shutdown).await {
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

/// Starts a worker agent in this process on a free port.
pub async fn start_worker(config: Config, id: u32, capacity: u32) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let options = crawler::worker::WorkerOptions {
        id,
        address: addr.clone(),
        capacity,
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
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("http client")
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
