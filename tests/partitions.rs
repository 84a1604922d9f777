//! A worker cut off from etcd, whose tasks move to another worker, and which then comes back
//! while the other worker runs them, never runs them again: no two runs of a task are ever
//! alive at once, judged from the runners' own records. Both kinds of partition: connections
//! refused, and packets silently dropped on connections held open. Real etcd, a real master
//! and real worker processes.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const WAIT: Duration = Duration::from_secs(30);
const TRIALS: usize = 10;
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
}

/// One trial: worker 1 runs every task, is partitioned until they all run on worker 2, then
/// comes back. Returns the overlaps the runners recorded and the number of moves.
async fn trial(kind: Partition) -> (Vec<(String, u128)>, usize) {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://")).await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    let config = config(dir.path(), &log);
    let direct = vec![etcd.url.clone()];
    let master = master_process(1, &direct, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let _returning = worker_process(1, std::slice::from_ref(&proxy.url), &config);
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
    match kind {
        Partition::Refused => proxy.cut(),
        Partition::Dropped => proxy.blackhole(),
    }
    eventually("every task runs on worker 2", WAIT, || async {
        let all = runs(&log);
        tasks
            .iter()
            .all(|t| all.iter().any(|r| r.0 == *t && r.1.ends_with("-2")))
            .then_some(())
    })
    .await;
    proxy.restore();
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

async fn trials(kind: Partition) {
    let mut overlaps = Vec::new();
    let mut moves = 0;
    for _ in 0..TRIALS {
        let (found, moved) = trial(kind).await;
        overlaps.extend(found);
        moves += moved;
    }
    println!(
        "measured: partition ({kind:?}) and return, {TRIALS} trials, {moves} moves: {} overlapping runs{}",
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
    trials(Partition::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_from_dropped_packets_never_runs_a_moved_task() {
    trials(Partition::Dropped).await;
}
