//! An etcd member as a child process: etcd from `PATH` on a temp data dir and loopback URLs,
//! for `crawler bench`, `crawler dev` and the tests; with TLS and client certificates when
//! `crawler dev --tls` asks.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{Proc, ToolError, free_port};
use crate::config::{EtcdConfig, EtcdTls};

/// One etcd member's command line: etcd from `PATH`, on loopback URLs, logging warnings.
/// Callers add what is theirs (TLS, raft timings, stdio) before spawning it.
pub struct EtcdMember<'a> {
    /// Member name, also its key in `initial_cluster`.
    pub name: &'a str,
    /// Data directory.
    pub data_dir: &'a Path,
    /// Client URL (`http://` or `https://127.0.0.1:<port>`).
    pub client_url: &'a str,
    /// Peer URL.
    pub peer_url: &'a str,
    /// `--initial-cluster`, `name=peer-url,...`.
    pub initial_cluster: &'a str,
    /// A new cluster, or a member (re)joining an existing one.
    pub new_cluster: bool,
}

impl EtcdMember<'_> {
    /// The command that starts this member.
    pub fn command(&self) -> Command {
        let mut command = Command::new("etcd");
        command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!(
                "--initial-cluster-state={}",
                if self.new_cluster { "new" } else { "existing" }
            ))
            .arg("--log-level=warn")
            .arg("--logger=zap")
            .stdin(Stdio::null());
        command
    }
}

/// Starts etcd on free ports with its data in `dir`, and waits until it answers.
pub async fn etcd(dir: &Path) -> Result<Proc, ToolError> {
    etcd_on(dir, free_port()?, free_port()?, Stdio::null()).await
}

/// Starts etcd on the given client and peer ports, and waits until it answers.
pub async fn etcd_on(dir: &Path, client: u16, peer: u16, stdin: Stdio) -> Result<Proc, ToolError> {
    start(dir, (client, peer), stdin, None).await
}

/// The files of an etcd serving its clients over TLS and requiring their certificates.
#[derive(Debug, Clone)]
pub struct EtcdServerTls<'a> {
    /// The CA that issued the server's and the clients' certificates.
    pub ca: &'a Path,
    /// The server's certificate (which also serves as the client certificate this process
    /// checks it with).
    pub cert: &'a Path,
    /// Its key.
    pub key: &'a Path,
}

/// [`etcd_on`], over TLS with client certificates.
pub async fn etcd_tls_on(
    dir: &Path,
    client: u16,
    peer: u16,
    stdin: Stdio,
    tls: &EtcdServerTls<'_>,
) -> Result<Proc, ToolError> {
    start(dir, (client, peer), stdin, Some(tls)).await
}

async fn start(
    dir: &Path,
    (client, peer): (u16, u16),
    stdin: Stdio,
    tls: Option<&EtcdServerTls<'_>>,
) -> Result<Proc, ToolError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    let mut command = EtcdMember {
        name: "bench",
        data_dir: &dir.join("etcd"),
        client_url: &url,
        peer_url: &peer_url,
        initial_cluster: &format!("bench={peer_url}"),
        new_cluster: true,
    }
    .command();
    if let Some(tls) = tls {
        command
            .arg(format!("--cert-file={}", tls.cert.display()))
            .arg(format!("--key-file={}", tls.key.display()))
            .arg(format!("--trusted-ca-file={}", tls.ca.display()))
            .arg("--client-cert-auth");
    }
    let child = command
        .arg("--quota-backend-bytes=8589934592")
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
    let proc = Proc::new(child, "etcd".into(), url);
    let config = EtcdConfig {
        endpoints: vec![proc.url.clone()],
        tls: tls.map(|t| EtcdTls {
            ca_file: Some(t.ca.to_path_buf()),
            cert_file: Some(t.cert.to_path_buf()),
            key_file: Some(t.key.to_path_buf()),
            domain: None,
        }),
        ..EtcdConfig::default()
    };
    let started = Instant::now();
    loop {
        if let Ok(client) = crate::etcd::connect(&config).await
            && client.clone().status().await.is_ok()
        {
            return Ok(proc);
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(ToolError::Setup("etcd did not start within 20 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
