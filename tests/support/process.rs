//! The project's binary as real processes: masters and workers that can be killed, stopped,
//! paused and resumed with signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::free_port;

/// A config file with TTLs short enough for fault tests (session 2 s, worker lease 3 s), and
/// the scheduling policy of the tests written before it: a dead worker's tasks move at once,
/// at no set rate, with no storm guard and no rebalancing (`tests/fleet.rs` tests those).
pub fn fault_config(dir: &Path) -> PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        "etcd:\n  request_timeout_ms: 1000\n  dial_timeout_ms: 500\n\
         master:\n  session_ttl_secs: 2\n\
         worker:\n  lease_ttl_secs: 3\n\
         scheduling:\n  reassign_after: 0s\n  storm_fraction: 1.0\n  reassign_rate: 1000000\n  rebalance_max_moves: 0\n\
         log:\n  level: warn\n",
    )
    .expect("write config");
    file
}

/// One child process of the crawler binary; killed on drop.
pub struct Proc {
    child: Option<Child>,
    /// For masters, `http://127.0.0.1:<port>`; for workers, the address.
    pub url: String,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    fn spawn(name: String, url: String, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crawler"));
        command
            .args(args)
            .stdin(Stdio::null())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn crawler");
        Proc {
            child: Some(child),
            url,
            name,
        }
    }

    /// `crawler master --id <id>` on a free port.
    pub fn master(id: u16, etcd: &[String], config: &Path, env: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let args = vec![
            "master".into(),
            "--id".into(),
            id.to_string(),
            "--http".into(),
            format!("127.0.0.1:{port}"),
            "--etcd".into(),
            etcd.join(","),
            "--config".into(),
            config.display().to_string(),
        ];
        Proc::spawn(format!("master-{id}"), url, &args, env)
    }

    /// `crawler worker --id <id>` on a free port.
    pub fn worker(id: u32, etcd: &[String], config: &Path) -> Proc {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let args = vec![
            "worker".into(),
            "--id".into(),
            id.to_string(),
            "--addr".into(),
            addr.clone(),
            "--etcd".into(),
            etcd.join(","),
            "--config".into(),
            config.display().to_string(),
        ];
        Proc::spawn(format!("worker-{id}"), addr, &args, &[])
    }

    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            kill(pid, signal).expect("signal");
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit and returns whether it exited 0.
    pub fn wait_success(&mut self) -> bool {
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .is_some_and(|s| s.success())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
