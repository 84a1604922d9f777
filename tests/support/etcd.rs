//! A real etcd server, started from `PATH` on free loopback ports with a temp data dir, and
//! killed on drop.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crawler::tools::member::{CLUSTER_RAFT_TIMING, EtcdMember};
use etcd_client::{Client, GetOptions};

use super::free_port;

/// One etcd member.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Client URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// For a member of a cluster: its name and the `--initial-cluster` value, so that it can
    /// be restarted as the same member.
    member: Option<(String, String)>,
}

/// Panics, saying how to install it, when etcd is not on `PATH`.
fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!(
            "etcd was not found on PATH. The integration tests need a real etcd server \
             (Debian: `apt-get install etcd-server`); the README's test command installs it."
        ),
    }
}

impl Etcd {
    /// A server not started yet, on free ports and a fresh data dir.
    fn unstarted() -> Etcd {
        let client_port = free_port();
        Etcd {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            client_port,
            peer_port: free_port(),
            url: format!("http://127.0.0.1:{client_port}"),
            member: None,
        }
    }

    /// Starts a fresh single-member cluster and waits until it answers.
    pub async fn start() -> Etcd {
        let mut etcd = Etcd::unstarted();
        etcd.spawn(true);
        etcd.wait_healthy().await;
        etcd
    }

    fn spawn(&mut self, new_cluster: bool) {
        let (name, initial) = self.member.clone().unwrap_or_else(|| {
            let peer = format!("http://127.0.0.1:{}", self.peer_port);
            ("test".to_owned(), format!("test={peer}"))
        });
        self.spawn_member(&name, &initial, new_cluster);
    }

    fn spawn_member(&mut self, name: &str, initial_cluster: &str, new_cluster: bool) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        etcd_binary();
        let data_dir = self.dir.path().join("data");
        let child = EtcdMember {
            name,
            data_dir: &data_dir,
            client_url: &self.url,
            peer_url: &peer,
            initial_cluster,
            new_cluster,
        }
        .command()
        .args(self.raft_timing())
        .env("ETCD_UNSUPPORTED_ARCH", "")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start etcd");
        self.child = Some(child);
    }

    /// A cluster's members use [`CLUSTER_RAFT_TIMING`]; a single member never elects, so it
    /// keeps etcd's defaults.
    fn raft_timing(&self) -> &'static [&'static str] {
        match self.member {
            Some(_) => &CLUSTER_RAFT_TIMING,
            None => &[],
        }
    }

    /// A client of this member.
    pub async fn client(&self) -> Client {
        Client::connect([self.url.as_str()], None)
            .await
            .expect("etcd client")
    }

    async fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            if let Ok(mut client) = Client::connect([self.url.as_str()], None).await
                && let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), client.status()).await
            {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("etcd did not become healthy within 20 s; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn(false);
        self.wait_healthy().await;
    }

    /// Every key under `prefix` now, with its mod revision, but the audit trail's: the trail
    /// records refused requests too, by design (`tests/audit.rs` checks it).
    pub async fn keys_but_audit(&self, prefix: &str) -> Vec<(String, i64)> {
        let (_, mut keys) = self.range_at(prefix, 0).await;
        keys.retain(|(k, _)| !k.starts_with("/crawler/audit/"));
        keys
    }

    /// Keys and mod revisions under `prefix` at `revision` (0: latest), for consistency checks.
    pub async fn range_at(&self, prefix: &str, revision: i64) -> (i64, Vec<(String, i64)>) {
        let mut client = self.client().await;
        let resp = client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            )
            .await
            .expect("range");
        let rev = resp.header().map_or(0, |h| h.revision());
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.mod_revision(),
                )
            })
            .collect();
        (rev, items)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-member etcd cluster on loopback.
pub struct EtcdCluster {
    /// The members, in order.
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one answers.
    pub async fn start(n: usize) -> EtcdCluster {
        let mut members: Vec<Etcd> = (0..n).map(|_| Etcd::unstarted()).collect();
        let initial: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://127.0.0.1:{}", m.peer_port))
            .collect();
        let initial = initial.join(",");
        for (i, member) in members.iter_mut().enumerate() {
            member.member = Some((format!("m{i}"), initial.clone()));
            member.spawn(true);
        }
        for member in &members {
            member.wait_healthy().await;
        }
        EtcdCluster { members }
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url.clone()).collect()
    }
}
