//! The guard: a small single-threaded process (`crawler guard`) beside each worker that holds
//! the worker's task processes and stops them when the worker's last lease proof runs out. A
//! worker that is frozen (SIGSTOP, a long pause, a stuck disk) cannot stop its own tasks; the
//! guard, which does nothing else, still can, so no task outlives its lease.
//!
//! The worker starts the guard with one end of a seqpacket socket as its stdin and talks to it
//! in JSON messages, one per packet ([`ToGuard`], [`FromGuard`]); a start carries the task's
//! output pipe as a passed descriptor. Deadlines are `CLOCK_BOOTTIME` instants: a
//! clock both processes read alike, and one that keeps counting while the machine sleeps, as
//! etcd's lease clock does. [`process`] is the guard's side, [`link`] the worker's.

pub mod link;
pub mod process;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// The largest message either side sends or reads (a start carries a task's labels).
pub const MAX_MESSAGE: usize = 4 << 20;

/// What the worker tells its guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToGuard {
    /// Tasks may run until `term_at_ns` (`CLOCK_BOOTTIME`); then each gets SIGTERM, and
    /// SIGKILL the guard's stop grace later. No task starts after it.
    Deadline {
        /// When the worker's lease proof runs out, less its margin.
        term_at_ns: u64,
    },
    /// Start a process in a process group of its own; its stdout and stderr are both the
    /// descriptor passed with the message (one pipe: the log keeps one stream, in order).
    Start {
        /// The worker's name for this process.
        id: u64,
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// Environment variables added to the guard's own.
        env: Vec<(String, String)>,
        /// Working directory.
        dir: PathBuf,
    },
    /// Signal a started process's group: SIGTERM, or SIGKILL when `kill`.
    Signal {
        /// The process.
        id: u64,
        /// SIGKILL rather than SIGTERM.
        kill: bool,
    },
}

/// What the guard tells its worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromGuard {
    /// The process started.
    Started {
        /// The worker's name for it.
        id: u64,
        /// Its pid, which is also its process group.
        pid: u32,
    },
    /// The process could not be started.
    NotStarted {
        /// The worker's name for it.
        id: u64,
        /// Why.
        error: String,
    },
    /// The process ended and was reaped; what else ran in its group was killed.
    Exited {
        /// The worker's name for it.
        id: u64,
        /// Its exit code, when it exited.
        code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
    },
}

/// Now on `CLOCK_BOOTTIME`, in nanoseconds.
pub fn boottime_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Sends one message with `fds` attached, without blocking.
fn send_message(
    socket: BorrowedFd<'_>,
    message: &impl Serialize,
    fds: &[RawFd],
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "a message of {} bytes is over the guard's limit of {MAX_MESSAGE}",
            bytes.len()
        )));
    }
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// One packet read without blocking: `Ok(None)` when the other side closed.
fn recv_message<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let (len, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::other(
            "a message to the guard was cut short",
        ));
    }
    let message = serde_json::from_slice(&iov[0][..len])?;
    Ok(Some((message, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m = ToGuard::Signal { id: 7, kill: true };
        let text = serde_json::to_string(&m).expect("encodes");
        assert_eq!(text, r#"{"type":"signal","id":7,"kill":true}"#);
        let back: ToGuard = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, m);
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = boottime_ns();
        assert!(a > 0 && b >= a + 2_000_000, "{a} then {b}");
    }
}
