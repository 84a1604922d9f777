//! `crawler dev`: a complete local cluster from one command, for a first look and for demos.
//!
//! It uses the etcd at the configured endpoint when one answers, and otherwise starts one as a
//! child process on a temp data dir at that endpoint's port. Then it starts three workers and,
//! once they are registered, three masters on consecutive ports, all as child processes of this
//! same binary, reports progress as it goes ("etcd ready", "3/3 workers registered", "leader
//! elected") and prints where to look. Ctrl-C stops everything in order: workers deregister, masters resign, and
//! the child etcd stops last. Full logs go to files in a temp dir, or to the terminal with
//! `--verbose`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::Config;
use crate::tools::member;
use crate::tools::procs::{self, Proc, Scratch, ToolError};

mod checks;
mod tls;

/// How to run the local cluster.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The config file (its seeds, key layout and etcd endpoints are used).
    pub config: Option<PathBuf>,
    /// First master port; masters use it and the next two.
    pub http_port: u16,
    /// First worker port; workers use it and the next two.
    pub worker_port: u16,
    /// Show every process's logs instead of writing them to files.
    pub verbose: bool,
    /// etcd endpoints, over the config file's (none: the file's).
    pub etcd: Vec<String>,
    /// Serve the API over HTTPS, from a local CA made at start.
    pub tls: bool,
}

/// Writes `text` and a newline to stdout. A closed stdout (`crawler dev | head`) is not the
/// cluster's failure: what cannot be written is dropped, and the cluster runs on.
fn tell(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

fn say(line: &str) {
    tell(format_args!("  {line}"));
}

fn output(verbose: bool, logs: &Path, name: &str) -> Stdio {
    if verbose {
        return Stdio::inherit();
    }
    std::fs::File::create(logs.join(format!("{name}.log"))).map_or(Stdio::null(), Stdio::from)
}

async fn etcd_answers(endpoints: &[String]) -> bool {
    let connect = etcd_client::Client::connect(
        endpoints,
        Some(etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_millis(500))),
    );
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(mut client)) => tokio::time::timeout(Duration::from_secs(2), client.status())
            .await
            .is_ok_and(|r| r.is_ok()),
        _ => false,
    }
}

fn port_of(endpoint: &str) -> Option<u16> {
    endpoint
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// The processes dev started, stopped in order: workers deregister, masters resign, and the
/// etcd dev started (if any) stops last.
#[derive(Default)]
struct Cluster {
    etcd: Option<Proc>,
    workers: Vec<Proc>,
    masters: Vec<Proc>,
}

impl Cluster {
    async fn stop(&mut self) {
        stop_all(&mut self.workers).await;
        stop_all(&mut self.masters).await;
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.signal(Signal::SIGTERM);
            etcd.wait_exit(Duration::from_secs(5)).await;
        }
    }

    /// An error if a child has exited: dev started it, so it should still run.
    async fn check_alive(&mut self, logs: Option<&Path>) -> Result<(), ToolError> {
        let mut all: Vec<&mut Proc> = self
            .etcd
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(self.masters.iter_mut())
            .collect();
        checks::first_exit(&mut all, logs).await
    }
}

/// Runs the cluster until `shutdown` completes. `shutdown` is polled from the start, so that a
/// signal it listens for is caught even while the cluster starts (and not left to its default
/// action, which would orphan the processes started so far); the cluster then stops as soon as
/// it is up. A cluster that cannot start is stopped, and the error says why and what to change.
pub async fn run(
    options: DevOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ToolError> {
    let shutdown = tokio::spawn(shutdown);
    let mut cluster = Cluster::default();
    let scratch = Scratch::new("dev")?;
    let site = match start(&options, &mut cluster, &scratch.0).await {
        Ok(site) => site,
        Err(error) => {
            let started_any = cluster.etcd.is_some() || !cluster.workers.is_empty();
            cluster.stop().await;
            if options.verbose || !started_any {
                return Err(error);
            }
            // The logs outlive dev, for the cause the error names.
            let logs = std::mem::ManuallyDrop::new(scratch);
            let error = match error {
                ToolError::Setup(message) => message,
                other => other.to_string(),
            };
            return Err(ToolError::Setup(format!(
                "{error} (logs kept in {})",
                logs.0.display()
            )));
        }
    };
    let _ = shutdown.await;
    tell(format_args!(
        "\n  stopping: workers deregister, masters resign, then etcd (Ctrl-C again: kill all)"
    ));
    tokio::select! {
        () = cluster.stop() => say("stopped"),
        () = crate::shutdown::wait_for_signal() => say("killed"),
    }
    site.abort();
    drop(scratch);
    // Whatever still runs is killed as the handles drop.
    Ok(())
}

/// How long start-up may take.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Starts the cluster into `cluster`, its logs and etcd's data in `scratch`, and prints where
/// to look once every process answers; returns the demo site's task.
async fn start(
    options: &DevOptions,
    cluster: &mut Cluster,
    scratch: &Path,
) -> Result<tokio::task::JoinHandle<()>, ToolError> {
    let started = Instant::now();
    let mut config =
        Config::load(options.config.as_deref()).map_err(|e| ToolError::Setup(e.to_string()))?;
    if !options.etcd.is_empty() {
        config.etcd.endpoints = options.etcd.clone();
    }
    checks::ports_free(&[
        checks::Ports {
            role: "master",
            first: options.http_port,
            count: 3,
            flag: "--http-port",
        },
        checks::Ports {
            role: "worker",
            first: options.worker_port,
            count: 3,
            flag: "--worker-port",
        },
    ])?;
    // The workers run here: a runner they could not start would fail every task of the demo.
    let here = std::env::current_dir()?;
    let path = std::env::var_os("PATH");
    if let Some(missing) = config
        .worker
        .runners
        .missing(&here, path.as_deref())
        .first()
    {
        return Err(ToolError::Setup(format!(
            "{missing}: install it, or change worker.runners in the file given to --config{}",
            if missing.wanted.contains("/scripts/") {
                " (or run dev from the directory that holds scripts/)"
            } else {
                ""
            }
        )));
    }
    let logs = scratch.to_path_buf();
    let child_logs = (!options.verbose).then_some(logs.as_path());
    let config_path = match &options.config {
        Some(path) => path.clone(),
        None => {
            let path = scratch.join("config.yaml");
            std::fs::write(&path, "{}\n")?;
            path
        }
    };
    let tls = if options.tls {
        Some(tls::DevTls::prepare(scratch)?)
    } else {
        None
    };
    tell(format_args!(
        "crawler dev: a local cluster of 3 masters and 3 workers"
    ));
    let endpoints = config.etcd.endpoints.clone();
    if etcd_answers(&endpoints).await {
        say(&format!("etcd ready (using {})", endpoints.join(",")));
    } else {
        let first = endpoints.first().cloned().unwrap_or_default();
        let client_port = port_of(&first).unwrap_or(2379);
        checks::etcd_port_usable(&first, client_port)?;
        let peer_port = procs::free_port()?;
        cluster.etcd = Some(match &tls {
            Some(tls) => {
                let server = tls.etcd_server();
                member::etcd_tls_on(scratch, client_port, peer_port, Stdio::null(), &server).await?
            }
            None => member::etcd_on(scratch, client_port, peer_port, Stdio::null()).await?,
        });
        say(&format!(
            "etcd ready (started on 127.0.0.1:{client_port}{}, data in {})",
            if tls.is_some() { " over TLS" } else { "" },
            scratch.display()
        ));
    }
    let etcd_arg = match &cluster.etcd {
        Some(etcd) => etcd.url.clone(),
        None => endpoints.join(","),
    };
    // With --tls, the processes run with a copy of the config that turns TLS on (for etcd too
    // when dev started it), and dev reaches etcd as they do.
    let config_path = match &tls {
        Some(tls) => {
            if cluster.etcd.is_some() {
                config.etcd.endpoints = vec![etcd_arg.clone()];
                config.etcd.tls = Some(tls.etcd_client());
            }
            tls.config_file(scratch, &config_path, cluster.etcd.is_some())?
        }
        None => config_path,
    };

    // The local site the example runner crawls; the workers' tasks find it in their
    // environment.
    let site_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let site_url = format!("http://{}/", site_listener.local_addr()?);
    let site_options = super::site::SiteOptions {
        delay: std::time::Duration::from_millis(50),
        access_log: None,
    };
    let site = tokio::spawn(async move {
        let _ = super::site::serve(site_listener, site_options).await;
    });
    say(&format!("demo site at {site_url}"));
    for i in 0..3u16 {
        cluster.workers.push(procs::worker_on(
            u32::from(i) + 1,
            options.worker_port + i,
            &etcd_arg,
            &config_path,
            output(options.verbose, &logs, &format!("worker-{}", i + 1)),
            &[("CRAWLER_DEMO_SITE", &site_url)],
        )?);
    }
    // Workers register before the masters start, so that the leader's take-over finds them
    // all and spreads the seed tasks, instead of handing every one to whichever registers
    // first.
    let etcd_client = crate::etcd::connect(&config.etcd)
        .await
        .map_err(|e| ToolError::Setup(e.to_string()))?;
    let mut shown = 0;
    while shown < 3 {
        cluster.check_alive(child_logs).await?;
        let count = etcd_client
            .kv_client()
            .get(
                config.keys.worker_prefix.as_bytes(),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .map_or(0, |r| r.count());
        if count > shown {
            shown = count;
            say(&format!("{shown}/3 workers registered"));
        }
        if started.elapsed() > START_LIMIT {
            return Err(ToolError::Setup(
                "workers did not register within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..3u16 {
        let mut master = procs::master_on(
            i + 1,
            options.http_port + i,
            &etcd_arg,
            &config_path,
            output(options.verbose, &logs, &format!("master-{}", i + 1)),
        )?;
        if tls.is_some() {
            master.url = master.url.replacen("http://", "https://", 1);
        }
        cluster.masters.push(master);
    }
    let client = tls::client(tls.as_ref())?;
    let leader = loop {
        cluster.check_alive(child_logs).await?;
        let mut found = None;
        for m in &cluster.masters {
            if let Some(view) = get_json(&client, &format!("{}/api/v1/cluster", m.url)).await
                && view["self"]["role"] == "leader"
            {
                found = view["self"]["id"].as_u64();
            }
        }
        if let Some(id) = found {
            break id;
        }
        if started.elapsed() > START_LIMIT {
            return Err(ToolError::Setup("no leader within 60 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    say(&format!("leader elected: master-{leader}"));
    // Ready means every process dev started answers, as itself: each master's /readyz and
    // each worker's /healthz.
    loop {
        cluster.check_alive(child_logs).await?;
        let mut waiting = Vec::new();
        for m in &cluster.masters {
            if !answers(&client, &format!("{}/readyz", m.url)).await {
                waiting.push(m.name.clone());
            }
        }
        for w in &cluster.workers {
            if !answers(&client, &format!("http://{}/healthz", w.url)).await {
                waiting.push(w.name.clone());
            }
        }
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() > START_LIMIT {
            return Err(ToolError::Setup(format!(
                "{} did not answer within 60 s",
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let api = &cluster.masters[0].url;
    let seeds = config.tasks.len();
    let (curl, trust) = match &tls {
        Some(tls) => {
            let ca = tls.ca.display();
            (
                format!("curl --cacert {ca}"),
                format!(
                    "
  HTTPS: the masters' certificate comes from a CA made for this run. Trust it with
    curl --cacert {ca}
    export CRAWLER_CA={ca}         # crawler ctl
    export SSL_CERT_FILE={ca}      # Python's ssl, and most other clients
  or, for a browser, import it as an authority (it is gone when dev stops).
"
                ),
            )
        }
        None => ("curl".to_owned(), String::new()),
    };
    tell(format_args!(
        "
  ready in {:.1} s{}

  dashboard    {api}/
  Swagger UI   {api}/swagger-ui/
  masters      {}
  logs         {}
{trust}
  Try:
    {curl} -s {api}/api/v1/cluster
    {curl} -s -XPOST {api}/api/v1/resources -H 'content-type: application/json' -d '{{\"name\":\"example.com\"}}'
    {curl} -s {api}/api/v1/workers
    {curl} -s '{api}/api/v1/resources/example.com/logs?follow=true'   # the task crawling the demo site

  Ctrl-C stops everything.
",
        started.elapsed().as_secs_f64(),
        if seeds > 0 {
            format!(", {seeds} seed tasks loaded")
        } else {
            String::new()
        },
        cluster
            .masters
            .iter()
            .map(|m| m.url.as_str())
            .collect::<Vec<_>>()
            .join("  "),
        if options.verbose {
            "shown here".to_owned()
        } else {
            logs.display().to_string()
        },
    ));
    Ok(site)
}

/// Whether `url` answers 200.
async fn answers(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

async fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter() {
        p.signal(Signal::SIGTERM);
    }
    for p in procs.iter_mut() {
        if !p.wait_exit(Duration::from_secs(10)).await {
            p.kill();
        }
    }
}
