//! A leader under a status flood: 3 worker processes run 1,500 tasks that exit at once, each
//! writing its statuses, while the tasks are created through the API. The workers' capacity
//! holds only 1,200 unfinished tasks, so the last ones are placed only if the leader follows
//! the statuses (a completed task frees its place). It does, every task completes, and no
//! cache re-lists: a slow subscriber is coalesced per name, not resynchronised with O(all
//! objects) work. Real etcd, a real master and real worker processes.

use std::time::Duration;

use crate::support::*;
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(90);
const TASKS: usize = 1_500;
const WORKERS: u32 = 3;
/// Unfinished tasks one worker holds: together, fewer than the tasks.
const CAPACITY: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_under_a_status_flood_follows_every_task_and_never_relists() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = fault_config_with(
        dir.path(),
        &format!(
            "  capacity: {CAPACITY}\n  data_dir: {}\n  runners:\n    default: [\"true\"]\n",
            dir.path().join("data").display()
        ),
    );
    let endpoints = vec![etcd.url.clone()];
    let master = master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let lists_before = metric(&master.url, "crawler_cache_lists_total").await;
    let _workers: Vec<_> = (1..=WORKERS)
        .map(|id| worker_process(id, &endpoints, &config))
        .collect();
    eventually("the workers register", WAIT, || async {
        let ids = worker_ids(&master.url).await?;
        (ids.len() == WORKERS as usize).then_some(())
    })
    .await;
    let created = futures_util::stream::iter(0..TASKS)
        .map(|i| {
            let url = master.url.clone();
            async move { create(&url, &format!("flood-{i:05}")).await.map(|r| r.0) }
        })
        .buffer_unordered(16)
        .filter(|status| std::future::ready(*status == Some(201)))
        .count()
        .await;
    assert_eq!(created, TASKS, "every create is acknowledged");
    eventually("every task shows completed", WAIT, || async {
        let (_, _, summary) = get_json(&format!("{}/api/v1/summary", master.url)).await?;
        (summary["states"]["completed"].as_u64() == Some(TASKS as u64)).then_some(())
    })
    .await;
    let lists = metric(&master.url, "crawler_cache_lists_total").await;
    let coalesced = metric(&master.url, "crawler_cache_coalesced_changes_total").await;
    println!(
        "measured: status flood of {TASKS} tasks over {WORKERS} workers: {} re-lists, {coalesced} changes coalesced",
        lists - lists_before
    );
    assert_eq!(
        lists, lists_before,
        "a cache re-listed under the flood (lists before {lists_before}, after {lists})"
    );
}
