//! Operating a fleet, against real etcd, in-process masters and worker processes: the storm
//! guard, the grace period, the reassignment rate, drains, rebalancing, leader changes in the
//! middle of a drain and of a freeze, and bad operator input.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use crawler::config::Config;
use crawler::model::resource::Resource;
use etcd_client::{EventType, GetOptions, WatchOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn worker_id(n: u32) -> String {
    format!("go.micro.server.worker-{n}")
}

/// A master config with the scheduling policy on (the defaults tests/support turns off), at
/// test timings.
fn policy(
    endpoints: &[String],
    tweak: impl FnOnce(&mut crawler::config::SchedulingConfig),
) -> Config {
    let mut config = test_config(endpoints);
    config.scheduling = crawler::config::SchedulingConfig {
        reassign_after: Duration::from_secs(3),
        storm_fraction: 0.5,
        storm_window: Duration::from_secs(30),
        storm_min_workers: 2,
        reassign_rate: 1_000.0,
        rebalance_threshold: 0.25,
        rebalance_max_moves: 0,
        rebalance_interval: Duration::from_secs(1),
        min_runtime: Duration::ZERO,
        ..Default::default()
    };
    tweak(&mut config.scheduling);
    config
}

fn worker_config(dir: &Path) -> std::path::PathBuf {
    fault_config(dir)
}

/// Every resource: name → (worker, id, mod revision).
async fn assignments(etcd: &Etcd) -> BTreeMap<String, (String, String, i64)> {
    let mut client = etcd.client().await;
    let resp = client
        .get("/resources/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("range");
    resp.kvs()
        .iter()
        .filter_map(|kv| {
            let r: Resource = serde_json::from_slice(kv.value()).ok()?;
            let worker = r.assigned_worker().unwrap_or("").to_owned();
            Some((
                r.name.to_string(),
                (worker, r.id.to_string(), kv.mod_revision()),
            ))
        })
        .collect()
}

fn held_by(all: &BTreeMap<String, (String, String, i64)>, worker: &str) -> usize {
    all.values().filter(|(w, _, _)| w == worker).count()
}

async fn create_many(master: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let (status, body) = create(master, &format!("{prefix}-{i:03}"))
            .await
            .expect("create");
        assert_eq!(status, 201, "{body}");
    }
}

/// Waits until etcd no longer holds worker `n`'s registration; returns when that was seen.
async fn registration_gone(etcd: &Etcd, n: u32) -> Instant {
    let key = format!("/micro/registry/go.micro.server.worker/{}", worker_id(n));
    let client = etcd.client().await;
    eventually("the registration expires", WAIT, || {
        let key = key.clone();
        let mut client = client.clone();
        async move {
            let resp = client.get(key, None).await.ok()?;
            resp.kvs().is_empty().then(Instant::now)
        }
    })
    .await
}

async fn scheduling(master: &str) -> Value {
    cluster(master).await.expect("cluster")["scheduling"].clone()
}

async fn post(url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http().post(url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The history entries of every resource, as (name, reason, at ms, from, to).
async fn histories(
    master: &str,
    names: impl Iterator<Item = &String>,
) -> Vec<(String, String, i64, String, String)> {
    let mut out = Vec::new();
    let mut took = Vec::new();
    for name in names {
        let started = Instant::now();
        let (status, _, body) = get_json(&format!("{master}/api/v1/resources/{name}/history"))
            .await
            .expect("history");
        took.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
        for item in body["items"].as_array().expect("items") {
            let at = humantime::parse_rfc3339(item["at"].as_str().expect("at")).expect("time");
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .expect("epoch")
                .as_millis() as i64;
            out.push((
                name.clone(),
                item["reason"].as_str().unwrap_or("").to_owned(),
                ms,
                item["from"].as_str().unwrap_or("").to_owned(),
                item["to"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    took.sort();
    if let (Some(p50), Some(max)) = (took.get(took.len() / 2), took.last()) {
        let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
        println!(
            "measured: {} history reads (debug build, real etcd): p50 {p50:?}, p99 {p99:?}, max {max:?}",
            took.len()
        );
    }
    out
}

/// Most entries within any window of `window_ms` (entries sorted by time).
fn most_within(times: &mut [i64], window_ms: i64) -> usize {
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window_ms {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test]
async fn a_storm_freezes_returning_workers_keep_their_tasks_and_a_single_loss_moves_at_the_rate() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let rate = 5.0;
    // A grace long enough that the second returning worker registers within it of the first
    // (whose return thaws the freeze and restarts the grace) on a loaded machine.
    let grace_ms = 5_000;
    let master = start_master(
        policy(&endpoints, |s| {
            s.reassign_rate = rate;
            s.reassign_after = Duration::from_millis(grace_ms as u64);
        }),
        1,
    )
    .await;
    ready_leader(&[&master.url], WAIT).await;
    let mut workers: Vec<Proc> = (1..=3)
        .map(|n| support::worker_process(n, &endpoints, &wconfig))
        .collect();
    wait_workers(&master.url, 3).await;
    create_many(&master.url, "storm", 60).await;
    let before = assignments(&etcd).await;
    // Evenly, but for the first creates, which may come before the leader has seen every
    // worker join.
    for n in 1..=3 {
        assert!(
            held_by(&before, &worker_id(n)) >= 15,
            "spread evenly: {before:?}"
        );
    }
    let n3 = held_by(&before, &worker_id(3));

    // Two of three workers vanish at once.
    workers[0].kill();
    workers[1].kill();
    let gone = registration_gone(&etcd, 1)
        .await
        .max(registration_gone(&etcd, 2).await);
    let frozen = eventually("the guard freezes", WAIT, || async {
        let s = scheduling(&master.url).await;
        (s["frozen"] == true).then(|| (Instant::now(), s))
    })
    .await;
    println!(
        "measured: freeze decision {:?} after the second registration expired; {}",
        frozen.0.saturating_duration_since(gone),
        frozen.1["reason"]
    );
    assert!(
        frozen.1["reason"]
            .as_str()
            .unwrap_or("")
            .contains("2 of 3 workers left")
    );
    // Past the grace period, nothing moves while frozen.
    tokio::time::sleep(Duration::from_millis(grace_ms as u64 + 2_000)).await;
    assert_eq!(
        assignments(&etcd).await,
        before,
        "nothing moved during the freeze"
    );
    let metrics = metrics_text(&master.url).await;
    assert!(
        metrics.contains("crawler_reassignment_frozen 1"),
        "the metric shows it"
    );

    // They come back with the same node ids: they keep their tasks, IDs and epochs, and the
    // freeze ends by itself.
    workers[0] = support::worker_process(1, &endpoints, &wconfig);
    workers[1] = support::worker_process(2, &endpoints, &wconfig);
    wait_workers(&master.url, 3).await;
    eventually("the freeze thaws", WAIT, || async {
        let s = scheduling(&master.url).await;
        (s["frozen"] == false && s["thawed_by"] == "workers-returned").then_some(())
    })
    .await;
    assert_eq!(
        assignments(&etcd).await,
        before,
        "the returning workers kept everything"
    );

    // One of three leaving is no storm: after the grace its tasks move, at the rate.
    workers[2].kill();
    let left = registration_gone(&etcd, 3).await;
    let left_ms = crawler::model::status::now_ms();
    eventually("worker 3's tasks move", WAIT, || async {
        (held_by(&assignments(&etcd).await, &worker_id(3)) == 0).then_some(())
    })
    .await;
    println!(
        "measured: worker 3's {n3} tasks moved within {:?} of its registration expiring (grace {grace_ms} ms)",
        left.elapsed()
    );
    assert_eq!(
        scheduling(&master.url).await["frozen"],
        false,
        "no freeze for one worker"
    );
    let moved: Vec<String> = before
        .iter()
        .filter(|(_, (w, _, _))| *w == worker_id(3))
        .map(|(n, _)| n.clone())
        .collect();
    let entries = histories(&master.url, moved.iter()).await;
    let mut times: Vec<i64> = entries
        .iter()
        .filter(|e| e.1 == "worker-left")
        .map(|e| e.2)
        .collect();
    assert_eq!(times.len(), n3, "{entries:?}");
    assert!(
        entries
            .iter()
            .filter(|e| e.1 == "worker-left")
            .all(|e| e.3 == worker_id(3) && e.4 != worker_id(3))
    );
    let first = *times.iter().min().unwrap_or(&0);
    let last = *times.iter().max().unwrap_or(&0);
    assert!(
        first - left_ms >= grace_ms - 500,
        "nothing moved before the grace: {} ms",
        first - left_ms
    );
    // 5 a second, from a bucket holding one second's worth: n3 moves take at least
    // (n3 - 5) / 5 s, and no second holds more than 5 + 5.
    let busiest = most_within(&mut times, 1_000);
    println!(
        "measured: {n3} moves at {rate}/s spread over {} ms, busiest second {busiest}",
        last - first
    );
    let least = ((n3 as f64 - rate) / rate * 1_000.0) as i64 - 500;
    assert!(
        last - first >= least,
        "moves were rate-limited: {} ms (at least {least})",
        last - first
    );
    assert!(busiest <= 11, "busiest second: {busiest}");
    master.stop().await;
}

#[tokio::test]
async fn a_worker_restarting_within_the_grace_keeps_its_tasks_ids_and_epochs() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let master = start_master(
        policy(&endpoints, |s| s.reassign_after = Duration::from_secs(30)),
        1,
    )
    .await;
    ready_leader(&[&master.url], WAIT).await;
    let mut w1 = support::worker_process(1, &endpoints, &wconfig);
    let _w2 = support::worker_process(2, &endpoints, &wconfig);
    wait_workers(&master.url, 2).await;
    create_many(&master.url, "keep", 10).await;
    let before = assignments(&etcd).await;
    let mine = held_by(&before, &worker_id(1));
    assert!(mine > 0);
    w1.kill();
    registration_gone(&etcd, 1).await;
    eventually("the master shows it departed", WAIT, || async {
        let s = scheduling(&master.url).await;
        (s["departed"][0]["id"] == worker_id(1) && s["departed"][0]["tasks"] == mine).then_some(())
    })
    .await;
    let _w1 = support::worker_process(1, &endpoints, &wconfig);
    wait_workers(&master.url, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        assignments(&etcd).await,
        before,
        "same workers, IDs and epochs"
    );
    // It picks its tasks up again: it reports on each at the same epoch.
    let client = etcd.client().await;
    eventually("it reports its tasks again", WAIT, || {
        let mut client = client.clone();
        let before = &before;
        async move {
            let resp = client
                .get("/crawler/status/", Some(GetOptions::new().with_prefix()))
                .await
                .ok()?;
            let mut reported = 0;
            for kv in resp.kvs() {
                let s: Value = serde_json::from_slice(kv.value()).ok()?;
                let name = String::from_utf8_lossy(kv.key())
                    .trim_start_matches("/crawler/status/")
                    .to_owned();
                let (worker, _, epoch) = before.get(&name)?;
                if *worker == worker_id(1) && s["worker"] == worker_id(1) && s["epoch"] == *epoch {
                    reported += 1;
                }
            }
            (reported == mine).then_some(())
        }
    })
    .await;
    assert_eq!(scheduling(&master.url).await["departed"], json!([]));
    master.stop().await;
}

/// Replays every change to `/resources/` from `from` up to `to`, starting from the state at
/// `from - 1`, and checks at each revision that every resource is assigned to exactly one
/// worker, never to `drained`, and that each moves at most once, from `drained`.
async fn replay_drain(etcd: &Etcd, drained: &str, from: i64, to: i64) -> usize {
    let mut client = etcd.client().await;
    let start = client
        .get(
            "/resources/",
            Some(GetOptions::new().with_prefix().with_revision(from - 1)),
        )
        .await
        .expect("range");
    let mut state: HashMap<String, String> = start
        .kvs()
        .iter()
        .filter_map(|kv| {
            let r: Resource = serde_json::from_slice(kv.value()).ok()?;
            Some((r.name.to_string(), r.assigned_worker()?.to_owned()))
        })
        .collect();
    let mut stream = client
        .watch(
            "/resources/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from)
                    .with_prev_key(),
            ),
        )
        .await
        .expect("watch");
    let mut moves: HashMap<String, usize> = HashMap::new();
    let mut revisions = 0;
    let mut last = from - 1;
    while last < to {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch answers")
            .expect("watch")
            .expect("open");
        for event in resp.events() {
            let kv = event.kv().expect("kv");
            if kv.mod_revision() > last {
                revisions += 1;
                last = kv.mod_revision();
            }
            assert_eq!(event.event_type(), EventType::Put, "nothing is deleted");
            let r: Resource = serde_json::from_slice(kv.value()).expect("resource");
            let worker = r.assigned_worker().expect("always assigned").to_owned();
            assert_ne!(
                worker, drained,
                "{} assigned to the drained worker at {last}",
                r.name
            );
            let before = state.insert(r.name.to_string(), worker.clone());
            if let Some(before) = before
                && before != worker
            {
                assert_eq!(
                    before, drained,
                    "{} moved between two other workers",
                    r.name
                );
                *moves.entry(r.name.to_string()).or_default() += 1;
            }
        }
    }
    assert!(moves.values().all(|n| *n == 1), "each resource moved once");
    revisions
}

#[tokio::test]
async fn a_drain_moves_300_tasks_within_the_deadline_and_the_worker_takes_nothing_new() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let master = start_master(policy(&endpoints, |s| s.reassign_rate = 100.0), 1).await;
    ready_leader(&[&master.url], WAIT).await;
    let _w1 = support::worker_process(1, &endpoints, &wconfig);
    wait_workers(&master.url, 1).await;
    create_many(&master.url, "drain", 300).await;
    let _w2 = support::worker_process(2, &endpoints, &wconfig);
    let _w3 = support::worker_process(3, &endpoints, &wconfig);
    wait_workers(&master.url, 3).await;
    let (from, _) = etcd.range_at("/resources/", 0).await;

    let started = Instant::now();
    let (status, body) = post(
        &format!("{}/api/v1/workers/{}/drain", master.url, worker_id(1)),
        Some(json!({"deadline": "20s"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "draining");
    // New tasks while it drains go elsewhere.
    for i in 0..20 {
        let (status, body) = create(&master.url, &format!("during-{i}"))
            .await
            .expect("create");
        assert_eq!(status, 201);
        assert_ne!(body["assigned_node"]["id"], worker_id(1).as_str());
    }
    eventually("the drain empties the worker", WAIT, || async {
        (held_by(&assignments(&etcd).await, &worker_id(1)) == 0).then_some(())
    })
    .await;
    let took = started.elapsed();
    println!(
        "measured: drain of 300 tasks at 100/s took {took:?} ({:.0} tasks/s)",
        300.0 / took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(20), "within the deadline");
    let (_, now) = etcd.range_at("/resources/", 0).await;
    let to = now.iter().map(|(_, rev)| *rev).max().unwrap_or(0);
    let revisions = replay_drain(&etcd, &worker_id(1), from + 1, to).await;
    println!("measured: {revisions} revisions replayed, no resource ever on two workers");
    eventually("it shows as drained", WAIT, || async {
        let (_, _, body) =
            get_json(&format!("{}/api/v1/workers/{}", master.url, worker_id(1))).await?;
        (body["state"] == "drained" && body["drain"]["done"] == true).then_some(())
    })
    .await;
    let all = assignments(&etcd).await;
    let entries = histories(&master.url, all.keys().filter(|n| n.starts_with("drain-"))).await;
    assert_eq!(entries.iter().filter(|e| e.1 == "drained").count(), 300);
    // The moves name who asked for the drain (no token is configured: `anonymous`).
    let moved = &entries.iter().find(|e| e.1 == "drained").expect("a move").0;
    let (_, _, history) = get_json(&format!("{}/api/v1/resources/{moved}/history", master.url))
        .await
        .expect("history");
    let drained = history["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["reason"] == "drained"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(drained["actor"], "anonymous", "{history}");
    master.stop().await;
}

#[tokio::test]
async fn three_workers_joining_one_after_another_converge_within_the_churn_limit() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let limit = 25;
    let master = start_master(
        policy(&endpoints, |s| {
            s.rebalance_max_moves = limit;
            s.rebalance_interval = Duration::from_millis(500);
        }),
        1,
    )
    .await;
    ready_leader(&[&master.url], WAIT).await;
    let mut workers = vec![support::worker_process(1, &endpoints, &wconfig)];
    wait_workers(&master.url, 1).await;
    create_many(&master.url, "spread", 300).await;
    for n in 2..=4 {
        workers.push(support::worker_process(n, &endpoints, &wconfig));
        wait_workers(&master.url, n as usize).await;
        let joined = Instant::now();
        eventually(
            "the spread converges to at most 1",
            Duration::from_secs(60),
            || async {
                let all = assignments(&etcd).await;
                let loads: Vec<usize> = (1..=n).map(|w| held_by(&all, &worker_id(w))).collect();
                let spread = loads.iter().max()? - loads.iter().min()?;
                (spread <= 1).then_some(())
            },
        )
        .await;
        println!(
            "measured: worker {n} joined; spread <= 1 after {:?}",
            joined.elapsed()
        );
    }
    let all = assignments(&etcd).await;
    let entries = histories(&master.url, all.keys()).await;
    let mut times: Vec<i64> = entries
        .iter()
        .filter(|e| e.1 == "rebalanced")
        .map(|e| e.2)
        .collect();
    // 300 over two, three, then four: 150 moves, then 50 + 50, then 25 + 25 + 25.
    assert_eq!(times.len(), 325, "no task moved needlessly");
    let busiest = most_within(&mut times, 450);
    println!(
        "measured: {} rebalancing moves, at most {busiest} within one interval",
        times.len()
    );
    assert!(busiest <= limit, "an interval moved {busiest} > {limit}");
    master.stop().await;
}

#[tokio::test]
async fn a_new_leader_continues_a_drain_and_keeps_a_storm_frozen() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let config = policy(&endpoints, |s| s.reassign_rate = 20.0);
    let ([m2, m3], leader, follower) = leader_and_follower(&config).await;
    let mut workers = vec![support::worker_process(1, &endpoints, &wconfig)];
    wait_workers(&leader, 1).await;
    create_many(&leader, "ha", 100).await;
    workers.push(support::worker_process(2, &endpoints, &wconfig));
    workers.push(support::worker_process(3, &endpoints, &wconfig));
    wait_workers(&leader, 3).await;

    // A drain at 20/s, through the follower; the leader dies a second into it.
    let (status, body) = post(
        &format!("{follower}/api/v1/workers/{}/drain", worker_id(1)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let left = held_by(&assignments(&etcd).await, &worker_id(1));
    assert!(left > 0 && left < 100, "mid-drain: {left} left");
    let (old, new) = if m2.url == leader { (m2, m3) } else { (m3, m2) };
    old.crash();
    ready_leader(&[&new.url], WAIT).await;
    eventually("the new leader finishes the drain", WAIT, || async {
        (held_by(&assignments(&etcd).await, &worker_id(1)) == 0).then_some(())
    })
    .await;
    let (_, _, w1) = get_json(&format!("{}/api/v1/workers/{}", new.url, worker_id(1)))
        .await
        .expect("worker");
    assert_eq!(w1["state"], "drained", "{w1}");

    // A storm freezes; a new leader keeps it frozen past the grace period.
    let (status, _) = post(
        &format!("{}/api/v1/workers/{}/uncordon", new.url, worker_id(1)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    workers[0].kill();
    workers[1].kill();
    let frozen = eventually("the guard freezes", WAIT, || async {
        let s = scheduling(&new.url).await;
        (s["frozen"] == true).then_some(s)
    })
    .await;
    let before = assignments(&etcd).await;
    let third = start_master(config.clone(), 4).await;
    wait_ready(&third.url).await;
    new.crash();
    ready_leader(&[&third.url], WAIT).await;
    let s = scheduling(&third.url).await;
    assert_eq!(s["frozen"], true);
    assert_eq!(s["since"], frozen["since"], "the same freeze");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        assignments(&etcd).await,
        before,
        "nothing moved under the new leader"
    );
    // An operator thaws it: the departed workers' tasks move to the survivor.
    let (status, body) = post(&format!("{}/api/v1/cluster/thaw", third.url), None).await;
    assert_eq!(
        (status, &body["frozen"], &body["thawed_by"]),
        (200, &json!(false), &json!("operator"))
    );
    eventually("the tasks move to the survivor", WAIT, || async {
        let all = assignments(&etcd).await;
        (held_by(&all, &worker_id(3)) == all.len()).then_some(())
    })
    .await;
    third.stop().await;
}

#[tokio::test]
async fn bad_operator_input_gets_a_clear_4xx_and_leaves_no_key() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let config = policy(&endpoints, |_| {});
    let ([_m2, _m3], leader, follower) = leader_and_follower(&config).await;
    let _w1 = support::worker_process(1, &endpoints, &wconfig);
    wait_workers(&leader, 1).await;
    wait_workers(&follower, 1).await;
    let snapshot = || async {
        let all = etcd.keys_but_audit("/").await;
        let names: Vec<String> = all.iter().map(|(k, _)| k.clone()).collect();
        let (_, schedule) = etcd.range_at("/crawler/schedule/", 0).await;
        let (_, resources) = etcd.range_at("/resources/", 0).await;
        (names, schedule, resources)
    };
    let keys_before = snapshot().await;
    for master in [&leader, &follower] {
        for op in ["cordon", "uncordon", "drain"] {
            let (status, body) = post(
                &format!("{master}/api/v1/workers/no-such-worker/{op}"),
                None,
            )
            .await;
            assert_eq!(status, 404, "{op}: {body}");
            assert_eq!(body["status"], 404);
        }
        let drain = format!("{master}/api/v1/workers/{}/drain", worker_id(1));
        for deadline in [
            json!("-5s"),
            json!(-5),
            json!("soon"),
            json!("5 minutes"),
            json!(1.5),
            json!(true),
        ] {
            let (status, body) = post(&drain, Some(json!({ "deadline": deadline }))).await;
            assert_eq!(status, 400, "{deadline}: {body}");
            assert_eq!(body["field"], "deadline", "{body}");
        }
        // A body of whitespace is not an empty one, and not JSON (schemathesis found `\n\x0c`,
        // then `\t`, drained the worker).
        for raw in [&b"\n\x0c"[..], b"\x0c", b"\t", b" \r\n"] {
            let resp = http()
                .post(&drain)
                .header("content-type", "application/json")
                .body(raw.to_vec())
                .send()
                .await
                .expect("post");
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "{raw:?} gave {status}");
        }
        let (status, body) = post(
            &format!("{master}/api/v1/placement/preview"),
            Some(json!({"drain": ["no-such-worker"]})),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["type"], "urn:crawler:problem:unknown-worker", "{body}");
        assert_eq!(body["field"], "drain");
        let (status, body) = post(
            &format!("{master}/api/v1/placement/preview"),
            Some(json!({"remove": [""]})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], "remove");
        let (status, body) = post(
            &format!("{master}/api/v1/placement/preview"),
            Some(json!({"remove": [worker_id(1)], "drain": []})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = get_json(&format!("{master}/api/v1/resources/nothing/history"))
            .await
            .expect("history");
        assert_eq!(status, 404, "{body}");
    }
    assert_eq!(
        keys_before,
        snapshot().await,
        "no key appeared, and none changed"
    );
}

#[tokio::test]
async fn history_keeps_every_reason_across_a_leader_change_and_a_preview_moves_nothing() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let wconfig = worker_config(dir.path());
    let config = policy(&endpoints, |_| {});
    let ([m2, m3], leader, follower) = leader_and_follower(&config).await;
    let _w1 = support::worker_process(1, &endpoints, &wconfig);
    wait_workers(&leader, 1).await;
    create_many(&leader, "hist", 6).await;
    let _w2 = support::worker_process(2, &endpoints, &wconfig);
    wait_workers(&leader, 2).await;
    wait_workers(&follower, 2).await;

    // Pinned through the follower, then restarted 25 times: the last 20 are kept.
    let read = |master: String| async move {
        let (status, _, body) = get_json(&format!("{master}/api/v1/resources/hist-000/history"))
            .await
            .expect("history");
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().expect("items").clone()
    };
    let resp = http()
        .patch(format!("{follower}/api/v1/resources/hist-000"))
        .json(&json!({"assigned_node": worker_id(2)}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let pinned = read(leader.clone()).await;
    let last = pinned.last().expect("an entry");
    assert_eq!(
        (&last["reason"], &last["from"], &last["to"]),
        (&json!("pinned"), &json!(worker_id(1)), &json!(worker_id(2)))
    );
    assert_eq!(pinned[0]["reason"], "created");
    for _ in 0..25 {
        let (status, body) = post(
            &format!("{follower}/api/v1/resources/hist-000/restart"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let items = read(leader.clone()).await;
    assert_eq!(items.len(), 20);
    assert!(
        items
            .iter()
            .all(|i| i["reason"] == "restarted" && i["to"] == worker_id(2).as_str())
    );
    let first = read(follower.clone()).await;
    assert_eq!(first, items, "any master reads the same");
    let mut client = etcd.client().await;
    let hist = client
        .get("/crawler/history/hist-001", None)
        .await
        .expect("get");
    // One document holds the assignments and the runs they started.
    let stored: Value = serde_json::from_slice(hist.kvs()[0].value()).expect("json");
    assert_eq!(stored["assignments"][0]["reason"], "created");
    assert_eq!(stored["assignments"][0]["to"], worker_id(1).as_str());
    assert_eq!(stored["runs"][0]["reason"], "created");
    let pinned = client
        .get("/crawler/history/hist-000", None)
        .await
        .expect("get");
    assert!(!pinned.kvs().is_empty());

    // A preview plans the drain of worker 1 onto worker 2 and moves nothing.
    let before = assignments(&etcd).await;
    let on_1 = held_by(&before, &worker_id(1));
    let (status, plan) = post(
        &format!("{follower}/api/v1/placement/preview"),
        Some(json!({"drain": [worker_id(1)]})),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["total"], on_1);
    assert_eq!(plan["to"][worker_id(2)], on_1);
    assert!(
        plan["moves"]
            .as_array()
            .expect("moves")
            .iter()
            .all(|m| m["reason"] == "drained" && m["from"] == worker_id(1).as_str())
    );
    assert_eq!(assignments(&etcd).await, before, "a preview moves nothing");

    // The history survives the leader's death.
    let (old, new) = if m2.url == leader { (m2, m3) } else { (m3, m2) };
    old.crash();
    ready_leader(&[&new.url], WAIT).await;
    assert_eq!(read(new.url.clone()).await, items);
    // Deleted with its resource.
    let resp = http()
        .delete(format!("{}/api/v1/resources/hist-000", new.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let (status, _, _) = get_json(&format!("{}/api/v1/resources/hist-000/history", new.url))
        .await
        .expect("history");
    assert_eq!(status, 404);
    new.stop().await;
}
