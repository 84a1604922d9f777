//! The worker's side of its guard: starts `crawler guard`, sends it the lease deadline, starts
//! task processes through it and learns when they end. If the guard dies, its tasks die with
//! it and [`Guard::lost`] fires: the worker cannot run tasks safely any more.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{FromGuard, ToGuard, recv_message, send_message};
use crate::config::{LogConfig, LogFormat};

/// What the worker waits for about one process.
#[derive(Default)]
struct Pending {
    started: Option<oneshot::Sender<Result<u32, String>>>,
    exited: Option<oneshot::Sender<ExitStatus>>,
}

struct Inner {
    socket: AsyncFd<OwnedFd>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    lost: CancellationToken,
}

/// A handle on the guard process; clones share it.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

/// A process the guard started.
pub struct Guarded {
    /// Its pid (and process group).
    pub pid: u32,
    /// Its output and error output, one pipe, until taken.
    pub output: Option<pipe::Receiver>,
    id: u64,
    exited: oneshot::Receiver<ExitStatus>,
    guard: Guard,
}

impl Guarded {
    /// Waits until the process has ended. Cancel-safe. An error means the guard is gone (and
    /// the process with it).
    pub async fn wait(&mut self) -> Result<ExitStatus, String> {
        (&mut self.exited)
            .await
            .map_err(|_| "the guard process is gone".to_owned())
    }

    /// SIGTERM to its process group, or SIGKILL when `kill`.
    pub async fn signal(&self, kill: bool) {
        let _ = self
            .guard
            .send(&ToGuard::Signal { id: self.id, kill }, &[])
            .await;
    }
}

impl Guard {
    /// Starts `program guard`, the guard process of this worker, with `stop_grace` between its
    /// SIGTERM and SIGKILL.
    pub fn spawn(program: &Path, stop_grace: Duration, log: &LogConfig) -> std::io::Result<Self> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        // Room for a start with large labels; the kernel caps it at its own maximum.
        let _ = setsockopt(&ours, sockopt::SndBuf, &super::MAX_MESSAGE);
        let mut command = tokio::process::Command::new(program);
        command
            .arg("guard")
            .arg("--stop-grace-ms")
            .arg(stop_grace.as_millis().to_string())
            .arg("--log-level")
            .arg(&log.level);
        if log.format == LogFormat::Json {
            command.arg("--log-json");
        }
        // Its own process group: a Ctrl-C in a terminal reaches the worker, which stops its
        // tasks in order, and not the guard.
        let mut child = command
            .stdin(Stdio::from(theirs))
            .process_group(0)
            .spawn()?;
        // SAFETY: an OwnedFd stays open and names the same socket for as long as it lives.
        let socket = unsafe { AsyncFd::register(ours) }?;
        let inner = Arc::new(Inner {
            socket,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            lost: CancellationToken::new(),
        });
        tokio::spawn(read(Arc::clone(&inner)));
        let lost = inner.lost.clone();
        tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    error!(?status, "the guard process ended: its tasks are gone");
                    lost.cancel();
                }
                () = lost.cancelled() => {}
            }
        });
        Ok(Self { inner })
    }

    /// Fires when the guard is gone.
    pub fn lost(&self) -> CancellationToken {
        self.inner.lost.clone()
    }

    /// Tasks may run until `term_at_ns` on `CLOCK_BOOTTIME`.
    pub async fn deadline(&self, term_at_ns: u64) {
        if let Err(error) = self.send(&ToGuard::Deadline { term_at_ns }, &[]).await {
            warn!(%error, "cannot send the guard its deadline");
        }
    }

    /// Starts `program` with `args` and `env` in `dir`, its output and error output on one
    /// pipe.
    pub async fn start(
        &self,
        program: &str,
        args: &[String],
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Result<Guarded, String> {
        let pipe = pipe::pipe().and_then(|(tx, rx)| Ok((tx.into_blocking_fd()?, rx)));
        let (write, output) = pipe.map_err(|e| format!("cannot make a pipe: {e}"))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        if let Ok(mut pending) = self.inner.pending.lock() {
            pending.insert(
                id,
                Pending {
                    started: Some(started_tx),
                    exited: Some(exited_tx),
                },
            );
        }
        let message = ToGuard::Start {
            id,
            program: program.to_owned(),
            args: args.to_vec(),
            env,
            dir: dir.to_path_buf(),
        };
        let sent = self.send(&message, &[write.as_raw_fd()]).await;
        // Only the process holds the write end now, so the read ends when it does.
        drop(write);
        if let Err(error) = sent {
            self.forget(id);
            return Err(format!("cannot reach the guard: {error}"));
        }
        match started.await {
            Ok(Ok(pid)) => Ok(Guarded {
                pid,
                output: Some(output),
                id,
                exited,
                guard: self.clone(),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("the guard process is gone".into()),
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.inner.pending.lock() {
            pending.remove(&id);
        }
    }

    async fn send(&self, message: &ToGuard, fds: &[i32]) -> std::io::Result<()> {
        loop {
            let mut ready = self.inner.socket.writable().await?;
            match ready.try_io(|socket| send_message(socket.as_fd(), message, fds)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Hands each of the guard's answers to whoever waits for it, until the guard is gone.
async fn read(inner: Arc<Inner>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(mut ready) = inner.socket.readable().await else {
            break;
        };
        let message = match ready.try_io(|socket| recv_message(socket.as_fd(), &mut buf)) {
            Err(_would_block) => continue,
            Ok(Ok(Some((message, _)))) => message,
            Ok(Ok(None)) => break,
            Ok(Err(error)) => {
                error!(%error, "cannot read the guard");
                break;
            }
        };
        let Ok(mut pending) = inner.pending.lock() else {
            break;
        };
        match message {
            FromGuard::Started { id, pid } => {
                if let Some(p) = pending.get_mut(&id).and_then(|p| p.started.take()) {
                    let _ = p.send(Ok(pid));
                }
            }
            FromGuard::NotStarted { id, error } => {
                if let Some(p) = pending.remove(&id).and_then(|mut p| p.started.take()) {
                    let _ = p.send(Err(error));
                }
            }
            FromGuard::Exited { id, code, signal } => {
                let raw = match (code, signal) {
                    (Some(code), _) => (code & 0xff) << 8,
                    (None, Some(signal)) => signal & 0x7f,
                    (None, None) => 0,
                };
                if let Some(p) = pending.remove(&id).and_then(|mut p| p.exited.take()) {
                    let _ = p.send(ExitStatus::from_raw(raw));
                }
            }
        }
    }
    if let Ok(mut pending) = inner.pending.lock() {
        pending.clear();
    }
    inner.lost.cancel();
}
