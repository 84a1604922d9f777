//! Worker discovery against a real etcd: go-micro records, our worker agent, etcd restarts,
//! compaction while the watch is down, and garbage under the prefix.

use std::time::{Duration, Instant};

use crate::support::*;
use crawler::config::Config;
use crawler::etcd::cache::Store;
use crawler::etcd::cache::watcher::WatchConfig;
use crawler::model::registry::Worker;
use etcd_client::PutOptions;
use tokio_util::sync::CancellationToken;

const GO_RECORD: &str = r#"{"name":"go.micro.server.worker","version":"latest","metadata":null,"endpoints":[],"nodes":[{"id":"go.micro.server.worker-2","address":"192.168.0.107:9089","metadata":{"registry":"etcd","server":"grpc"}}]}"#;
const GO_KEY: &str = "/micro/registry/go.micro.server.worker/go.micro.server.worker-2";
const WAIT: Duration = Duration::from_secs(15);

/// Asserts that the master's worker list equals an etcd range read at the same revision.
async fn assert_workers_match_etcd(etcd: &Etcd, master: &str, config: &Config) {
    let (status, revision, body) = get_json(&format!("{master}/api/v1/workers"))
        .await
        .expect("workers");
    assert_eq!(status, 200);
    let revision = revision.expect("revision header");
    let (_, kvs) = etcd.range_at(&config.keys.worker_prefix, revision).await;
    let mut from_etcd: Vec<String> = kvs
        .iter()
        .filter_map(|(k, _)| {
            k.strip_prefix(&config.keys.worker_prefix)
                .map(str::to_owned)
        })
        .collect();
    from_etcd.sort();
    let from_master: Vec<String> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        from_master, from_etcd,
        "master cache at revision {revision}"
    );
}

/// Waits until `master` lists worker 1.
async fn wait_listed(master: &str, what: &str) {
    eventually(what, WAIT, || async {
        worker_ids(master)
            .await?
            .contains(&"go.micro.server.worker-1".to_owned())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn go_record_is_listed_and_leaves_when_its_lease_is_revoked() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let master = start_master(config, 1).await;
    let mut client = etcd.client().await;
    let lease = client.lease_grant(30, None).await.expect("lease").id();
    client
        .put(GO_KEY, GO_RECORD, Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");

    let worker = eventually("the Go worker is listed", WAIT, || async {
        let (status, _, body) = get_json(&format!(
            "{}/api/v1/workers/go.micro.server.worker-2",
            master.url
        ))
        .await?;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(worker["address"], "192.168.0.107:9089");
    assert_eq!(worker["version"], "latest");
    assert_eq!(worker["metadata"]["server"], "grpc");
    assert_eq!(worker["capacity"], serde_json::Value::Null);

    client.lease_revoke(lease).await.expect("revoke");
    let start = Instant::now();
    eventually("the Go worker is gone", WAIT, || async {
        let (status, _, body) = get_json(&format!(
            "{}/api/v1/workers/go.micro.server.worker-2",
            master.url
        ))
        .await?;
        (status == 404 && body["type"] == "urn:crawler:problem:not-found").then_some(())
    })
    .await;
    println!(
        "measured: revoked Go worker left the API after {:?}",
        start.elapsed()
    );
    master.stop().await;
}

#[tokio::test]
async fn worker_binary_appears_and_is_gone_within_a_second_of_sigterm() {
    use nix::sys::signal::Signal;

    let (etcd, _, master) = etcd_and_leader().await;

    let port = free_port();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "log:\n  level: info\n").expect("config");
    let etcd_urls = std::slice::from_ref(&etcd.url);
    let args = ["--capacity", "5"];
    let mut child = crawler_process(Role::Worker, (7, port), etcd_urls, &file, &[], &args);
    let id = "go.micro.server.worker-7";
    let worker = eventually("the worker process is listed", WAIT, || async {
        let (status, _, body) = get_json(&format!("{}/api/v1/workers/{id}", master.url)).await?;
        (status == 200).then_some(body)
    })
    .await;
    println!(
        "measured: new worker process listed in GET /api/v1/workers {:?} after spawn",
        started.elapsed()
    );
    assert_eq!(worker["address"], format!("127.0.0.1:{port}"));
    assert_eq!(worker["capacity"], 5);
    assert!(worker["metadata"]["version"].is_string());

    let (status, _, tasks) = get_json(&format!("http://127.0.0.1:{port}/tasks"))
        .await
        .expect("tasks");
    assert_eq!(status, 200);
    assert_eq!(tasks["worker"], id);
    let (status, _, _) = get_json(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(status, 200);

    child.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    eventually(
        "the worker is gone after SIGTERM",
        Duration::from_secs(1),
        || async {
            let ids = worker_ids(&master.url).await?;
            (!ids.iter().any(|w| w == id)).then_some(())
        },
    )
    .await;
    println!(
        "measured: worker gone {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(child.wait_success(), "the worker did not exit 0");
    master.stop().await;
}

#[tokio::test]
async fn in_process_registration_latency() {
    let (etcd, _, master) = etcd_and_leader().await;
    let mut client = etcd.client().await;
    let mut samples = Vec::new();
    for i in 0..20 {
        let id = format!("go.micro.server.worker-{}", 100 + i);
        let record = GO_RECORD.replace("go.micro.server.worker-2", &id);
        let key = format!("/micro/registry/go.micro.server.worker/{id}");
        let start = Instant::now();
        client.put(key, record, None).await.expect("put");
        eventually("registration visible", WAIT, || async {
            worker_ids(&master.url).await?.contains(&id).then_some(())
        })
        .await;
        samples.push(start.elapsed());
    }
    samples.sort();
    println!(
        "measured: put-to-visible in GET /api/v1/workers over 20 registrations (20 ms polling): p50 {:?}, max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    master.stop().await;
}

#[tokio::test]
async fn etcd_restart_workers_reregister_and_master_converges() {
    let mut etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let master = start_master(config.clone(), 1).await;
    let worker = start_worker(config.clone(), 1, 10).await;
    wait_listed(&master.url, "worker 1 listed").await;

    etcd.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    etcd.restart().await;
    let restarted = Instant::now();

    // A worker that registers after the restart is seen: the master's watch came back.
    let late = start_worker(config.clone(), 2, 10).await;
    eventually(
        "both workers listed after the restart",
        Duration::from_secs(20),
        || async {
            let ids = worker_ids(&master.url).await?;
            (ids == ["go.micro.server.worker-1", "go.micro.server.worker-2"]).then_some(())
        },
    )
    .await;
    println!(
        "measured: converged {:?} after etcd came back",
        restarted.elapsed()
    );

    // The worker's lease is taken away: it notices and registers again on a new lease.
    let mut client = etcd.client().await;
    let key = config.keys.worker_key("go.micro.server.worker-1");
    let lease = client.get(key.as_str(), None).await.expect("get").kvs()[0].lease();
    client.lease_revoke(lease).await.expect("revoke");
    let revoked = Instant::now();
    eventually(
        "worker 1 re-registered on a new lease",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            let key = key.clone();
            async move {
                let resp = client.get(key.as_str(), None).await.ok()?;
                let kv = resp.kvs().first()?;
                (kv.lease() != lease && kv.lease() != 0).then_some(())
            }
        },
    )
    .await;
    println!(
        "measured: re-registered {:?} after lease revocation",
        revoked.elapsed()
    );
    wait_listed(&master.url, "master lists worker 1 again").await;
    assert_workers_match_etcd(&etcd, &master.url, &config).await;
    worker.stop().await;
    late.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn compaction_while_the_watch_is_down_forces_a_relist() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://"))
        .await
        .expect("proxy");
    let config = test_config(std::slice::from_ref(&proxy.url));
    let master = start_master(config.clone(), 1).await;
    let mut client = etcd.client().await;
    let key = |i: u32| format!("{}go.micro.server.worker-{i}", config.keys.worker_prefix);
    let record = |i: u32| {
        GO_RECORD.replace(
            "go.micro.server.worker-2",
            &format!("go.micro.server.worker-{i}"),
        )
    };
    for i in 1..=3 {
        client.put(key(i), record(i), None).await.expect("put");
    }
    eventually("three workers listed", WAIT, || async {
        (worker_ids(&master.url).await?.len() == 3).then_some(())
    })
    .await;

    proxy.cut();
    // While the master cannot see etcd: one leaves, two join, and history is compacted.
    client.delete(key(1), None).await.expect("delete");
    client.put(key(4), record(4), None).await.expect("put");
    let resp = client.put(key(5), record(5), None).await.expect("put");
    let revision = resp.header().expect("header").revision();
    client.compact(revision, None).await.expect("compact");
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    let restored = Instant::now();
    eventually(
        "the master re-listed and converged",
        Duration::from_secs(20),
        || async {
            let ids = worker_ids(&master.url).await?;
            (ids == [
                "go.micro.server.worker-2",
                "go.micro.server.worker-3",
                "go.micro.server.worker-4",
                "go.micro.server.worker-5",
            ])
            .then_some(())
        },
    )
    .await;
    println!(
        "measured: converged {:?} after the proxy was restored",
        restored.elapsed()
    );
    assert_workers_match_etcd(&etcd, &master.url, &config).await;
    master.stop().await;
}

#[tokio::test]
async fn garbage_values_are_skipped_and_counted() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let mut client = etcd.client().await;
    let prefix = config.keys.worker_prefix.clone();
    client
        .put(format!("{prefix}junk-1"), "not json", None)
        .await
        .expect("put");
    client
        .put(format!("{prefix}go.micro.server.worker-2"), GO_RECORD, None)
        .await
        .expect("put");
    client
        .put(format!("{prefix}deeper/key"), GO_RECORD, None)
        .await
        .expect("put");

    let client = crawler::etcd::connect(&config.etcd).await.expect("connect");
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let store: Store<Worker> =
        crawler::etcd::cache::spawn("workers", &client, &config, &prefix, &cancel, &mut tasks);
    store.wait_ready().await;
    assert_eq!(store.len(), 1);
    assert_eq!(store.stats().malformed, 2);

    // Garbage arriving through the watch is skipped too, and the cache keeps going.
    let mut raw = etcd.client().await;
    raw.put(format!("{prefix}junk-2"), "{\"name\":", None)
        .await
        .expect("put");
    raw.put(
        format!("{prefix}go.micro.server.worker-2"),
        "\u{0}\u{1}",
        None,
    )
    .await
    .expect("put");
    let ok = GO_RECORD.replace("go.micro.server.worker-2", "go.micro.server.worker-9");
    raw.put(format!("{prefix}go.micro.server.worker-9"), ok, None)
        .await
        .expect("put");
    eventually(
        "the valid worker arrives after the garbage",
        WAIT,
        || async { (store.get("go.micro.server.worker-9").is_some()).then_some(()) },
    )
    .await;
    // The record overwritten with garbage is no longer served as if it were valid.
    assert!(store.get("go.micro.server.worker-2").is_none());
    assert_eq!(store.stats().malformed, 4);
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn a_watch_response_carrying_several_revisions_reaches_a_subscriber_as_consistent_batches() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://"))
        .await
        .expect("proxy");
    let config = test_config(std::slice::from_ref(&proxy.url));
    let prefix = config.keys.worker_prefix.clone();
    let client = crawler::etcd::connect(&config.etcd).await.expect("connect");
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let store: Store<Worker> =
        crawler::etcd::cache::spawn("workers", &client, &config, &prefix, &cancel, &mut tasks);
    store.wait_ready().await;
    eventually("the watch is live", WAIT, || async {
        store.is_live().then_some(())
    })
    .await;
    let mut changes = store.subscribe();
    // While the watch is cut, three writes at three revisions; on reconnection etcd sends the
    // backlog, typically in one response.
    proxy.cut();
    let mut raw = etcd.client().await;
    let mut written = Vec::new();
    for i in 1..=3 {
        let id = format!("go.micro.server.worker-{i}");
        let put = raw
            .put(
                format!("{prefix}{id}"),
                GO_RECORD.replace("go.micro.server.worker-2", &id),
                None,
            )
            .await
            .expect("put");
        written.push(put.header().expect("header").revision());
    }
    proxy.restore();
    // However the backlog is split into batches, a batch is the cache at one revision: it
    // holds no change newer than that revision, and each name once, at its latest value.
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(WAIT, changes.recv())
            .await
            .expect("a batch in time")
            .expect("a batch");
        for event in &batch.events {
            let crawler::etcd::cache::Event::Added { name, new } = event else {
                panic!("only additions were made")
            };
            assert!(
                new.mod_revision <= batch.revision,
                "a batch at {} holds a change at {}",
                batch.revision,
                new.mod_revision
            );
            assert!(seen.insert(name.to_string(), new.mod_revision).is_none());
        }
    }
    let mut revisions: Vec<i64> = seen.into_values().collect();
    revisions.sort();
    assert_eq!(revisions, written);
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn a_reader_waiting_on_a_quiet_prefix_is_answered_without_waiting_for_a_periodic_report() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let client = crawler::etcd::connect(&config.etcd).await.expect("connect");
    // Periodic reports 3 s apart, each believed only on the next: a cache relying on them
    // alone reaches a revision written elsewhere 3 to 6 s later.
    let mut watch = WatchConfig::new(config.keys.worker_prefix.clone(), Duration::from_secs(5));
    watch.progress_interval = Duration::from_secs(3);
    watch.dead_after = Duration::from_secs(10);
    let (store, writer) = Store::<Worker>::new("workers");
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(crawler::etcd::cache::watcher::run(
        client.clone(),
        watch.clone(),
        writer,
        cancel.clone(),
    ));
    store.wait_ready().await;
    eventually("the watch is live", WAIT, || async {
        store.is_live().then_some(())
    })
    .await;
    // A young stream may still be catching up from an old revision; past one interval it is
    // not, and a later answer proves an earlier one.
    tokio::time::sleep(watch.progress_interval).await;
    let mut raw = etcd.client().await;
    let mut waits = Vec::new();
    for i in 0..5 {
        let put = raw
            .put(format!("/elsewhere/{i}"), "x", None)
            .await
            .expect("put");
        let written = put.header().expect("header").revision();
        let started = Instant::now();
        assert!(
            store
                .wait_for_revision(written, Duration::from_secs(2))
                .await,
            "trial {i}: the cache did not reach revision {written} (it is at {})",
            store.revision()
        );
        waits.push(started.elapsed());
    }
    println!("waits for a revision written outside the prefix: {waits:?}");
    // A write inside the prefix still arrives as an event, at its own revision.
    let id = "go.micro.server.worker-9";
    let put = raw
        .put(
            format!("{}{id}", config.keys.worker_prefix),
            GO_RECORD.replace("go.micro.server.worker-2", id),
            None,
        )
        .await
        .expect("put");
    let written = put.header().expect("header").revision();
    assert!(
        store
            .wait_for_revision(written, Duration::from_secs(2))
            .await
    );
    assert!(store.get(id).is_some());
    cancel.cancel();
    let _ = watcher.await;
}
