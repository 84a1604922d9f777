//! Resource management against a real etcd: election, take-over, seeds, least-loaded
//! assignment, reassignment after a worker dies, fencing, concurrent creates, and the leader's
//! compaction of etcd's history.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::support::*;
use crawler::master::leader::commit::{Committer, Write};
use crawler::master::leader::writes::WriteError;
use crawler::master::leadership::Fence;
use crawler::metrics::Metrics;
use crawler::model::resource::Resource;
use etcd_client::{Compare, CompareOp, TxnOp};

const WAIT: Duration = Duration::from_secs(20);

fn assigned_counts(resources: &[Resource]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in resources {
        if let Some(w) = r.assigned_worker() {
            *counts.entry(w.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test]
async fn seeds_are_stored_unassigned_then_assigned_when_a_worker_joins_and_survive_a_restart() {
    let etcd = Etcd::start().await;
    let mut config = test_config(std::slice::from_ref(&etcd.url));
    config.tasks = vec![
        crawler::config::SeedTask {
            name: "douban".into(),
            schedule: None,
            placement: Default::default(),
        },
        crawler::config::SeedTask {
            name: "xiaohongshu".into(),
            schedule: None,
            placement: Default::default(),
        },
    ];
    let master = start_master(config.clone(), 1).await;
    ready_leader(&[&master.url], WAIT).await;
    let seeds = stored_resources(&etcd).await;
    assert_eq!(seeds.len(), 2, "{seeds:?}");
    assert!(
        seeds.iter().all(|r| r.assigned_node.is_empty()),
        "no worker yet: {seeds:?}"
    );

    let worker = start_worker(config.clone(), 1, 10).await;
    let joined = Instant::now();
    wait_all_on(
        &etcd,
        "go.micro.server.worker-1",
        "seeds assigned to the new worker",
        WAIT,
    )
    .await;
    println!(
        "measured: pending seeds assigned {:?} after the first worker started",
        joined.elapsed()
    );
    let before: HashMap<String, (String, i64)> = stored_resources(&etcd)
        .await
        .into_iter()
        .map(|r| (r.name.to_string(), (r.id.to_string(), r.creation_time)))
        .collect();

    // A restarted master neither re-adds seeds nor changes their IDs.
    master.stop().await;
    let master = start_master(config.clone(), 1).await;
    ready_leader(&[&master.url], WAIT).await;
    let after: HashMap<String, (String, i64)> = stored_resources(&etcd)
        .await
        .into_iter()
        .map(|r| (r.name.to_string(), (r.id.to_string(), r.creation_time)))
        .collect();
    assert_eq!(before, after);
    let (status, _, body) = get_json(&format!("{}/api/v1/resources/douban", master.url))
        .await
        .expect("get");
    assert_eq!(status, 200);
    assert_eq!(body["assigned_node"]["id"], "go.micro.server.worker-1");
    assert_eq!(body["id"], before["douban"].0.as_str());
    worker.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn new_resources_go_to_the_least_loaded_worker() {
    let (etcd, config, master) = etcd_and_leader().await;
    let old = start_worker(config.clone(), 1, 100).await;
    wait_workers(&master.url, 1).await;
    for name in ["a", "b"] {
        let (status, body) = create(&master.url, name).await.expect("create");
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["assigned_node"]["id"], "go.micro.server.worker-1");
    }
    let new = start_worker(config.clone(), 2, 100).await;
    wait_workers(&master.url, 2).await;
    let mut to_new = 0;
    for name in ["c", "d", "e", "f"] {
        let (status, body) = create(&master.url, name).await.expect("create");
        assert_eq!(status, 201, "{body}");
        if body["assigned_node"]["id"] == "go.micro.server.worker-2" {
            to_new += 1;
        }
    }
    assert_eq!(to_new, 3, "the new worker takes 3 of 4, the old one 1");
    let counts = assigned_counts(&stored_resources(&etcd).await);
    assert_eq!(counts["go.micro.server.worker-1"], 3);
    assert_eq!(counts["go.micro.server.worker-2"], 3);
    // The API reports the same loads.
    let (_, _, workers) = get_json(&format!("{}/api/v1/workers", master.url))
        .await
        .expect("workers");
    let loads: Vec<i64> = workers["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|w| w["load"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(loads, [3, 3]);
    // Capacity is respected: a worker with room 1 takes at most 1.
    let small = start_worker(config.clone(), 3, 1).await;
    wait_workers(&master.url, 3).await;
    for name in ["g", "h", "i"] {
        assert_eq!(create(&master.url, name).await.expect("create").0, 201);
    }
    let counts = assigned_counts(&stored_resources(&etcd).await);
    assert_eq!(counts["go.micro.server.worker-3"], 1, "{counts:?}");
    small.stop().await;
    old.stop().await;
    new.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_dead_workers_resources_are_reassigned_keeping_id_and_creation_time() {
    let (etcd, config, master) = etcd_and_leader().await;
    let survivor = start_worker(config.clone(), 1, 1000).await;
    // The victim is a real process, killed with SIGKILL: its lease must expire.
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "worker:\n  lease_ttl_secs: 3\n").expect("config");
    let etcd_urls = std::slice::from_ref(&etcd.url);
    let env = [("RUST_LOG", "warn")];
    let args = ["--capacity", "1000"];
    let mut victim = crawler_process(Role::Worker, (9, port), etcd_urls, &file, &env, &args);
    wait_workers(&master.url, 2).await;
    for i in 0..300 {
        let (status, body) = create(&master.url, &format!("task-{i}"))
            .await
            .expect("create");
        assert_eq!(status, 201, "{body}");
    }
    let before = stored_resources(&etcd).await;
    let on_victim: Vec<&Resource> = before
        .iter()
        .filter(|r| r.assigned_worker() == Some("go.micro.server.worker-9"))
        .collect();
    assert!(on_victim.len() > 100, "{}", on_victim.len());

    victim.kill();
    let killed = Instant::now();
    wait_workers(&master.url, 1).await;
    let gone = killed.elapsed();
    let left = Instant::now();
    wait_all_on(
        &etcd,
        "go.micro.server.worker-1",
        "every resource is on the survivor",
        Duration::from_secs(30),
    )
    .await;
    println!(
        "measured: SIGKILLed worker (lease TTL 3 s) left after {gone:?}; its {} resources were reassigned {:?} later ({:?} after the kill)",
        on_victim.len(),
        left.elapsed(),
        killed.elapsed()
    );
    let after: HashMap<String, Resource> = stored_resources(&etcd)
        .await
        .into_iter()
        .map(|r| (r.name.to_string(), r))
        .collect();
    for r in &before {
        let moved = &after[&*r.name];
        assert_eq!(moved.id, r.id, "a moved resource keeps its ID");
        assert_eq!(moved.creation_time, r.creation_time);
    }
    survivor.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn two_masters_elect_one_leader_and_the_other_takes_over() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let m1 = start_master(config.clone(), 1).await;
    let m2 = start_master(config.clone(), 2).await;
    let urls = [m1.url.clone(), m2.url.clone()];
    let first = ready_leader(&[&urls[0], &urls[1]], WAIT).await;
    // Exactly one leader, and both agree on it.
    let views = [
        cluster(&urls[0]).await.expect("cluster"),
        cluster(&urls[1]).await.expect("cluster"),
    ];
    let leaders = views
        .iter()
        .filter(|v| v["self"]["role"] == "leader")
        .count();
    assert_eq!(leaders, 1, "{views:?}");
    eventually("both masters agree on the leader", WAIT, || async {
        let a = cluster(&urls[0]).await?;
        let b = cluster(&urls[1]).await?;
        (a["leader"]["url"] == urls[first].as_str()
            && b["leader"]["url"] == urls[first].as_str()
            && a["masters"].as_array()?.len() == 2)
            .then_some(())
    })
    .await;
    // A write sent to the follower is carried out by the leader.
    let follower = 1 - first;
    let (status, body) = create(&urls[follower], "x").await.expect("create");
    assert_eq!(status, 201, "{body}");

    // Crash the leader: no resignation, its session must expire (TTL 2 s).
    let (leader, survivor) = if first == 0 { (m1, m2) } else { (m2, m1) };
    leader.crash();
    let took = first_accepted_write(&urls[follower], Instant::now()).await;
    println!(
        "measured: leader crashed (session TTL 2 s) -> new leader accepted a write after {took:?}"
    );
    let view = cluster(&urls[follower]).await.expect("cluster");
    assert_eq!(view["self"]["role"], "leader");

    // A graceful stop hands over at once: a third master takes over well before the TTL.
    let m3 = start_master(config.clone(), 3).await;
    eventually("m3 is a follower", WAIT, || async {
        (cluster(&m3.url).await?["self"]["role"] == "follower").then_some(())
    })
    .await;
    let stopping = Instant::now();
    survivor.stop().await;
    let took = first_accepted_write(&m3.url, stopping).await;
    println!("measured: leader stopped gracefully -> new leader accepted a write after {took:?}");
    m3.stop().await;
}

#[tokio::test]
async fn a_deposed_leader_cannot_write_and_steps_down() {
    let (etcd, config, master) = etcd_and_leader().await;
    assert_eq!(create(&master.url, "before").await.expect("create").0, 201);

    // Take the leader's session lease away behind its back.
    let mut client = etcd.client().await;
    let resp = client
        .get(
            format!("{}/", config.keys.election),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    let lease = resp.kvs()[0].lease();
    client.lease_revoke(lease).await.expect("revoke");
    let (status, body) = create(&master.url, "after").await.expect("create");
    assert_eq!(status, 503, "{body}");
    assert!(
        stored_resources(&etcd)
            .await
            .iter()
            .all(|r| &*r.name != "after"),
        "the deposed leader's write must not apply"
    );
    assert_ne!(
        cluster(&master.url).await.expect("cluster")["self"]["role"],
        "leader",
        "it stepped down"
    );
    // It campaigns again on a new session and becomes leader again.
    ready_leader(&[&master.url], WAIT).await;
    assert_eq!(create(&master.url, "again").await.expect("create").0, 201);
    master.stop().await;
}

fn committer(client: etcd_client::Client) -> (Committer, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let committer = Committer::start(client, Duration::from_secs(5), metrics.clone());
    (committer, metrics)
}

/// A sample's value from the metrics text (0 when absent).
fn sample(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render(|_| {})
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Puts `key` as a leader key would be and returns the fence on it.
async fn fence_on(kv: &mut etcd_client::Client, key: &str) -> Fence {
    let put = kv.put(key, "x", None).await.expect("put");
    Fence {
        key: key.into(),
        create_revision: put.header().expect("header").revision(),
        lease: 0,
    }
}

/// Creates `key` with `value` unless it exists.
fn create_write(key: &str, value: &str) -> Write {
    Write::new(
        vec![Compare::create_revision(key, CompareOp::Equal, 0)],
        vec![TxnOp::put(key, value, None)],
    )
}

#[tokio::test]
async fn a_stale_fence_is_refused_by_etcd() {
    let etcd = Etcd::start().await;
    let (committer, _) = committer(etcd.client().await);
    let mut kv = etcd.client().await;
    let fence = fence_on(&mut kv, "/crawler/election/1").await;
    let put = |key: &str| Write::new(vec![], vec![TxnOp::put(key, "1", None)]);
    let ok = committer
        .commit(&fence, put("/resources/a"))
        .await
        .expect("fenced write");
    assert!(ok.applied);
    // The key is re-created (a new term): the old fence no longer matches.
    kv.delete("/crawler/election/1", None)
        .await
        .expect("delete");
    kv.put("/crawler/election/1", "y", None).await.expect("put");
    let refused = committer.commit(&fence, put("/resources/b")).await;
    assert!(matches!(refused, Err(WriteError::Deposed)), "{refused:?}");
    let resp = kv.get("/resources/b", None).await.expect("get");
    assert!(resp.kvs().is_empty());
}

/// Group commit: writes queued together share one txn, and each gets its own answer. (The
/// test's runtime has one thread, so every commit below is queued before the committer runs.)
#[tokio::test]
async fn a_batch_answers_each_write_alone() {
    let etcd = Etcd::start().await;
    let (committer, metrics) = committer(etcd.client().await);
    let mut kv = etcd.client().await;
    let fence = fence_on(&mut kv, "/fence").await;
    kv.put("/r/taken", "old", None).await.expect("put");
    // Free names around a taken one.
    let names: Vec<String> = (0..40)
        .map(|i| match i {
            17 => "taken".to_owned(),
            _ => format!("free-{i}"),
        })
        .collect();
    let answers = futures_util::future::join_all(
        names
            .iter()
            .map(|n| committer.commit(&fence, create_write(&format!("/r/{n}"), "new"))),
    )
    .await;
    for (name, answer) in names.iter().zip(&answers) {
        let answer = answer.as_ref().expect("answered");
        assert_eq!(answer.applied, name != "taken", "{name}");
    }
    let writes = sample(&metrics, "crawler_leader_txn_writes_sum");
    let txns = sample(&metrics, "crawler_leader_txn_writes_count");
    assert_eq!(writes, 40.0);
    assert!(txns <= 2.0, "40 queued writes took {txns} txns");
    let taken = kv.get("/r/taken", None).await.expect("get");
    assert_eq!(
        taken.kvs()[0].value(),
        b"old",
        "a refused create changed nothing"
    );
    let stored = kv
        .get(
            "/r/free-",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    assert_eq!(stored.count(), 39);

    // Two creates of one name in a batch: etcd refuses a txn that puts a key twice, so that
    // batch goes again one write per txn, and exactly one create wins.
    let answers = futures_util::future::join_all(
        ["twice", "other", "twice", "third"]
            .map(|n| committer.commit(&fence, create_write(&format!("/r/{n}"), n))),
    )
    .await;
    let applied: Vec<bool> = answers
        .iter()
        .map(|a| a.as_ref().expect("answered").applied)
        .collect();
    assert!(applied[1] && applied[3], "{applied:?}");
    assert!(applied[0] ^ applied[2], "{applied:?}");
    assert_eq!(sample(&metrics, "crawler_leader_txn_splits_total"), 1.0);

    // Batches keep within etcd's operation limit: 300 narrow writes and a few wide ones are
    // gathered into txns etcd accepts (no batch refused, so no split), and all apply.
    let mut writes: Vec<Write> = (0..300)
        .map(|i| create_write(&format!("/r/narrow-{i}"), "n"))
        .collect();
    for w in 0..3 {
        let ops = (0..100)
            .map(|i| TxnOp::put(format!("/r/wide-{w}-{i}"), "w", None))
            .collect();
        writes.insert(w * 100, Write::new(vec![], ops));
    }
    let before = sample(&metrics, "crawler_leader_txn_writes_count");
    let answers =
        futures_util::future::join_all(writes.into_iter().map(|w| committer.commit(&fence, w)))
            .await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|a| a.applied)));
    assert_eq!(sample(&metrics, "crawler_leader_txn_splits_total"), 1.0);
    let txns = sample(&metrics, "crawler_leader_txn_writes_count") - before;
    assert!(txns < 20.0, "303 writes took {txns} txns");
}

#[tokio::test]
async fn concurrent_creates_of_one_name_give_exactly_one_201() {
    let (_etcd, config, master) = etcd_and_leader().await;
    let _worker = start_worker(config.clone(), 1, 1000).await;
    let attempts: Vec<_> = (0..32)
        .map(|_| {
            let url = master.url.clone();
            tokio::spawn(async move { create(&url, "contested").await.map(|(s, _)| s) })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.expect("task").expect("response"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        31,
        "{statuses:?}"
    );
    // Distinct names in parallel all succeed with distinct IDs.
    let attempts: Vec<_> = (0..64)
        .map(|i| {
            let url = master.url.clone();
            tokio::spawn(async move { create(&url, &format!("n{i}")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for a in attempts {
        let (status, body) = a.await.expect("task").expect("response");
        assert_eq!(status, 201);
        assert!(ids.insert(body["id"].as_str().expect("id").to_owned()));
    }
    // Reads through the same master see every write at once (read-your-writes).
    let (_, _, list) = get_json(&format!("{}/api/v1/resources", master.url))
        .await
        .expect("list");
    assert_eq!(list["items"].as_array().expect("items").len(), 65);
    master.stop().await;
}

#[tokio::test]
async fn reads_pagination_filters_and_deletes() {
    let (etcd, config, master) = etcd_and_leader().await;
    let _w1 = start_worker(config.clone(), 1, 3).await;
    wait_workers(&master.url, 1).await;
    for i in 0..5 {
        assert_eq!(
            create(&master.url, &format!("r{i}")).await.expect("c").0,
            201
        );
    }
    // Pages of 2 cover all five, in name order.
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(t) => format!("{}/api/v1/resources?limit=2&continue={t}", master.url),
            None => format!("{}/api/v1/resources?limit=2", master.url),
        };
        let (status, _, page) = get_json(&url).await.expect("page");
        assert_eq!(status, 200);
        for item in page["items"].as_array().expect("items") {
            names.push(item["name"].as_str().expect("name").to_owned());
        }
        match page["continue"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);
    // Capacity 3: two stay unassigned; the worker filter shows the three.
    let (_, _, mine) = get_json(&format!(
        "{}/api/v1/resources?worker=go.micro.server.worker-1",
        master.url
    ))
    .await
    .expect("filtered");
    assert_eq!(mine["items"].as_array().expect("items").len(), 3);
    for bad in ["limit=0", "limit=abc", "limit=100000", "continue=a%2Fb"] {
        let (status, _, body) = get_json(&format!("{}/api/v1/resources?{bad}", master.url))
            .await
            .expect("bad query");
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // Delete: 204, then 404; an unassigned resource takes the freed room.
    let resp = http()
        .delete(format!("{}/api/v1/resources/r0", master.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let resp = http()
        .delete(format!("{}/api/v1/resources/r0", master.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 404);
    eventually("the freed room is used", WAIT, || async {
        let counts = assigned_counts(&stored_resources(&etcd).await);
        (counts.get("go.micro.server.worker-1") == Some(&3)).then_some(())
    })
    .await;
    let (status, _, _) = get_json(&format!("{}/api/v1/resources/r0", master.url))
        .await
        .expect("get");
    assert_eq!(status, 404);
    let (status, _, body) = get_json(&format!("{}/api/v1/resources/..", master.url))
        .await
        .expect("get");
    assert!(status == 422 || status == 404, "{status} {body}");
    master.stop().await;
}

#[tokio::test]
async fn a_prefix_larger_than_one_grpc_message_is_listed_in_pages() {
    use etcd_client::{Txn, TxnOp};
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    // About 6 MB of resources: more than etcd-client accepts in one response (4 MiB).
    let padding = "p".repeat(200);
    let client = etcd.client().await;
    let count = 25_000;
    let mut batches = tokio::task::JoinSet::new();
    for chunk in 0..(count / 125) {
        let mut client = client.clone();
        let padding = padding.clone();
        batches.spawn(async move {
            let ops: Vec<TxnOp> = (chunk * 125..(chunk + 1) * 125)
                .map(|i| {
                    let name = format!("big-{i:05}");
                    let value = serde_json::json!({"ID": format!("{}", 1000 + i), "Name": name,
                        "AssignedNode": "", "CreationTime": 1, "Note": padding});
                    TxnOp::put(format!("/resources/{name}"), value.to_string(), None)
                })
                .collect();
            client.txn(Txn::new().and_then(ops)).await.expect("txn");
        });
        if batches.len() >= 8 {
            batches.join_next().await;
        }
    }
    while batches.join_next().await.is_some() {}
    let started = Instant::now();
    let master = start_master(config.clone(), 1).await;
    ready_leader(&[&master.url], WAIT).await;
    println!(
        "measured: {count} resources (~6 MB) listed and taken over in {:?}",
        started.elapsed()
    );
    let (status, _, page) = get_json(&format!("{}/api/v1/resources?limit=10000", master.url))
        .await
        .expect("list");
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().expect("items").len(), 10_000);
    // The extra field is kept when the leader rewrites a resource. The worker is a Go worker's
    // registration (a go-micro record on a lease): it runs nothing, so what is timed is the
    // leader's 25,000 rewrites, not a worker starting (and failing) 25,000 tasks in this
    // process.
    let mut raw = etcd.client().await;
    let lease = raw.lease_grant(60, None).await.expect("lease").id();
    let record = serde_json::json!({"name": "go.micro.server.worker",
        "nodes": [{"id": "go.micro.server.worker-go", "address": "127.0.0.1:9"}]});
    raw.put(
        "/micro/registry/go.micro.server.worker/go.micro.server.worker-go",
        record.to_string(),
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("register");
    let joined = Instant::now();
    // Polled through the master's counts (reading 6 MB from etcd every 20 ms would load etcd
    // more than the assignment itself does), then checked in etcd once.
    eventually("pending resources are assigned", WAIT, || async {
        let (_, _, sum) = get_json(&format!("{}/api/v1/summary", master.url)).await?;
        (sum["resources"] == count && sum["unassigned"] == 0).then_some(())
    })
    .await;
    println!(
        "measured: {count} pending resources (~6 MB) assigned {:?} after a worker joined",
        joined.elapsed()
    );
    let assigned = eventually("etcd holds every assignment", WAIT, || async {
        let stored = stored_resources(&etcd).await;
        (stored.iter().all(|r| !r.assigned_node.is_empty()) && stored.len() == count)
            .then_some(stored)
    })
    .await;
    assigned.iter().for_each(|r| {
        assert_eq!(
            r.extra.get("Note").and_then(|v| v.as_str()),
            Some(padding.as_str())
        )
    });
    master.stop().await;
}

#[tokio::test]
async fn a_candidate_whose_campaign_key_was_deleted_campaigns_again() {
    let (etcd, config, m1) = etcd_and_leader().await;
    let m2 = start_master(config.clone(), 2).await;
    wait_leader_known(&m2.url, &m1.url).await;
    // Both campaign keys exist; delete the waiting candidate's key (not its lease) behind its
    // back. Its Campaign call would otherwise wait on a key that no longer exists.
    let mut client = etcd.client().await;
    let keys = eventually("two campaign keys", WAIT, || {
        let mut client = client.clone();
        async move {
            let resp = client
                .get(
                    "/crawler/election/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .ok()?;
            let mut kvs: Vec<(i64, String)> = resp
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.create_revision(),
                        String::from_utf8_lossy(kv.key()).into_owned(),
                    )
                })
                .collect();
            kvs.sort();
            (kvs.len() == 2).then_some(kvs)
        }
    })
    .await;
    client
        .delete(keys[1].1.as_str(), None)
        .await
        .expect("delete");
    eventually("the candidate puts a new campaign key", WAIT, || {
        let mut client = client.clone();
        let old = keys[1].1.clone();
        async move {
            let resp = client
                .get(
                    "/crawler/election/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .ok()?;
            (resp.kvs().len() == 2 && resp.kvs().iter().all(|kv| kv.key() != old.as_bytes()))
                .then_some(())
        }
    })
    .await;
    // When the leader stops, the candidate takes over: its campaign is alive again.
    let stopping = Instant::now();
    m1.stop().await;
    let took = first_accepted_write(&m2.url, stopping).await;
    println!(
        "measured: after its campaign key was deleted, the candidate took over {took:?} after the leader stopped"
    );
    m2.stop().await;
}

/// The masters compact etcd's history about once per interval between them, keeping one
/// interval of it; the caches follow the writes made after it without listing again; and when
/// a master stops, the other keeps compacting.
#[tokio::test]
async fn the_masters_compact_etcds_history_between_them_and_the_caches_keep_following() {
    let etcd = Etcd::start().await;
    let mut config = test_config(std::slice::from_ref(&etcd.url));
    config.master.compaction_interval_secs = 1;
    let started = Instant::now();
    let ([m2, m3], leader, follower) = leader_and_follower(&config).await;
    for i in 0..5 {
        let (status, _) = create(&leader, &format!("before-{i}"))
            .await
            .expect("create");
        assert_eq!(status, 201);
    }
    let (written, _) = etcd.range_at("/", 0).await;
    let masters = [leader.clone(), follower.clone()];
    let compacted_revision = || async {
        let mut highest = 0.0f64;
        for m in &masters {
            highest = highest.max(metric(m, "crawler_etcd_compacted_revision").await);
        }
        highest as i64
    };
    let compacted = eventually("the history compacted past the creates", WAIT, || async {
        let revision = compacted_revision().await;
        (revision >= written).then_some(revision)
    })
    .await;
    let mut client = etcd.client().await;
    let old = client
        .get(
            "/",
            Some(etcd_client::GetOptions::new().with_revision(compacted - 1)),
        )
        .await;
    let refused = old.expect_err("a read below the compacted revision is refused");
    assert!(refused.to_string().contains("compacted"), "{refused}");
    // One round per interval between both masters, not one each: at most one compaction per
    // second since they started, and one more for a round each at the edges.
    let mut compactions = 0.0;
    for m in &masters {
        compactions += metric(m, "crawler_etcd_compactions_total").await;
    }
    let bound = started.elapsed().as_secs_f64() + 2.0;
    assert!(
        compactions <= bound,
        "{compactions} compactions in {:?}: more than one per interval",
        started.elapsed()
    );
    let (status, _) = create(&follower, "after").await.expect("create");
    assert_eq!(status, 201);
    eventually(
        "the follower's cache to hold the later create",
        WAIT,
        || async {
            let (status, _, _) = get_json(&format!("{follower}/api/v1/resources/after")).await?;
            (status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(&follower, "crawler_cache_lists_total").await,
        5.0,
        "no cache listed again: the watches kept up across the compactions"
    );
    // The leader stops; the other master keeps compacting, past what the leader compacted.
    let (stopping, survivor) = if m2.url == leader { (m2, m3) } else { (m3, m2) };
    stopping.stop().await;
    let (now, _) = etcd.range_at("/", 0).await;
    eventually(
        "the survivor to compact past the leader's stop",
        WAIT,
        || async {
            let revision = metric(&survivor.url, "crawler_etcd_compacted_revision").await as i64;
            (revision >= now).then_some(())
        },
    )
    .await;
}
