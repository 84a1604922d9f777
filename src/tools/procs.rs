//! Child processes, for `crawler bench`, `crawler dev` and the tests (which wrap this file):
//! masters, workers and a bare HTTP server from the `crawler` binary (and etcd, from
//! [`super::member`]), all on loopback, all killed on drop. The one place their command lines
//! are written.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::{Config, SchedulingConfig};

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

pub use super::ports::free_port;

/// A child process, killed (SIGKILL) on drop unless it already exited.
pub struct Proc {
    child: Option<Child>,
    /// Its base URL (a master, etcd) or address (a worker).
    pub url: String,
    /// What it is, for messages: `master-1`, `worker-2`, `etcd`.
    pub name: String,
    /// Run under heaptrack: `child` is heaptrack's script, and the process itself is its child.
    traced: bool,
}

impl Proc {
    pub(crate) fn new(child: Child, name: String, url: String) -> Self {
        Self {
            child: Some(child),
            url,
            name,
            traced: false,
        }
    }

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

    /// Sends `signal` (a process that is gone is not an error).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Kills it and reaps it. Under heaptrack, the traced process is killed and the script
    /// waited for, so that heaptrack writes its recording to the end: what it reports as leaked
    /// is then what was live at the kill.
    pub fn kill(&mut self) {
        if self.traced {
            self.signal(Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            if !self.traced {
                // A stopped process dies of SIGKILL too, but its process group's other
                // members would stay stopped: let them go on to see their parent's death.
                self.signal_child(&child, Signal::SIGCONT);
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    fn signal_child(&self, child: &Child, signal: Signal) {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Waits for the process to exit and returns whether it exited 0.
    pub fn wait_success(&mut self) -> bool {
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .is_some_and(|s| s.success())
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

/// CPU seconds (user + system) process `pid` has used, and those of its children it reaped,
/// from `/proc`.
pub fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, system, child_user, child_system] = fields[..] else {
        return None;
    };
    // SAFETY: sysconf reads a constant of the running system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((
        (user + system) / per_sec,
        (child_user + child_system) / per_sec,
    ))
}

/// The guard process of the worker `worker`: its child running `crawler guard`, started from
/// any of its threads.
pub fn guard_of(worker: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent: u32 = stat
                .get(stat.rfind(')')? + 2..)?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            (parent == worker && cmdline.contains("guard")).then_some(pid)
        })
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

/// The scheduling policy that measures the machinery, not the policy's delays: a dead
/// worker's tasks move at once, unthrottled, with no storm guard and no rebalancing. The
/// benchmarks and the tests of anything but the policy run with it.
pub const MOVE_AT_ONCE: &str = "scheduling:\n  reassign_after: 0s\n  storm_fraction: 1.0\n  reassign_rate: 1000000\n  rebalance_max_moves: 0\n";

/// [`MOVE_AT_ONCE`] as settings, for a configuration built in code.
pub fn move_at_once() -> SchedulingConfig {
    Config::from_yaml(MOVE_AT_ONCE, "MOVE_AT_ONCE")
        .map(|c| c.scheduling)
        .expect("MOVE_AT_ONCE is a valid configuration")
}

/// Writes the masters' config: session TTL `ttl_secs`, quiet logs, no grace period.
pub fn master_config(dir: &Path, ttl_secs: u64) -> Result<PathBuf, ToolError> {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: {ttl_secs}\nworker:\n  lease_ttl_secs: 3\n{MOVE_AT_ONCE}log:\n  level: {log}\n",
            log = std::env::var("CRAWLER_BENCH_LOG").unwrap_or_else(|_| "error".into())
        ),
    )?;
    Ok(path)
}

fn this_binary() -> Result<PathBuf, ToolError> {
    Ok(std::env::current_exe()?)
}

/// A role of the `crawler` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `crawler master`, listening with `--http`; its URL is `http://127.0.0.1:<port>`.
    Master,
    /// `crawler worker`, listening with `--addr`; its URL is `127.0.0.1:<port>`.
    Worker,
}

/// How to start one master or worker process.
pub struct Launch<'a> {
    /// The `crawler` binary.
    pub binary: &'a Path,
    /// Which role.
    pub role: Role,
    /// Its `--id`.
    pub id: u32,
    /// The loopback port it listens on.
    pub port: u16,
    /// `--etcd`, comma-separated endpoints.
    pub etcd: &'a str,
    /// `--config`.
    pub config: &'a Path,
    /// Where its logs (stderr) go.
    pub output: Stdio,
    /// Added to its environment (a worker's tasks inherit it).
    pub env: &'a [(&'a str, &'a str)],
    /// More arguments (`--capacity 5`).
    pub args: &'a [&'a str],
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
    launch(Launch {
        binary: &this_binary()?,
        role: Role::Master,
        id: u32::from(id),
        port,
        etcd,
        config,
        output,
        env: &[],
        args: &[],
    })
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
    launch(Launch {
        binary: &this_binary()?,
        role: Role::Worker,
        id,
        port,
        etcd,
        config,
        output,
        env,
        args: &[],
    })
}

/// `crawler <role> --id <id> <listen flag> 127.0.0.1:<port> --etcd .. --config ..`, in its
/// own process group (a Ctrl-C reaches only the parent, which stops it in order).
pub fn launch(l: Launch<'_>) -> Result<Proc, ToolError> {
    let (role, listen_flag, url) = match l.role {
        Role::Master => ("master", "--http", format!("http://127.0.0.1:{}", l.port)),
        Role::Worker => ("worker", "--addr", format!("127.0.0.1:{}", l.port)),
    };
    let me = format!("{role}-{}", l.id);
    // `CRAWLER_HEAPTRACK=<dir>:<role>-<id>,...[:<binary>]` runs those processes under Debian's
    // heaptrack, its recording in <dir>, to see where a role's memory goes (`heaptrack_print`);
    // <binary> traces another build of crawler in their place (an older commit: before/after).
    let traced = std::env::var("CRAWLER_HEAPTRACK").ok().and_then(|spec| {
        let mut parts = spec.splitn(3, ':');
        let (dir, who, binary) = (parts.next()?, parts.next()?, parts.next());
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
            c.arg(binary.as_deref().unwrap_or(l.binary));
            c
        }
        None => Command::new(l.binary),
    };
    let child = command
        .env_remove("RUST_LOG")
        .envs(l.env.iter().copied())
        .args([role, "--id", &l.id.to_string()])
        .args([listen_flag, &format!("127.0.0.1:{}", l.port)])
        .args(["--etcd", l.etcd])
        .arg("--config")
        .arg(l.config)
        .args(l.args)
        .stdin(Stdio::null())
        .stderr(l.output)
        .process_group(0)
        .spawn()?;
    let mut proc = Proc::new(child, me, url);
    proc.traced = traced.is_some();
    Ok(proc)
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
    Ok(Proc::new(
        child,
        "bench-bare".into(),
        format!("http://127.0.0.1:{port}"),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_move_at_once_policy_is_a_valid_configuration() {
        let policy = move_at_once();
        assert_eq!(policy.reassign_after, Duration::ZERO);
        assert_eq!(policy.rebalance_max_moves, 0);
    }
}
