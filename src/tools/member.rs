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

/// A cluster's raft at loopback timings: heartbeat 25 ms, election timeout 250 ms (etcd's
/// tuning guide: a heartbeat about the round trip, far below 1 ms here, and an election
/// timeout ten times that), so that replacing a killed raft leader takes 0.25 to 0.5 s and
/// what a member's loss measures is the clients' part. With etcd's defaults (100 ms, 1000 ms)
/// the members alone need 1 to 2 s. A single member never elects, so it keeps the defaults.
pub const CLUSTER_RAFT_TIMING: [&str; 2] = ["--heartbeat-interval=25", "--election-timeout=250"];

/// An etcd cluster of child processes on loopback, whose members can be killed and started
/// again as the same members, on the same data and ports.
pub struct EtcdCluster {
    dir: std::path::PathBuf,
    initial_cluster: String,
    members: Vec<(u16, u16, Option<Proc>)>,
}

impl EtcdCluster {
    /// Starts `n` members with their data under `dir`, and waits until each answers.
    pub async fn start(dir: &Path, n: usize) -> Result<EtcdCluster, ToolError> {
        let ports = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<Vec<_>, ToolError>>()?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir: dir.to_path_buf(),
            initial_cluster,
            members: ports.into_iter().map(|(c, p)| (c, p, None)).collect(),
        };
        for i in 0..n {
            cluster.spawn(i, true)?;
        }
        for i in 0..n {
            cluster.wait_answering(i).await?;
        }
        Ok(cluster)
    }

    /// Every member's client URL, in order.
    pub fn urls(&self) -> Vec<String> {
        let url = |(client, _, _): &(u16, u16, Option<Proc>)| format!("http://127.0.0.1:{client}");
        self.members.iter().map(url).collect()
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some((_, _, proc)) = self.members.get_mut(i) {
            proc.take();
        }
    }

    /// Starts member `i` again, as the same member, and waits until it answers.
    pub async fn restart(&mut self, i: usize) -> Result<(), ToolError> {
        self.kill(i);
        self.spawn(i, false)?;
        self.wait_answering(i).await
    }

    /// Which member is raft's leader now, if one answers within 500 ms.
    pub async fn raft_leader(&self) -> Option<usize> {
        for (i, url) in self.urls().iter().enumerate() {
            let ask = async {
                let mut client = etcd_client::Client::connect([url.as_str()], None)
                    .await
                    .ok()?;
                let status = client.status().await.ok()?;
                Some(status.leader() == status.header()?.member_id())
            };
            if let Ok(Some(true)) = tokio::time::timeout(Duration::from_millis(500), ask).await {
                return Some(i);
            }
        }
        None
    }

    fn spawn(&mut self, i: usize, new_cluster: bool) -> Result<(), ToolError> {
        let name = format!("m{i}");
        let Some((client, peer, proc)) = self.members.get_mut(i) else {
            return Err(ToolError::Setup(format!("no member {i}")));
        };
        let client_url = format!("http://127.0.0.1:{client}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let child = EtcdMember {
            name: &name,
            data_dir: &self.dir.join(&name),
            client_url: &client_url,
            peer_url: &format!("http://127.0.0.1:{peer}"),
            initial_cluster: &self.initial_cluster,
            new_cluster,
        }
        .command()
        .args(CLUSTER_RAFT_TIMING)
        .process_group(0)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
        *proc = Some(Proc::new(child, name, client_url));
        Ok(())
    }

    async fn wait_answering(&self, i: usize) -> Result<(), ToolError> {
        let url = self
            .urls()
            .get(i)
            .cloned()
            .ok_or_else(|| ToolError::Setup(format!("no member {i}")))?;
        let started = Instant::now();
        loop {
            let ask = async {
                let mut client = etcd_client::Client::connect([url.as_str()], None)
                    .await
                    .ok()?;
                client.status().await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), ask).await {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(ToolError::Setup(format!(
                    "etcd member {i} did not answer within 20 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
