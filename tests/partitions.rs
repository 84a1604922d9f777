//! A worker cut off from etcd, or frozen, whose tasks move to another worker, and which then
//! comes back while the other worker runs them: no two runs of a task are ever alive at once,
//! judged from the runners' own records. Both kinds of partition (connections refused, and
//! packets silently dropped on connections held open), and a worker process stopped with
//! SIGSTOP for longer than its lease, which cannot stop its tasks itself (its guard must).
//! Real etcd, a real master and real worker processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);
const TRIALS: usize = 10;
const FROZEN_TRIALS: usize = 6;
/// Trials run this many at a time, each with its own etcd, master and workers: a trial mostly
/// waits for leases to end, and a machine under more load is a harder test, not an easier one.
const AT_ONCE: usize = 2;
/// How long the frozen worker stays frozen after its tasks run elsewhere.
const HOLD_FROZEN: Duration = Duration::from_secs(2);
const TASKS: usize = 5;
/// How long the returned worker is watched for runs it should not start.
const WATCH_AFTER_RETURN: Duration = Duration::from_secs(3);

fn config(dir: &Path, log: &Path) -> PathBuf {
    let worker = format!(
        "  lease_margin_ms: 1000\n  stop_grace_ms: 2000\n  data_dir: {data}\n  \
         runners:\n    rules:\n{rule}",
        data = dir.join("data").display(),
        rule = logged_runner("p-*", log),
    );
    fault_config_with(dir, &worker)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[derive(Clone, Copy, Debug)]
enum Partition {
    Refused,
    Dropped,
    /// The worker process is frozen (SIGSTOP); its guard and tasks are not.
    Frozen,
}

/// One trial: worker 1 runs every task, is partitioned until they all run on worker 2, then
/// comes back. Returns the overlaps the runners recorded and the number of moves.
async fn trial(kind: Partition) -> (Vec<(String, u128)>, usize) {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://"))
        .await
        .expect("proxy");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    let config = config(dir.path(), &log);
    let direct = vec![etcd.url.clone()];
    let master = master_process(1, &direct, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let returning = worker_process(1, std::slice::from_ref(&proxy.url), &config);
    wait_workers(&master.url, 1).await;
    let tasks: Vec<String> = (0..TASKS).map(|i| format!("p-{i}")).collect();
    for t in &tasks {
        assert_eq!(create(&master.url, t).await.expect("create").0, 201);
    }
    eventually("every task runs on worker 1", WAIT, || async {
        let all = runs(&log);
        tasks
            .iter()
            .all(|t| all.iter().any(|r| r.0 == *t && r.1.ends_with("-1")))
            .then_some(())
    })
    .await;
    let _other = worker_process(2, &direct, &config);
    wait_workers(&master.url, 2).await;
    let frozen = returning
        .pid()
        .map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    match kind {
        Partition::Refused => proxy.cut(),
        Partition::Dropped => proxy.blackhole(),
        Partition::Frozen => {
            let pid = frozen.expect("worker 1 runs");
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        }
    }
    eventually("every task runs on worker 2", WAIT, || async {
        let all = runs(&log);
        tasks
            .iter()
            .all(|t| all.iter().any(|r| r.0 == *t && r.1.ends_with("-2")))
            .then_some(())
    })
    .await;
    match (kind, frozen) {
        (Partition::Frozen, Some(pid)) => {
            // Frozen well past the move, as a long pause would be: only the guard can stop
            // what still runs there.
            tokio::time::sleep(HOLD_FROZEN).await;
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
        }
        _ => proxy.restore(),
    }
    eventually("worker 1 is registered again", WAIT, || async {
        let ids = worker_ids(&master.url).await?;
        (ids.len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(WATCH_AFTER_RETURN).await;
    let all = runs(&log);
    let moves = all.iter().filter(|r| r.1.ends_with("-2")).count();
    (overlaps(&all, now_ns()), moves)
}

async fn trials(kind: Partition, count: usize) {
    let mut overlaps = Vec::new();
    let mut moves = 0;
    let rounds = count.div_ceil(AT_ONCE);
    let count = rounds * AT_ONCE;
    for _ in 0..rounds {
        let round = futures_util::future::join_all((0..AT_ONCE).map(|_| trial(kind))).await;
        for (found, moved) in round {
            overlaps.extend(found);
            moves += moved;
        }
    }
    println!(
        "measured: partition ({kind:?}) and return, {count} trials, {moves} moves: {} overlapping runs{}",
        overlaps.len(),
        overlaps
            .iter()
            .map(|(_, ns)| *ns)
            .max()
            .map_or(String::new(), |ns| format!(
                ", longest {:?}",
                Duration::from_nanos(ns as u64)
            ))
    );
    assert!(
        overlaps.is_empty(),
        "{kind:?}: runs alive at once (task, ns): {overlaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_from_refused_connections_never_runs_a_moved_task() {
    trials(Partition::Refused, TRIALS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_from_dropped_packets_never_runs_a_moved_task() {
    trials(Partition::Dropped, TRIALS).await;
}

/// A worker frozen past its lease (a long pause, a stuck disk) cannot stop its tasks; its
/// guard stops them before the lease can expire, and the worker, once thawed, starts none of
/// the moved tasks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_s_tasks_stop_before_they_move_and_never_run_again() {
    trials(Partition::Frozen, FROZEN_TRIALS).await;
}
