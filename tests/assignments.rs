//! Workers follow their own assignment keys: each sees exactly its tasks, keys written by
//! others are repaired, and no assignment is missed across a master failover, an etcd restart
//! or a compaction that the worker's watch falls behind.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use etcd_client::GetOptions;

const WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "/crawler/assignments/";

/// The task names a worker's `/tasks` lists, read in pages of two, and the oldest revision a
/// page reflected.
async fn worker_tasks(worker: &Proc) -> Option<(BTreeSet<String>, i64)> {
    let (mut names, mut revision, mut next) = (BTreeSet::new(), i64::MAX, None::<String>);
    loop {
        let url = match &next {
            Some(t) => format!("http://{}/tasks?limit=2&continue={t}", worker.url),
            None => format!("http://{}/tasks?limit=2", worker.url),
        };
        let (status, _, body) = get_json(&url).await?;
        if status != 200 {
            return None;
        }
        let items = body["items"].as_array()?;
        assert!(items.len() <= 2, "a page of {} tasks", items.len());
        names.extend(
            items
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned)),
        );
        revision = revision.min(body["revision"].as_i64()?);
        match body["continue"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => return Some((names, revision)),
        }
    }
}

/// Waits until `worker` lists exactly `want`.
async fn wait_tasks(worker: &Proc, want: &BTreeSet<String>, what: &str) {
    eventually(what, WAIT, || async {
        worker_tasks(worker)
            .await
            .filter(|(names, _)| names == want)
            .map(|_| ())
    })
    .await;
}

/// Resource names by worker, from the master's API.
async fn names_of(master: &str, worker: &str) -> BTreeSet<String> {
    let url = format!("{master}/api/v1/resources?worker={worker}&limit=10000");
    let (_, _, body) = get_json(&url).await.expect("list");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// Assignment keys in etcd, as (worker, name).
async fn keys(etcd: &Etcd) -> BTreeSet<(String, String)> {
    let mut client = etcd.client().await;
    let resp = client
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("keys");
    resp.kvs()
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(kv.key()).ok()?;
            let (w, n) = key.strip_prefix(PREFIX)?.rsplit_once('/')?;
            Some((w.to_owned(), n.to_owned()))
        })
        .collect()
}

/// What the keys should be: one per assigned resource, under its worker.
async fn expected_keys(etcd: &Etcd) -> BTreeSet<(String, String)> {
    stored_resources(etcd)
        .await
        .into_iter()
        .filter_map(|r| Some((r.assigned_worker()?.to_owned(), r.name.to_string())))
        .collect()
}

async fn wait_keys_match(etcd: &Etcd, what: &str) {
    eventually(what, WAIT, || async {
        let (have, want) = (keys(etcd).await, expected_keys(etcd).await);
        (have == want).then_some(())
    })
    .await;
}

const W1: &str = "go.micro.server.worker-1";
const W2: &str = "go.micro.server.worker-2";

/// Writes `go-written` straight into `/resources/`, assigned to `worker` at `address`, as a Go
/// master (or a tool) would.
async fn go_master_assigns(client: &mut etcd_client::Client, worker: &str, address: &str) {
    let go = format!(
        r#"{{"ID":"77","Name":"go-written","AssignedNode":"{worker}|{address}","CreationTime":1}}"#
    );
    client
        .put("/resources/go-written", go, None)
        .await
        .expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_sees_only_its_own_tasks_and_keys_written_by_others_are_repaired() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = fault_config(dir.path());
    let endpoints = vec![etcd.url.clone()];
    let master = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let w1 = support::worker_process(1, &endpoints, &config);
    let w2 = support::worker_process(2, &endpoints, &config);
    wait_workers(&master.url, 2).await;
    for i in 0..8 {
        assert_eq!(
            create(&master.url, &format!("t-{i}"))
                .await
                .expect("create")
                .0,
            201
        );
    }
    let (mine1, mine2) = (
        names_of(&master.url, W1).await,
        names_of(&master.url, W2).await,
    );
    assert_eq!(mine1.len() + mine2.len(), 8);
    assert!(
        !mine1.is_empty() && !mine2.is_empty(),
        "{mine1:?} {mine2:?}"
    );
    wait_tasks(&w1, &mine1, "worker 1 lists its own tasks").await;
    wait_tasks(&w2, &mine2, "worker 2 lists its own tasks").await;
    wait_keys_match(&etcd, "one key per assigned resource").await;
    for bad in ["limit=0", "limit=abc", "limit=100000", "continue=a%2Fb"] {
        let resp = http()
            .get(format!("http://{}/tasks?{bad}", w1.url))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 400, "{bad}");
    }

    // A pin moves the key; a delete removes it.
    let moved = mine1.iter().next().expect("one").clone();
    let resp = http()
        .patch(format!("{}/api/v1/resources/{moved}", master.url))
        .json(&serde_json::json!({"assigned_node": W2}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let gone = mine2.iter().next().expect("one").clone();
    let resp = http()
        .delete(format!("{}/api/v1/resources/{gone}", master.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let mut want1 = mine1.clone();
    want1.remove(&moved);
    let mut want2 = mine2.clone();
    want2.remove(&gone);
    want2.insert(moved.clone());
    wait_tasks(&w1, &want1, "worker 1 lost the pinned task").await;
    wait_tasks(
        &w2,
        &want2,
        "worker 2 got the pinned task, lost the deleted one",
    )
    .await;
    wait_keys_match(&etcd, "keys follow a pin and a delete").await;

    // A Go master (or a tool) writes a resource straight into /resources/, assigned to worker 1:
    // the leader writes its key, and worker 1 runs it.
    let mut client = etcd.client().await;
    go_master_assigns(&mut client, W1, &w1.url).await;
    want1.insert("go-written".to_owned());
    wait_tasks(&w1, &want1, "worker 1 got the resource a Go master wrote").await;
    let key = format!("{PREFIX}{W1}/go-written");
    let value = client.get(key.as_str(), None).await.expect("get");
    let text = String::from_utf8_lossy(value.kvs()[0].value()).to_string();
    assert!(
        text.contains("\"Epoch\""),
        "a repaired key carries its epoch: {text}"
    );
    // Moved by the Go master to worker 2, then deleted straight from etcd.
    go_master_assigns(&mut client, W2, &w2.url).await;
    want1.remove("go-written");
    want2.insert("go-written".to_owned());
    wait_tasks(&w1, &want1, "worker 1 lost the task the Go master moved").await;
    wait_tasks(&w2, &want2, "worker 2 got the task the Go master moved").await;
    client
        .delete("/resources/go-written", None)
        .await
        .expect("delete");
    want2.remove("go-written");
    wait_tasks(&w2, &want2, "worker 2 lost the task deleted from etcd").await;
    wait_keys_match(&etcd, "keys follow writes made straight into etcd").await;
    drop((w1, w2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_assignment_is_missed_across_failover_etcd_restart_and_compaction() {
    let mut etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://"))
        .await
        .expect("proxy");
    let dir = tempfile::tempdir().expect("dir");
    let config = fault_config(dir.path());
    let endpoints = vec![etcd.url.clone()];
    let mut m1 = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&m1.url], WAIT).await;
    let m2 = support::master_process(2, &endpoints, &config, &[]);
    wait_ready(&m2.url).await;
    // The worker reaches etcd through the proxy, so that its watch can be cut off.
    let worker = support::worker_process(1, std::slice::from_ref(&proxy.url), &config);
    wait_workers(&m1.url, 1).await;
    let mut want = BTreeSet::new();
    for name in ["before-1", "before-2"] {
        assert_eq!(create(&m1.url, name).await.expect("create").0, 201);
        want.insert(name.to_owned());
    }
    wait_tasks(&worker, &want, "the first tasks").await;

    // 1. Failover: the leader dies; a key no resource explains is left behind for the next
    //    leader's take-over to find.
    let mut client = etcd.client().await;
    client
        .put(
            format!("{PREFIX}{W1}/ghost"),
            format!(r#"{{"ID":"1","Name":"ghost","AssignedNode":"{W1}|x:1","CreationTime":1}}"#),
            None,
        )
        .await
        .expect("put");
    want.insert("ghost".to_owned());
    wait_tasks(&worker, &want, "the worker sees the stray key").await;
    m1.kill();
    ready_leader(&[&m2.url], WAIT).await;
    want.remove("ghost");
    wait_tasks(&worker, &want, "the new leader removed the stray key").await;
    assert_eq!(
        create(&m2.url, "after-failover").await.expect("create").0,
        201
    );
    want.insert("after-failover".to_owned());
    wait_tasks(&worker, &want, "a task created by the new leader").await;

    // 2. etcd restarts (same data, same port).
    etcd.restart().await;
    eventually("a create after etcd's restart", WAIT, || async {
        let (status, _) = create(&m2.url, "after-restart").await?;
        (status == 201 || status == 409).then_some(())
    })
    .await;
    want.insert("after-restart".to_owned());
    wait_tasks(&worker, &want, "a task created after etcd's restart").await;

    // 3. The worker's watch is cut off, a task is assigned to it, and etcd compacts past the
    //    revision the watch would resume from: the worker must list its prefix again. The cut
    //    is shorter than the worker's lease, so it stays registered and keeps the task.
    let (_, seen) = worker_tasks(&worker).await.expect("tasks");
    proxy.cut();
    // Two writes, so that the compaction below removes the first revision the watch would
    // resume from (a compaction at exactly that revision would leave it watchable).
    for name in ["during-cut", "during-cut-2"] {
        assert_eq!(create(&m2.url, name).await.expect("create").0, 201);
    }
    let mut client = etcd.client().await;
    let now = client
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .expect("rev")
        .header()
        .map_or(0, |h| h.revision());
    assert!(now > seen + 1);
    client.compact(now, None).await.expect("compact");
    proxy.restore();
    want.insert("during-cut".to_owned());
    want.insert("during-cut-2".to_owned());
    wait_tasks(
        &worker,
        &want,
        "the task assigned while the watch was compacted away",
    )
    .await;
    let (_, revision) = worker_tasks(&worker).await.expect("tasks");
    assert!(
        revision >= now,
        "the worker re-listed at {revision} >= {now}"
    );
    wait_keys_match(&etcd, "keys match after all three faults").await;
}
