//! Runs this worker's tasks as supervised processes: at most one process per task, started
//! for the newest assignment epoch the worker has seen, restarted with backoff when it fails,
//! stopped (SIGTERM to its process group, SIGKILL after the grace) when the task goes away.
//!
//! [`Supervisor::reconcile`] makes the running set equal the desired one. A task whose epoch
//! changed (the resource was changed or restarted through the API) is stopped and started
//! again; a task that left is stopped and its status removed. No one waits on a stop: the
//! worker's loop goes on, and the new start waits for the old process to end. Every process
//! is started by the worker's [`guard`](super::guard) in a process group of its own, with its
//! working directory under the worker's data directory, and dies with the guard, which ends
//! with the worker: a killed worker leaves no task running, and a frozen one none past its
//! lease.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::guard::link::{Guard, Guarded};
pub use super::policy::Policy;
use super::reporter::Reports;
use super::runner::{self, TaskSpec};
use super::summary::{SUMMARY_FILE, read_summary};
use crate::etcd::backoff::Backoff;
use crate::model::status::{TaskState, TaskStatus, now_ms};

struct Running {
    epoch: i64,
    /// Which start this is, told apart from an earlier start of the task at the same epoch.
    run: u64,
    /// Until the task ends by itself: an ended task (failed for good, completed) keeps only
    /// its epoch, so that it is not started again.
    live: Option<Live>,
}

/// A task that ended by itself: its name and which start it was.
type Finished = (String, u64);

struct Live {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// The tasks this worker runs.
pub struct Supervisor {
    policy: Arc<Policy>,
    guard: Guard,
    reports: Reports,
    running: HashMap<String, Running>,
    /// Tasks being stopped, by name: which start, and its handle. Nothing waits on a stop: the
    /// worker's loop goes on proving its lease to the guard meanwhile, and a new start of the
    /// same task waits for the old one to end.
    stopping: HashMap<String, (u64, JoinHandle<()>)>,
    /// Turns to start a task: [`STARTS`] at once.
    starts: Arc<Semaphore>,
    /// Starts so far.
    runs: u64,
    /// Tasks that ended by themselves, by name and start, told by their own future.
    ended: (
        mpsc::UnboundedSender<Finished>,
        mpsc::UnboundedReceiver<Finished>,
    ),
}

/// Tasks that may be starting at once (their directory made, their last run read, their
/// process started).
pub const STARTS: usize = 64;

impl Supervisor {
    /// No task runs yet; tasks will run under `guard`.
    pub fn new(policy: Policy, guard: Guard, reports: Reports) -> Self {
        Self {
            policy: Arc::new(policy),
            guard,
            reports,
            running: HashMap::new(),
            stopping: HashMap::new(),
            starts: Arc::new(Semaphore::new(STARTS)),
            runs: 0,
            ended: mpsc::unbounded_channel(),
        }
    }

    /// Lets go of what tasks that ended held (their stop token and their tokio task), keeping
    /// the epochs of those that ended by themselves, and removes the statuses of stopped tasks
    /// that are not here any more. Costs what ended since the last call.
    pub fn forget_ended(&mut self) {
        while let Ok((name, run)) = self.ended.1.try_recv() {
            if let Some(r) = self.running.get_mut(&name)
                && r.run == run
            {
                r.live = None;
            }
            if self.stopping.get(&name).is_some_and(|(r, _)| *r == run) {
                self.stopping.remove(&name);
                if !self.running.contains_key(&name) {
                    self.reports.remove(&name);
                }
            }
        }
    }

    /// Makes the running tasks those of `desired`, each at its epoch, and releases the
    /// statuses of those tasks alone. A task is stopped before it starts again, so no two
    /// processes of one task ever overlap on this worker.
    pub async fn reconcile(&mut self, desired: &BTreeMap<String, TaskSpec>) {
        let names: BTreeSet<String> = self.running.keys().chain(desired.keys()).cloned().collect();
        self.reconcile_names(desired, &names).await;
        // Statuses of tasks that left while nothing ran (the worker was cut off) go, and the
        // rest are written again.
        self.reports.retain(|name| desired.contains_key(name));
        self.reports.hold(false);
    }

    /// As [`Supervisor::reconcile`], for the tasks named in `names` only: a change to one task
    /// costs the same on a worker that holds 30,000.
    pub async fn reconcile_names(
        &mut self,
        desired: &BTreeMap<String, TaskSpec>,
        names: &BTreeSet<String>,
    ) {
        for name in names {
            let wanted = desired.get(name).map(|t| t.epoch);
            if self
                .running
                .get(name)
                .is_some_and(|r| Some(r.epoch) != wanted)
                && let Some(r) = self.running.remove(name)
            {
                match r.live {
                    Some(live) => {
                        live.stop.cancel();
                        self.stopping.insert(name.clone(), (r.run, live.handle));
                    }
                    None if wanted.is_none() => self.reports.remove(name),
                    None => {}
                }
            }
        }
        for name in names {
            let Some(spec) = desired.get(name) else {
                continue;
            };
            if self.running.contains_key(name) {
                continue;
            }
            let stop = CancellationToken::new();
            // At most STARTS tasks start at once, each waiting its turn in a small future: a
            // worker given 30,000 tasks at once never holds 30,000 starting state machines,
            // nor as many file operations queued on tokio's blocking pool (whose threads and
            // their allocator arenas it would keep). The supervising future is boxed and made
            // only once its turn comes: a spawned task's memory is sized for its future and
            // kept until its handle goes; the box goes when the task ends.
            let (starts, waiting) = (Arc::clone(&self.starts), stop.clone());
            self.runs += 1;
            let (run, ended, named) = (self.runs, self.ended.0.clone(), name.clone());
            let previous = self.stopping.remove(name).map(|(_, handle)| handle);
            let supervise = supervise(
                spec.clone(),
                Arc::clone(&self.policy),
                self.guard.clone(),
                self.reports.clone(),
                stop.clone(),
            );
            // Boxed too, so that a task that ended keeps a cell of a pointer's size, not of
            // its waiting future's, until its handle goes.
            let handle = tokio::spawn(Box::pin(async move {
                // No two processes of one task overlap: the old one ends first, whatever
                // happens to this one meanwhile.
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                let turn = tokio::select! {
                    turn = starts.acquire_owned() => Some(turn.ok()),
                    () = waiting.cancelled() => None,
                };
                if let Some(turn) = turn {
                    supervise(turn).await;
                }
                let _ = ended.send((named, run));
            }));
            self.running.insert(
                name.clone(),
                Running {
                    epoch: spec.epoch,
                    run,
                    live: Some(Live { stop, handle }),
                },
            );
        }
    }

    /// Stops every task and waits until their processes are gone, and holds their statuses:
    /// they stay as last written (the worker's lease takes them away).
    pub async fn stop_all(&mut self) {
        self.reports.hold(true);
        let all: Vec<Live> = self.running.drain().filter_map(|(_, r)| r.live).collect();
        for live in &all {
            live.stop.cancel();
        }
        let stopping = self.stopping.drain().map(|(_, (_, handle))| handle);
        for handle in all.into_iter().map(|live| live.handle).chain(stopping) {
            let _ = handle.await;
        }
    }
}

/// What one run of the process ended with.
enum Ended {
    /// It exited (or was killed by a signal).
    Exited(ExitStatus),
    /// It could not be started.
    NotStarted(String),
    /// The task was stopped.
    Stopped,
}

/// The life of one task at one epoch, until `stop` fires, once given its `turn` to start
/// (held until its first process started or it ended).
fn supervise(
    spec: TaskSpec,
    policy: Arc<Policy>,
    guard: Guard,
    reports: Reports,
    stop: CancellationToken,
) -> impl FnOnce(Option<OwnedSemaphorePermit>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    move |turn| Box::pin(supervised(spec, policy, guard, reports, stop, turn))
}

async fn supervised(
    spec: TaskSpec,
    policy: Arc<Policy>,
    guard: Guard,
    reports: Reports,
    stop: CancellationToken,
    mut turn: Option<OwnedSemaphorePermit>,
) {
    let status = |state: TaskState| TaskStatus {
        worker: policy.node_id.clone(),
        epoch: spec.epoch,
        state,
        pid: None,
        started_at_ms: None,
        restarts: 0,
        exit_code: None,
        message: String::new(),
        summary: None,
        updated_at_ms: now_ms(),
    };
    let dir = policy.task_dir(&spec.name);
    let work = dir.join("work");
    if let Err(error) = tokio::fs::create_dir_all(&work).await {
        let mut s = status(TaskState::Failed);
        s.message = format!("cannot create {}: {error}", work.display());
        reports.set(&spec.name, s);
        // Nothing runs, so nothing waits for the stop: the task's state is freed now, and
        // the supervisor's stop finds it finished.
        return;
    }
    let log = policy.log_of(&spec.name);
    // A run that completed before this worker restarted is not run again.
    let completed = dir.join(COMPLETED_FILE);
    // The resource's id with the epoch: a new etcd's revisions start again from 1.
    let run = format!("{} {}", spec.id, spec.epoch);
    if tokio::fs::read_to_string(&completed).await.ok().as_deref() == Some(&*run) {
        let mut done = status(TaskState::Completed);
        done.exit_code = Some(0);
        done.message = "completed before the worker restarted".into();
        reports.set(&spec.name, done);
        // Nothing runs: the task's state goes now, and a stop finds it ended.
        return;
    }
    let command = match runner::resolve(&policy.runners, &spec, &policy.worker_dir) {
        Ok(command) => command,
        Err(error) => {
            log.note(&error.to_string()).await;
            let mut s = status(TaskState::Failed);
            s.message = error.to_string();
            reports.set(&spec.name, s);
            return;
        }
    };
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut restarts = 0u32;
    let mut backoff = Backoff::new(policy.backoff.0, policy.backoff.1);
    loop {
        let mut s = status(TaskState::Starting);
        s.restarts = restarts;
        reports.set(&spec.name, s.clone());
        let mut env = command.env.clone();
        env.push(("CRAWLER_WORKER_ID".to_owned(), policy.node_id.clone()));
        let summary = work.join(SUMMARY_FILE);
        let _ = tokio::fs::remove_file(&summary).await;
        env.push((
            "CRAWLER_SUMMARY_FILE".to_owned(),
            summary.display().to_string(),
        ));
        // The run's secret lives as long as this start's process: `agent_run` is dropped
        // when the loop comes round again or ends.
        let agent_run = match &policy.agent {
            Some(agent) => agent.open(&spec, &work).await.map(Some),
            None => Ok(None),
        };
        let started = match &agent_run {
            Ok(run) => {
                env.extend(run.iter().flat_map(|r| r.env()));
                guard
                    .start(&command.program, &command.args, env, &work)
                    .await
            }
            Err(why) => Err(why.clone()),
        };
        // The next task's turn: this one's process started, or could not.
        drop(turn.take());
        let ended = match started {
            Err(error) => Ended::NotStarted(error),
            Ok(mut child) => {
                let pid = Some(child.pid);
                let started = now_ms();
                s.state = TaskState::Running;
                s.pid = pid;
                s.started_at_ms = Some(started);
                s.updated_at_ms = now_ms();
                reports.set(&spec.name, s.clone());
                log.note(&format!(
                    "started {:?} as pid {} (epoch {})",
                    command.program, child.pid, spec.epoch
                ))
                .await;
                info!(task = %spec.name, pid, epoch = spec.epoch, "task started");
                let copy = child.output.take().map(|output| {
                    let log = log.clone();
                    tokio::spawn(async move { log.copy_from(output).await })
                });
                let ended = tokio::select! {
                    exit = child.wait() => match exit {
                        Ok(exit) => Ended::Exited(exit),
                        Err(error) => Ended::NotStarted(format!("lost the process: {error}")),
                    },
                    () = stop.cancelled() => {
                        s.state = TaskState::Stopping;
                        s.updated_at_ms = now_ms();
                        reports.set(&spec.name, s.clone());
                        terminate(&mut child, policy.stop_grace).await;
                        Ended::Stopped
                    }
                };
                if let Some(copy) = copy {
                    let _ = copy.await;
                }
                s.summary = read_summary(&summary).await;
                ended
            }
        };
        let (code, why) = match ended {
            Ended::Stopped => {
                log.note("stopped").await;
                info!(task = %spec.name, "task stopped");
                return;
            }
            Ended::Exited(exit) if exit.success() => {
                log.note("exited 0: completed").await;
                if let Err(error) = tokio::fs::write(&completed, &run).await {
                    warn!(task = %spec.name, %error, "cannot record the completed epoch");
                }
                let mut done = s.clone();
                done.state = TaskState::Completed;
                done.pid = None;
                done.exit_code = Some(0);
                done.message = "exited 0".into();
                done.updated_at_ms = now_ms();
                reports.set(&spec.name, done);
                return;
            }
            Ended::Exited(exit) => {
                let why = match (
                    exit.code(),
                    std::os::unix::process::ExitStatusExt::signal(&exit),
                ) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(signal)) => format!("killed by signal {signal}"),
                    _ => "ended".to_owned(),
                };
                (exit.code(), why)
            }
            Ended::NotStarted(why) => (None, why),
        };
        log.note(&why).await;
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.failure_window)
        {
            failures.pop_front();
        }
        let mut failed = s.clone();
        failed.pid = None;
        failed.exit_code = code;
        failed.updated_at_ms = now_ms();
        if failures.len() as u32 >= policy.max_failures {
            failed.state = TaskState::Failed;
            failed.message = format!(
                "{why}; failed {} times within {:?}: left alone until the resource changes or \
                 is restarted",
                failures.len(),
                policy.failure_window
            );
            warn!(task = %spec.name, %why, "task failed");
            reports.set(&spec.name, failed);
            return;
        }
        let delay = backoff.next_delay();
        failed.state = TaskState::Backoff;
        failed.message = format!("{why}; starting again in {} ms", delay.as_millis());
        reports.set(&spec.name, failed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        restarts += 1;
    }
}

/// The file in a task's directory that names the run that completed: the resource's id and
/// the epoch.
const COMPLETED_FILE: &str = "completed";

/// SIGTERM to the process group, SIGKILL after `grace`, and the process reaped (by the guard).
async fn terminate(child: &mut Guarded, grace: Duration) {
    child.signal(false).await;
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        child.signal(true).await;
        let _ = child.wait().await;
    }
}
