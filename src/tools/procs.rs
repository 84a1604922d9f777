//! Child processes for `crawler bench` and `crawler dev`: an etcd from `PATH` on a temp data
//! dir, masters, workers and a bare HTTP server from this very binary, all on loopback, all
//! killed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a tool (`crawler bench`, `crawler dev`) could not run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Something it needs could not be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// A file or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// etcd failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// An HTTP request failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

/// A free loopback port (bound and released).
pub fn free_port() -> Result<u16, ToolError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A child process, killed (SIGKILL) on drop unless it already exited.
pub struct Proc {
    child: Option<Child>,
    /// Its base URL or address.
    pub url: String,
    /// Run under heaptrack: `child` is heaptrack's script, and the process itself is its child.
    traced: bool,
}

impl Proc {
    /// The OS process id (under heaptrack, of the traced process, not of heaptrack's script).
    pub fn pid(&self) -> Option<u32> {
        let pid = self.child.as_ref().map(Child::id)?;
        if !self.traced {
            return Some(pid);
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().find_map(|c| {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).ok()?;
            (comm.trim() == "crawler").then(|| c.parse().ok())?
        })
    }

    /// Sends a signal with `kill(1)`'s numbering (9 = KILL, 15 = TERM).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Kills it and reaps it. Under heaptrack, the traced process is killed and the script
    /// waited for, so that heaptrack writes its recording to the end: what it reports as leaked
    /// is then what was live at the kill.
    pub fn kill(&mut self) {
        if self.traced {
            self.signal(9);
        }
        if let Some(mut child) = self.child.take() {
            if !self.traced {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Resident set size in bytes, from `/proc`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> Result<Self, ToolError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "crawler-bench-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts etcd on free ports with its data in `dir`, and waits until it answers.
pub async fn etcd(dir: &Path) -> Result<Proc, ToolError> {
    etcd_on(dir, free_port()?, free_port()?, Stdio::null()).await
}

/// Starts etcd on the given client and peer ports, and waits until it answers.
pub async fn etcd_on(dir: &Path, client: u16, peer: u16, stdin: Stdio) -> Result<Proc, ToolError> {
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    let child = Command::new("etcd")
        .arg("--name=bench")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=bench={peer_url}"))
        .arg("--quota-backend-bytes=8589934592")
        .arg("--log-level=warn")
        .arg("--logger=zap")
        .stdin(stdin)
        // Its own process group: a Ctrl-C reaches only the parent, which stops it last.
        .process_group(0)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| {
            ToolError::Setup(format!(
                "cannot start etcd ({e}); install it with `apt-get install etcd-server`"
            ))
        })?;
    let proc = Proc {
        child: Some(child),
        url,
        traced: false,
    };
    let started = Instant::now();
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([proc.url.as_str()], None).await
            && c.status().await.is_ok()
        {
            return Ok(proc);
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(ToolError::Setup("etcd did not start within 20 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the masters' config: session TTL `ttl_secs`, quiet logs, no grace period.
pub fn master_config(dir: &Path, ttl_secs: u64) -> Result<PathBuf, ToolError> {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: {ttl_secs}\nworker:\n  lease_ttl_secs: 3\n{legacy}log:\n  level: {log}\n",
            // The scenarios measure the machinery, not the policy's delays: a dead worker's
            // tasks move at once, unthrottled, and nothing rebalances.
            legacy = "scheduling:\n  reassign_after: 0s\n  storm_fraction: 1.0\n  reassign_rate: 1000000\n  rebalance_max_moves: 0\n",
            log = std::env::var("CRAWLER_BENCH_LOG").unwrap_or_else(|_| "error".into())
        ),
    )?;
    Ok(path)
}

fn this_binary() -> Result<PathBuf, ToolError> {
    Ok(std::env::current_exe()?)
}

/// `crawler master --id <id>` on a free port.
pub fn master(id: u16, etcd: &str, config: &Path) -> Result<Proc, ToolError> {
    master_on(id, free_port()?, etcd, config, Stdio::inherit())
}

/// `crawler master --id <id>` on `port`, its output going to `output`.
pub fn master_on(
    id: u16,
    port: u16,
    etcd: &str,
    config: &Path,
    output: Stdio,
) -> Result<Proc, ToolError> {
    let url = format!("http://127.0.0.1:{port}");
    spawn_role(
        "master",
        &id.to_string(),
        "--http",
        port,
        etcd,
        config,
        (output, &[]),
        url,
    )
}

/// `crawler worker --id <id>` on `port`, its output going to `output`, with `env` added to
/// its environment (its tasks inherit it).
pub fn worker_on(
    id: u32,
    port: u16,
    etcd: &str,
    config: &Path,
    output: Stdio,
    env: &[(&str, &str)],
) -> Result<Proc, ToolError> {
    let url = format!("127.0.0.1:{port}");
    spawn_role(
        "worker",
        &id.to_string(),
        "--addr",
        port,
        etcd,
        config,
        (output, env),
        url,
    )
}

/// `crawler <role> --id <id> <listen flag> 127.0.0.1:<port> --etcd .. --config ..`, in its
/// own process group (a Ctrl-C reaches only the parent, which stops it in order).
#[allow(clippy::too_many_arguments)]
fn spawn_role(
    role: &str,
    id: &str,
    listen_flag: &str,
    port: u16,
    etcd: &str,
    config: &Path,
    (output, env): (Stdio, &[(&str, &str)]),
    url: String,
) -> Result<Proc, ToolError> {
    // `CRAWLER_HEAPTRACK=<dir>:<role>-<id>,...[:<binary>]` runs those processes under Debian's
    // heaptrack, its recording in <dir>, to see where a role's memory goes (`heaptrack_print`);
    // <binary> traces another build of crawler in their place (an older commit: before/after).
    let traced = std::env::var("CRAWLER_HEAPTRACK").ok().and_then(|spec| {
        let mut parts = spec.splitn(3, ':');
        let (dir, who, binary) = (parts.next()?, parts.next()?, parts.next());
        let me = format!("{role}-{id}");
        who.split(',').any(|w| w == me).then(|| {
            // One recording per process, though a bench starts `master-2` more than once.
            static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (format!("{dir}/{me}.{n}"), binary.map(PathBuf::from))
        })
    });
    let mut command = match &traced {
        Some((out, binary)) => {
            let mut c = Command::new("heaptrack");
            c.arg("-o").arg(out);
            c.arg(binary.clone().map_or_else(this_binary, Ok)?);
            c
        }
        None => Command::new(this_binary()?),
    };
    let child = command
        .envs(env.iter().copied())
        .args([role, "--id", id])
        .args([listen_flag, &format!("127.0.0.1:{port}")])
        .args(["--etcd", etcd])
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(output)
        .process_group(0)
        .spawn()?;
    Ok(Proc {
        child: Some(child),
        url,
        traced: traced.is_some(),
    })
}

impl Proc {
    /// Waits (at most `limit`) for the process to exit; returns whether it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            match self.child.as_mut().map(Child::try_wait) {
                None | Some(Ok(Some(_))) => {
                    self.child = None;
                    return true;
                }
                Some(Err(_)) => return false,
                Some(Ok(None)) => {}
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The hidden `crawler bench-bare` server answering every request with `body`.
pub fn bare(body: &Path) -> Result<Proc, ToolError> {
    let port = free_port()?;
    let child = Command::new(this_binary()?)
        .args(["bench-bare", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--body")
        .arg(body)
        .stdin(Stdio::null())
        .spawn()?;
    Ok(Proc {
        child: Some(child),
        url: format!("http://127.0.0.1:{port}"),
        traced: false,
    })
}

/// Serves `body` as `application/json` to every GET: the baseline for cached reads.
pub async fn serve_bare(addr: &str, body: Vec<u8>) -> std::io::Result<()> {
    use axum::http::header;
    use axum::serve::ListenerExt;
    let body = axum::body::Bytes::from(body);
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    });
    // Same socket options as the master, so the comparison is of the handlers.
    let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
