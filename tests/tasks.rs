//! Tasks really run: worker processes execute their assigned tasks as supervised child
//! processes, report their status on their lease, and every master shows it. Real etcd, real
//! worker processes, real child processes (`sh` scripts the worker's config names).

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// A config whose worker runs `sh` scripts chosen by name pattern, with short timings.
fn task_config(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let file = dir.join("config.yaml");
    let yaml = format!(
        r#"etcd:
  request_timeout_ms: 1000
  dial_timeout_ms: 500
master:
  session_ttl_secs: 2
{policy}worker:
  lease_ttl_secs: 3
  lease_margin_ms: 1000
  data_dir: {data}
  stop_grace_ms: 2000
  restart_backoff_ms: 100
  restart_backoff_max_ms: 200
  max_failures: 3
  failure_window_secs: 60
  runners:
    rules:
      - tasks: "ok-*"
        command: [sh, -c, "echo start $CRAWLER_TASK_NAME $CRAWLER_LABEL_TEAM; sleep 0.3; echo done"]
      - tasks: "crash-*"
        command: [sh, -c, "echo crashing; exit 3"]
      - tasks: "long-*"
        command: [sh, -c, "echo running $CRAWLER_TASK_EPOCH; trap 'date +%s%N > terminated; exit 0' TERM; while true; do sleep 0.05; done"]
      - tasks: "tick-*"
        command: [sh, -c, "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
      - tasks: "flood-*"
        command: [sh, -c, "yes 'a flood of output' | head -c 5000000; echo flooded; exec sleep 30"]
      - tasks: "py-*"
        command: [python3, -c, "import os,signal,sys,time\ndef stop(*_):\n    with open(os.environ['CRAWLER_LABEL_MARK'], 'w') as f:\n        f.write('TERM')\n    sys.exit(0)\nsignal.signal(signal.SIGTERM, stop)\nprint('running', flush=True)\nwhile True:\n    time.sleep(0.05)\n"]
      - tasks: "missing-*"
        command: [/nonexistent/crawler-runner, "{{name}}"]
log:
  level: warn
"#,
        data = data.display(),
        policy = crawler::tools::procs::MOVE_AT_ONCE,
    );
    std::fs::write(&file, yaml).expect("config");
    file
}

async fn status_of(master: &str, name: &str) -> Option<Value> {
    let (status, _, body) = get_json(&format!("{master}/api/v1/resources/{name}")).await?;
    (status == 200).then(|| body["status"].clone())
}

/// Waits until `name`'s status satisfies `check`; returns it.
async fn wait_status(
    master: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("{name}: {what}"), WAIT, || async {
        status_of(master, name).await.filter(|s| check(s))
    })
    .await
}

/// Processes whose working directory is under `dir` (the tasks of a worker whose data dir it
/// is), read from /proc.
fn processes_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{} {} in {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " "),
                cwd.display()
            ));
        }
    }
    found
}

fn alive(pid: i64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_fail_restart_and_stop_and_every_master_shows_it() {
    let (etcd, _dir, _, endpoints) = {
        let etcd = Etcd::start().await;
        let dir = tempfile::tempdir().expect("dir");
        let endpoints = vec![etcd.url.clone()];
        (etcd, dir, (), endpoints)
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = task_config(dir.path());
    let leader = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&leader.url], WAIT).await;
    let follower = support::master_process(2, &endpoints, &config, &[]);
    wait_ready(&follower.url).await;
    wait_leader_known(&follower.url, &leader.url).await;
    let worker = support::worker_process(1, &endpoints, &config);
    wait_workers(&leader.url, 1).await;
    let (l, f) = (leader.url.as_str(), follower.url.as_str());

    // running → completed, with the labels in the environment.
    assert_eq!(create(l, "ok-1").await.expect("c").0, 201);
    let done = wait_status(f, "ok-1", "completed", |s| s["state"] == "completed").await;
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["stale"], false);

    // crash → backoff → failed, with the restarts counted.
    assert_eq!(create(l, "crash-1").await.expect("c").0, 201);
    let failed = wait_status(f, "crash-1", "failed", |s| s["state"] == "failed").await;
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["restarts"], 2, "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("code 3"))
    );

    // A binary that is not there, and a task no runner is configured for.
    assert_eq!(create(l, "missing-1").await.expect("c").0, 201);
    let missing = wait_status(f, "missing-1", "failed", |s| s["state"] == "failed").await;
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot start")),
        "{missing}"
    );
    assert_eq!(create(l, "nothing-1").await.expect("c").0, 201);
    let nothing = wait_status(f, "nothing-1", "failed", |s| s["state"] == "failed").await;
    assert!(
        nothing["message"]
            .as_str()
            .is_some_and(|m| m.contains("worker.runners.default")),
        "{nothing}"
    );

    // A flood of output is bounded on disk, and the task keeps running.
    assert_eq!(create(l, "flood-1").await.expect("c").0, 201);
    wait_status(f, "flood-1", "running", |s| s["state"] == "running").await;
    let flood_dir = dir.path().join("data/tasks/flood-1");
    eventually("the flood is written", WAIT, || async {
        let log = std::fs::read_to_string(flood_dir.join("output.log")).ok()?;
        log.contains("flooded").then_some(())
    })
    .await;
    let on_disk: u64 = ["output.log", "output.log.1"]
        .iter()
        .filter_map(|f| std::fs::metadata(flood_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    assert!(
        on_disk <= 1024 * 1024,
        "{on_disk} bytes of log for one task"
    );
    // A task deleted while it starts leaves nothing behind (checked at the end).
    assert_eq!(create(l, "long-gone").await.expect("c").0, 201);
    let resp = http()
        .delete(format!("{l}/api/v1/resources/long-gone"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);

    // The state filter, on a follower.
    let (_, _, failed_list) = get_json(&format!("{f}/api/v1/resources?state=failed"))
        .await
        .expect("list");
    let names: Vec<&str> = failed_list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["crash-1", "missing-1", "nothing-1"]);
    let (status, _, _) = get_json(&format!("{f}/api/v1/resources?state=bogus"))
        .await
        .expect("list");
    assert_eq!(status, 400);

    // The metrics count tasks by state.
    let scrape = metrics_text(f).await;
    assert!(
        scrape.contains("crawler_tasks{state=\"failed\"} 3"),
        "{scrape}"
    );
    assert!(scrape.contains("crawler_tasks{state=\"completed\"} 1"));
    // ok-1, crash-1 (first run) and flood-1 ran at their first epoch, seen by this master.
    let starts: u64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("crawler_task_start_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a start latency count");
    assert!(starts >= 2, "{starts} task starts measured");

    // A restart through the follower starts the failed task again at a new epoch.
    let resp = http()
        .post(format!("{f}/api/v1/resources/crash-1/restart"))
        .send()
        .await
        .expect("restart");
    assert_eq!(resp.status(), 200);
    let epoch = failed["epoch"].as_i64().expect("epoch");
    wait_status(f, "crash-1", "failed again at a new epoch", |s| {
        s["state"] == "failed" && s["epoch"].as_i64().is_some_and(|e| e > epoch)
    })
    .await;

    // A long task: running with a pid; its log through the follower; delete stops it.
    let mut to_running = Vec::new();
    for i in 0..10 {
        let name = format!("long-{i}");
        let posted = Instant::now();
        assert_eq!(create(l, &name).await.expect("c").0, 201);
        wait_status(l, &name, "running", |s| s["state"] == "running").await;
        to_running.push(posted.elapsed());
    }
    to_running.sort();
    println!(
        "measured: POST to running (as a master shows it), {} tasks: p50 {:?}, max {:?}",
        to_running.len(),
        to_running[to_running.len() / 2],
        to_running[to_running.len() - 1]
    );
    let running = status_of(f, "long-0").await.expect("status");
    let pid = running["pid"].as_i64().expect("pid");
    assert!(alive(pid));
    let log = http()
        .get(format!("{f}/api/v1/resources/long-0/logs?tail=5"))
        .send()
        .await
        .expect("logs");
    assert_eq!(log.status(), 200);
    let text = log.text().await.expect("text");
    assert!(text.contains("running"), "{text}");
    // Status changes reach the event stream.
    let events = http()
        .get(format!("{f}/api/v1/events?kind=statuses"))
        .send()
        .await
        .expect("events");
    assert_eq!(create(l, "ok-2").await.expect("c").0, 201);
    let mut stream = events.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"completed\"") {
        let chunk = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut stream))
            .await
            .expect("status events keep coming")
            .expect("more")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("\"kind\":\"statuses\"") && seen.contains("\"name\":\"ok-2\""),
        "{seen}"
    );
    drop(stream);

    // A followed log keeps coming, through the follower.
    assert_eq!(create(l, "tick-1").await.expect("c").0, 201);
    wait_status(l, "tick-1", "running", |s| s["state"] == "running").await;
    let mut stream = http()
        .get(format!(
            "{f}/api/v1/resources/tick-1/logs?tail=1&follow=true"
        ))
        .send()
        .await
        .expect("follow")
        .bytes_stream();
    let mut seen = String::new();
    let first = loop {
        let chunk = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut stream))
            .await
            .expect("output keeps coming")
            .expect("more")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let ticks: Vec<u64> = seen
            .lines()
            .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
            .collect();
        if let (Some(first), Some(last)) = (ticks.first(), ticks.last())
            && last >= &(first + 5)
        {
            break *first;
        }
    };
    assert!(first >= 1, "{seen}");
    drop(stream);

    let resp = http()
        .delete(format!("{f}/api/v1/resources/long-0"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    eventually("the deleted task's process is gone", WAIT, || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let mut client = etcd.client().await;
    eventually("its status is gone", WAIT, || {
        let mut client = client.clone();
        async move {
            let r = client.get("/crawler/status/long-0", None).await.ok()?;
            r.kvs().is_empty().then_some(())
        }
    })
    .await;

    // SIGTERM: the worker stops its tasks, then revokes its lease.
    let pids: Vec<i64> = {
        let mut pids = Vec::new();
        for i in 1..10 {
            let s = status_of(l, &format!("long-{i}")).await.expect("status");
            pids.push(s["pid"].as_i64().expect("pid"));
        }
        pids
    };
    let (_requests, mut events) = client
        .watch(
            "/micro/registry/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .expect("watch")
        .split();
    worker.signal(Signal::SIGTERM);
    let deregistered_ns = loop {
        let resp = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("an event")
            .expect("watch")
            .expect("stream");
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == etcd_client::EventType::Delete)
        {
            break std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
        }
    };
    for pid in &pids {
        assert!(!alive(*pid), "task pid {pid} outlived the worker's lease");
    }
    for i in 1..10 {
        let file = dir
            .path()
            .join(format!("data/tasks/long-{i}/work/terminated"));
        let at: u128 = std::fs::read_to_string(&file)
            .expect("the task saw SIGTERM")
            .trim()
            .parse()
            .expect("ns");
        assert!(
            at < deregistered_ns,
            "long-{i} stopped after the lease was revoked"
        );
    }
    println!(
        "measured: SIGTERM stopped {} tasks before the lease was revoked",
        pids.len()
    );
    drop(worker);
    // No task process is left behind: none works in the worker's data dir any more.
    let data = dir.path().join("data");
    eventually("no task process is left", WAIT, || async {
        processes_in(&data).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_go_worker_that_never_reports_shows_unknown() {
    let (etcd, _config, master) = etcd_and_leader().await;
    // A Go worker: a go-micro record on a lease, and nothing else.
    let mut client = etcd.client().await;
    let lease = client.lease_grant(60, None).await.expect("lease").id();
    let record = json!({"name": "go.micro.server.worker", "nodes": [{"id": "go.micro.server.worker-go", "address": "127.0.0.1:9"}]});
    client
        .put(
            "/micro/registry/go.micro.server.worker/go.micro.server.worker-go",
            record.to_string(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
    wait_workers(&master.url, 1).await;
    assert_eq!(create(&master.url, "go-task").await.expect("c").0, 201);
    let status = status_of(&master.url, "go-task").await.expect("status");
    assert_eq!(status["state"], "unknown", "{status}");
    let (_, _, unknown) = get_json(&format!("{}/api/v1/resources?state=unknown", master.url))
        .await
        .expect("list");
    assert_eq!(unknown["items"][0]["name"], "go-task");
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_etcd_stops_its_tasks_before_another_starts_them() {
    let mut gaps = Vec::new();
    for trial in 0..3 {
        let etcd = Etcd::start().await;
        let proxy = Proxy::start(etcd.url.trim_start_matches("http://"))
            .await
            .expect("proxy");
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("runs.log");
        let config = task_config(dir.path());
        let mut yaml = std::fs::read_to_string(&config).expect("config");
        yaml = yaml.replace(
            "    rules:\n",
            &format!("    rules:\n{}", logged_runner("p-*", &log)),
        );
        std::fs::write(&config, yaml).expect("config");
        let direct = vec![etcd.url.clone()];
        let master = support::master_process(1, &direct, &config, &[]);
        ready_leader(&[&master.url], WAIT).await;
        // Worker 1 reaches etcd through the proxy; it gets every task.
        let cut_off = support::worker_process(1, std::slice::from_ref(&proxy.url), &config);
        wait_workers(&master.url, 1).await;
        let tasks: Vec<String> = (0..5).map(|i| format!("p-{i}")).collect();
        for t in &tasks {
            assert_eq!(create(&master.url, t).await.expect("c").0, 201);
        }
        for t in &tasks {
            wait_status(&master.url, t, "running on worker 1", |s| {
                s["state"] == "running"
            })
            .await;
        }
        let _other = support::worker_process(2, &direct, &config);
        wait_workers(&master.url, 2).await;
        // Cut worker 1 off: it must stop its tasks before its lease can expire and the tasks
        // move to worker 2.
        proxy.cut();
        for t in &tasks {
            eventually(&format!("{t} runs on worker 2"), WAIT, || async {
                runs(&log)
                    .iter()
                    .any(|r| r.0 == *t && r.1.ends_with("-2"))
                    .then_some(())
            })
            .await;
        }
        let all = runs(&log);
        for t in &tasks {
            let first = all
                .iter()
                .find(|r| r.0 == *t && r.1.ends_with("-1"))
                .expect("ran on worker 1");
            let second = all
                .iter()
                .find(|r| r.0 == *t && r.1.ends_with("-2"))
                .expect("runs on worker 2");
            let ended = first.3.expect("worker 1's run ended");
            assert!(
                ended < second.2,
                "trial {trial}: {t} ran on both workers at once ({ended} >= {})",
                second.2
            );
            gaps.push(Duration::from_nanos((second.2 - ended) as u64));
        }
        drop(cut_off);
    }
    gaps.sort();
    println!(
        "measured: partition, {} task moves over 3 trials: zero overlap; gap between the old run's end and the new run's start min {:?}, median {:?}, max {:?}",
        gaps.len(),
        gaps[0],
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_tasks_run_elsewhere_after_its_lease_expires() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let config = task_config(dir.path());
    let master = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let mut first = support::worker_process(1, &endpoints, &config);
    wait_workers(&master.url, 1).await;
    let tasks: Vec<String> = (0..5).map(|i| format!("long-{i}")).collect();
    for t in &tasks {
        assert_eq!(create(&master.url, t).await.expect("c").0, 201);
        wait_status(&master.url, t, "running", |s| s["state"] == "running").await;
    }
    let second = support::worker_process(2, &endpoints, &config);
    wait_workers(&master.url, 2).await;
    first.kill();
    let killed = Instant::now();
    let mut again = Vec::new();
    for t in &tasks {
        eventually(&format!("{t} runs on worker 2"), WAIT, || async {
            let (_, _, r) = get_json(&format!("{}/api/v1/resources/{t}", master.url)).await?;
            (r["assigned_node"]["id"] == "go.micro.server.worker-2"
                && r["status"]["state"] == "running"
                && r["status"]["stale"] == false)
                .then_some(())
        })
        .await;
        again.push(killed.elapsed());
    }
    println!(
        "measured: worker SIGKILL to its {} tasks running on the other worker: {:?} (first) to {:?} (last), lease TTL 3 s",
        again.len(),
        again[0],
        again[again.len() - 1]
    );
    // The killed worker's processes died with it; the survivor's stop with it.
    drop(second);
    let data = dir.path().join("data");
    eventually("no task process is left", WAIT, || async {
        processes_in(&data).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_task_stops_counting_against_its_workers_capacity() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let config = task_config(dir.path());
    let yaml = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        yaml.replace("worker:\n", "worker:\n  capacity: 1\n"),
    )
    .expect("config");
    let master = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let _worker = support::worker_process(1, &endpoints, &config);
    wait_workers(&master.url, 1).await;
    let m = master.url.as_str();
    let assigned = |name: &'static str| async move {
        let (_, _, r) = get_json(&format!("{m}/api/v1/resources/{name}")).await?;
        Some(r["assigned_node"]["id"].as_str().map(str::to_owned))
    };
    // A running task fills the only slot: the next one waits unassigned.
    assert_eq!(create(m, "long-1").await.expect("c").0, 201);
    wait_status(m, "long-1", "running", |s| s["state"] == "running").await;
    assert_eq!(create(m, "ok-1").await.expect("c").0, 201);
    assert_eq!(
        assigned("ok-1").await,
        Some(None),
        "no room while long-1 runs"
    );
    // Once long-1 is gone, ok-1 gets the slot, runs and completes ...
    let resp = http()
        .delete(format!("{m}/api/v1/resources/long-1"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    wait_status(m, "ok-1", "completed", |s| s["state"] == "completed").await;
    // ... and, completed, no longer holds it: the next task is placed and runs.
    assert_eq!(create(m, "ok-2").await.expect("c").0, 201);
    eventually("ok-2 is placed on the worker", WAIT, || async {
        (assigned("ok-2").await? == Some("go.micro.server.worker-1".to_owned())).then_some(())
    })
    .await;
    wait_status(m, "ok-2", "completed", |s| s["state"] == "completed").await;
    // ok-1 keeps its worker and its ID.
    assert_eq!(
        assigned("ok-1").await,
        Some(Some("go.micro.server.worker-1".to_owned()))
    );
}

/// A task that is not a shell (which clears its signal mask itself) sees SIGTERM when it is
/// stopped: the guard blocks the signals it reads, and a process it starts must not inherit
/// that mask, or it is only ever killed, a grace later.
#[tokio::test]
async fn a_stopped_task_that_is_not_a_shell_sees_sigterm() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    let config = task_config(dir.path());
    let master = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let _worker = support::worker_process(1, &endpoints, &config);
    wait_workers(&master.url, 1).await;
    // Told where to leave its mark: a deleted task's directory goes with it.
    let file = dir.path().join("terminated");
    let labels = json!({"mark": file.display().to_string()});
    let created = create_with(&master.url, json!({"name": "py-1", "labels": labels}))
        .await
        .expect("c");
    assert_eq!(created.0, 201, "{}", created.1);
    wait_status(&master.url, "py-1", "running", |s| s["state"] == "running").await;
    // Its handler is in place once it says so.
    eventually("the task says it runs", WAIT, || async {
        let url = format!("{}/api/v1/resources/py-1/logs?tail=5", master.url);
        let text = http().get(url).send().await.ok()?.text().await.ok()?;
        text.lines().any(|l| l == "running").then_some(())
    })
    .await;
    let resp = http()
        .delete(format!("{}/api/v1/resources/py-1", master.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    eventually("the task saw SIGTERM", WAIT, || async {
        (std::fs::read_to_string(&file).ok()? == "TERM").then_some(())
    })
    .await;
}

/// A task that ignores SIGTERM takes `stop_grace_ms` to stop; meanwhile the worker goes on
/// proving its lease to its guard, so the guard's deadline does not run out and its neighbours
/// keep running, untouched. (Stopping used to hold the worker's loop for the whole grace.)
#[tokio::test]
async fn a_task_slow_to_stop_does_not_take_its_neighbours_down() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("dir");
    // A grace longer than the guard's deadline ahead of each renewal (TTL 3 s - margin 1 s).
    let config = fault_config_with(
        dir.path(),
        "  lease_margin_ms: 1000\n  stop_grace_ms: 5000\n  runners:\n    rules:\n      - tasks: \"stubborn-*\"\n        command: [sh, -c, \"trap '' TERM; echo stubborn; while true; do sleep 0.1; done\"]\n      - tasks: \"tick-*\"\n        command: [sh, -c, \"while true; do sleep 0.1; done\"]\n",
    );
    let master = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let _worker = support::worker_process(1, &endpoints, &config);
    wait_workers(&master.url, 1).await;
    let m = master.url.as_str();
    assert_eq!(create(m, "tick-1").await.expect("c").0, 201);
    assert_eq!(create(m, "stubborn-1").await.expect("c").0, 201);
    let tick = wait_status(m, "tick-1", "running", |s| s["state"] == "running").await;
    let stubborn = wait_status(m, "stubborn-1", "running", |s| s["state"] == "running").await;
    let stubborn_pid = stubborn["pid"].as_i64().expect("pid");
    eventually("the stubborn task ignores SIGTERM", WAIT, || async {
        let url = format!("{m}/api/v1/resources/stubborn-1/logs?tail=5");
        let text = http().get(url).send().await.ok()?.text().await.ok()?;
        text.contains("stubborn").then_some(())
    })
    .await;
    let started = Instant::now();
    let resp = http()
        .delete(format!("{m}/api/v1/resources/stubborn-1"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    // Past the grace, when the stubborn process has been killed.
    eventually("the stubborn task is killed", WAIT, || async {
        (!alive(stubborn_pid)).then_some(())
    })
    .await;
    let after = status_of(m, "tick-1").await.expect("status");
    println!(
        "measured: {:?} after a delete of a task that ignores SIGTERM, its neighbour is {}",
        started.elapsed(),
        after
    );
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(
        after["pid"], tick["pid"],
        "the neighbour was not restarted: {after}"
    );
    assert_eq!(after["restarts"], 0, "{after}");
}
