//! The guard's side: one thread polling the worker's socket, a signalfd (children that ended,
//! and the stop signals it leaves to its worker) and a `CLOCK_BOOTTIME` timerfd armed at the
//! next deadline. Its children are the task processes, each in a process group of its own and
//! killed if the guard dies (`PR_SET_PDEATHSIG`); when the worker's end closes (the worker
//! exited or was killed), the guard kills them all and exits.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};
use tracing::{info, warn};

use super::{FromGuard, MAX_MESSAGE, ToGuard, boottime_ns, recv_message, send_message};

/// A task process the guard holds.
struct Child {
    id: u64,
    /// When it gets SIGKILL, once the deadline sent it SIGTERM.
    kill_at: Option<u64>,
}

/// What the guard knows: its children and the deadline.
struct Guard {
    stop_grace_ns: u64,
    /// Tasks may run until then; nothing may before the first deadline.
    term_at: u64,
    children: HashMap<i32, Child>,
    pids: HashMap<u64, i32>,
    outbox: VecDeque<FromGuard>,
}

impl Guard {
    fn handle(&mut self, message: ToGuard, mut fds: Vec<OwnedFd>) {
        match message {
            ToGuard::Deadline { term_at_ns } => self.term_at = term_at_ns,
            ToGuard::Signal { id, kill } => {
                if let Some(&pid) = self.pids.get(&id) {
                    let signal = if kill {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    let _ = killpg(Pid::from_raw(pid), signal);
                }
            }
            ToGuard::Start {
                id,
                program,
                args,
                env,
                dir,
            } => {
                let answer = if boottime_ns() >= self.term_at {
                    FromGuard::NotStarted {
                        id,
                        error: "the worker's lease proof has run out: not starting".into(),
                    }
                } else if fds.len() != 1 {
                    FromGuard::NotStarted {
                        id,
                        error: format!("expected 1 descriptor, got {}", fds.len()),
                    }
                } else {
                    let stdout = fds.pop();
                    let stderr = stdout.as_ref().and_then(|fd| fd.try_clone().ok());
                    let mut command = Command::new(&program);
                    command
                        .args(&args)
                        .envs(env)
                        .current_dir(&dir)
                        .stdin(Stdio::null())
                        .stdout(stdout.map_or_else(Stdio::null, Stdio::from))
                        .stderr(stderr.map_or_else(Stdio::null, Stdio::from))
                        .process_group(0);
                    let guard = getpid();
                    // SAFETY: sigprocmask, prctl and getppid are async-signal-safe and touch
                    // nothing of this process's memory.
                    unsafe {
                        command.pre_exec(move || {
                            // The guard blocks the signals it reads from its signalfd, and a
                            // mask survives exec: unblocked, or a task never sees SIGTERM and
                            // every stop waits out the grace for SIGKILL.
                            nix::sys::signal::sigprocmask(
                                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                                Some(&SigSet::empty()),
                                None,
                            )
                            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                            // The guard died before the line above: it would never fire.
                            if getppid() != guard {
                                return Err(std::io::Error::other("the guard is gone"));
                            }
                            Ok(())
                        });
                    }
                    match command.spawn() {
                        Ok(child) => {
                            let pid = child.id() as i32;
                            self.children.insert(pid, Child { id, kill_at: None });
                            self.pids.insert(id, pid);
                            FromGuard::Started {
                                id,
                                pid: child.id(),
                            }
                        }
                        Err(error) => FromGuard::NotStarted {
                            id,
                            error: format!("cannot start {program:?}: {error}"),
                        },
                    }
                };
                self.outbox.push_back(answer);
            }
        }
    }

    /// Reaps every child that ended; what else ran in its group goes with it.
    fn reap(&mut self) {
        loop {
            let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code), None),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, None, Some(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(error) => {
                    warn!(%error, "waitpid failed");
                    return;
                }
            };
            if let Some(child) = self.children.remove(&pid.as_raw()) {
                let _ = killpg(pid, Signal::SIGKILL);
                self.pids.remove(&child.id);
                self.outbox.push_back(FromGuard::Exited {
                    id: child.id,
                    code,
                    signal,
                });
            }
        }
    }

    /// Past the deadline, every task gets SIGTERM, and SIGKILL the stop grace later.
    fn enforce(&mut self, now: u64) {
        for (&pid, child) in &mut self.children {
            match child.kill_at {
                // A guard frozen itself past the kill time (with the whole container) kills
                // at once: the lease is gone, and a stop grace would be an overlap.
                None if now >= self.term_at.saturating_add(self.stop_grace_ns) => {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    child.kill_at = Some(u64::MAX);
                    warn!(
                        pid,
                        "the worker's lease proof ran out long ago: task killed"
                    );
                }
                None if now >= self.term_at => {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                    child.kill_at = Some(now + self.stop_grace_ns);
                    warn!(pid, "the worker's lease proof ran out: task sent SIGTERM");
                }
                Some(at) if now >= at => {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    child.kill_at = Some(u64::MAX);
                }
                _ => {}
            }
        }
    }

    /// When [`Guard::enforce`] has something to do next.
    fn next_wake(&self) -> Option<u64> {
        self.children
            .values()
            .map(|c| c.kill_at.unwrap_or(self.term_at))
            .filter(|&at| at != u64::MAX)
            .min()
    }

    fn kill_all(&self) {
        for &pid in self.children.keys() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Runs the guard on `socket` (the worker's end is the other) until the worker's end closes.
pub fn run(socket: OwnedFd, stop_grace: Duration) -> std::io::Result<()> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    // Blocked here and read from the signalfd; a started process's mask is emptied before
    // it execs.
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let timer = TimerFd::new(
        ClockId::CLOCK_BOOTTIME,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    let mut guard = Guard {
        stop_grace_ns: stop_grace.as_nanos() as u64,
        term_at: 0,
        children: HashMap::new(),
        pids: HashMap::new(),
        outbox: VecDeque::new(),
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    info!(
        stop_grace_ms = stop_grace.as_millis() as u64,
        "guard running"
    );
    loop {
        let mut wanted = PollFlags::POLLIN;
        if !guard.outbox.is_empty() {
            wanted |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(socket.as_fd(), wanted),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(timer.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
        let ready = |fd: &PollFd<'_>| !fd.revents().unwrap_or(PollFlags::empty()).is_empty();
        let (socket_ready, signalled, timed) = (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]));
        if signalled {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo != Signal::SIGCHLD as u32 {
                    info!(
                        signal = info.ssi_signo,
                        "guard ignores it: it ends with its worker"
                    );
                }
            }
            guard.reap();
        }
        if timed {
            let mut expirations = [0u8; 8];
            let _ = nix::unistd::read(&timer, &mut expirations);
        }
        if socket_ready {
            loop {
                match recv_message::<ToGuard>(socket.as_fd(), &mut buf) {
                    Ok(Some((message, fds))) => guard.handle(message, fds),
                    Ok(None) => {
                        info!(
                            tasks = guard.children.len(),
                            "worker gone: killing its tasks"
                        );
                        guard.kill_all();
                        return Ok(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        warn!(%error, "guard cannot read its worker: killing its tasks");
                        guard.kill_all();
                        return Err(error);
                    }
                }
            }
        }
        guard.enforce(boottime_ns());
        match guard.next_wake() {
            Some(at) => timer.set(
                Expiration::OneShot(TimeSpec::from_duration(Duration::from_nanos(at.max(1)))),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )?,
            None => timer.unset()?,
        }
        while let Some(message) = guard.outbox.front() {
            match send_message(socket.as_fd(), message, &[]) {
                Ok(()) => {
                    guard.outbox.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    warn!(%error, "guard cannot reach its worker: killing its tasks");
                    guard.kill_all();
                    return Err(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid above any kernel's `pid_max`: signalling it reaches nothing.
    const NOBODY: i32 = i32::MAX - 1;

    fn guard(term_at: u64) -> Guard {
        let mut children = HashMap::new();
        children.insert(
            NOBODY,
            Child {
                id: 1,
                kill_at: None,
            },
        );
        Guard {
            stop_grace_ns: 1_000,
            term_at,
            children,
            pids: HashMap::from([(1, NOBODY)]),
            outbox: VecDeque::new(),
        }
    }

    #[test]
    fn a_task_gets_sigterm_at_the_deadline_and_sigkill_a_grace_later() {
        let mut g = guard(10_000);
        g.enforce(9_999);
        assert_eq!(g.children[&NOBODY].kill_at, None);
        assert_eq!(g.next_wake(), Some(10_000));
        g.enforce(10_000);
        assert_eq!(g.children[&NOBODY].kill_at, Some(11_000));
        assert_eq!(g.next_wake(), Some(11_000));
        g.enforce(11_000);
        assert_eq!(g.children[&NOBODY].kill_at, Some(u64::MAX));
        assert_eq!(g.next_wake(), None);
    }

    #[test]
    fn a_guard_that_wakes_past_the_kill_time_kills_at_once() {
        let mut g = guard(10_000);
        g.enforce(50_000);
        assert_eq!(g.children[&NOBODY].kill_at, Some(u64::MAX));
    }

    #[test]
    fn nothing_starts_without_a_deadline_or_past_it() {
        let mut g = guard(0);
        let start = ToGuard::Start {
            id: 2,
            program: "true".into(),
            args: vec![],
            env: vec![],
            dir: ".".into(),
        };
        g.handle(start.clone(), Vec::new());
        g.term_at = boottime_ns().saturating_sub(1);
        g.handle(start, Vec::new());
        assert!(g.outbox.iter().all(|m| matches!(
            m,
            FromGuard::NotStarted { error, .. } if error.contains("lease proof")
        )));
        assert_eq!(g.outbox.len(), 2);
        assert_eq!(g.children.len(), 1);
    }
}
