//! Recurring crawls, end to end: real etcd, real masters and workers as processes, and task
//! processes (`sh` scripts) that keep their own records of every run in a file. Every count of
//! runs is taken from those records, never from the API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// A config whose workers run scripts that append `<epoch> <slot|none> <ms> <event> <pid>` to
/// `<records>/<task>` for every start and end.
fn recurring_config(dir: &Path, runs_kept: usize) -> (PathBuf, PathBuf) {
    let records = dir.join("records");
    std::fs::create_dir_all(&records).expect("records");
    let data = dir.join("data");
    let file = dir.join("config.yaml");
    let note = |event: &str| {
        format!(
            "echo \"$CRAWLER_TASK_EPOCH ${{CRAWLER_SCHEDULED_AT:-none}} $(date +%s%3N) {event} $$\" >> {}/$CRAWLER_TASK_NAME",
            records.display()
        )
    };
    let yaml = format!(
        r#"etcd:
  request_timeout_ms: 1000
  dial_timeout_ms: 500
master:
  session_ttl_secs: 2
worker:
  lease_ttl_secs: 3
  lease_margin_ms: 1000
  data_dir: {data}
  stop_grace_ms: 3000
  restart_backoff_ms: 100
  restart_backoff_max_ms: 200
  runners:
    rules:
      - tasks: "quick-*"
        command: [sh, -c, '{start}; sleep 0.2; echo "12 pages, 0 errors" > "$CRAWLER_SUMMARY_FILE"; {end}']
      - tasks: "slow-*"
        command: [sh, -c, '{start}; sleep 2.5; {end}']
      - tasks: "long-*"
        command: [sh, -c, '{start}; trap "{term}; exit 0" TERM; while true; do sleep 0.05; done']
scheduling:
  reassign_after: 60s
  rebalance_max_moves: 0
  runs_kept: {runs_kept}
log:
  level: warn
"#,
        data = data.display(),
        start = note("start"),
        end = note("end"),
        term = note("term").replace('"', "\\\""),
    );
    std::fs::write(&file, yaml).expect("config");
    (file, records)
}

/// One line of a task's own records.
#[derive(Debug, Clone)]
struct Record {
    epoch: i64,
    slot: Option<i64>,
    at: i64,
    event: String,
}

fn records(dir: &Path, task: &str) -> Vec<Record> {
    let text = std::fs::read_to_string(dir.join(task)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Some(Record {
                epoch: f.first()?.parse().ok()?,
                slot: humantime::parse_rfc3339(f.get(1)?)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64),
                at: f.get(2)?.parse().ok()?,
                event: (*f.get(3)?).to_owned(),
            })
        })
        .collect()
}

fn starts(dir: &Path, task: &str) -> Vec<Record> {
    records(dir, task)
        .into_iter()
        .filter(|r| r.event == "start")
        .collect()
}

async fn post(master: &str, body: Value) -> (u16, Value) {
    create_with(master, body).await.unwrap_or((0, Value::Null))
}

async fn patch(master: &str, name: &str, body: Value) -> (u16, Value) {
    send(
        http().patch(format!("{master}/api/v1/resources/{name}")),
        body,
    )
    .await
}

async fn send(request: reqwest::RequestBuilder, body: Value) -> (u16, Value) {
    let resp = request.json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn resource(master: &str, name: &str) -> Value {
    get_json(&format!("{master}/api/v1/resources/{name}"))
        .await
        .expect("get")
        .2
}

async fn runs(master: &str, name: &str) -> Value {
    let (status, _, body) = get_json(&format!("{master}/api/v1/resources/{name}/runs"))
        .await
        .expect("runs");
    assert_eq!(status, 200, "{body}");
    body
}

fn ms_of(text: &Value) -> i64 {
    let t = humantime::parse_rfc3339(text.as_str().expect("a time")).expect("rfc3339");
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Every slot from the first run's to the last run's, `every_ms` apart, must be run by exactly
/// one epoch (the task's own records: `starts`) or passed (missed or skipped, the API's
/// records), never both. A worker that restarts starts an interrupted run again at its epoch:
/// that is the same run, not a second one.
fn assert_every_slot_accounted(task: &str, starts: &[Record], passed: &Value, every_ms: i64) {
    let mut by_slot: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for r in starts {
        if let Some(slot) = r.slot {
            by_slot.entry(slot).or_default().insert(r.epoch);
        }
    }
    let ran: Vec<i64> = by_slot.keys().copied().collect();
    for (slot, epochs) in &by_slot {
        assert_eq!(epochs.len(), 1, "{task}: slot {slot} ran as {epochs:?}");
    }
    let seen: BTreeSet<i64> = ran.iter().copied().collect();
    let (Some(first), Some(last)) = (seen.first().copied(), seen.last().copied()) else {
        panic!("{task}: no scheduled run");
    };
    let mut passed_slots = BTreeSet::new();
    for p in passed.as_array().expect("passed") {
        let count = p["count"].as_i64().expect("count");
        let at = ms_of(&p["slot"]);
        for k in 0..count {
            passed_slots.insert(at + k * every_ms);
        }
    }
    let mut slot = first;
    while slot <= last {
        let run = seen.contains(&slot);
        let skipped = passed_slots.contains(&slot);
        assert!(
            run != skipped,
            "{task}: slot {slot} was {} (runs {ran:?}, passed {passed})",
            if run {
                "run and passed"
            } else {
                "neither run nor passed"
            }
        );
        slot += every_ms;
    }
}

struct Cluster {
    _etcd: Etcd,
    endpoints: Vec<String>,
    config: PathBuf,
    records: PathBuf,
    _dir: tempfile::TempDir,
}

async fn cluster(runs_kept: usize) -> Cluster {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (config, records) = recurring_config(dir.path(), runs_kept);
    Cluster {
        endpoints: vec![etcd.url.clone()],
        _etcd: etcd,
        config,
        records,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_is_a_new_epoch_each_time_and_each_run_is_recorded() {
    let c = cluster(50).await;
    let master = master_process(1, &c.endpoints, &c.config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let _worker = worker_process(1, &c.endpoints, &c.config);
    wait_workers(&master.url, 1).await;
    let m = master.url.as_str();

    // Labels and a schedule at creation: no create-then-patch.
    let (status, created) = post(
        m,
        json!({"name": "quick-a", "labels": {"team": "news"}, "schedule": {"every": "2s"}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["labels"]["team"], "news");
    assert_eq!(created["schedule"]["every"], "2s");
    assert_eq!(created["schedule"]["overlap"], "skip");
    assert!(created["schedule"]["next_run_at"].is_string(), "{created}");

    let scheduled = eventually("five scheduled runs", Duration::from_secs(30), || async {
        let s: Vec<Record> = starts(&c.records, "quick-a")
            .into_iter()
            .filter(|r| r.slot.is_some())
            .collect();
        (s.len() >= 5).then_some(s)
    })
    .await;
    let all = starts(&c.records, "quick-a");
    let epochs: BTreeSet<i64> = all.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs.len(), all.len(), "each run is a new epoch: {all:?}");
    let mut lateness: Vec<i64> = scheduled
        .iter()
        .map(|r| r.at - r.slot.unwrap_or(0))
        .collect();
    lateness.sort_unstable();
    eprintln!("every 2s: process start after its slot, ms (sorted): {lateness:?}");
    let history = runs(m, "quick-a").await;
    assert_every_slot_accounted("quick-a", &scheduled, &history["passed"], 2000);

    // The API's history of runs: why each started, how it ended, with the runner's summary.
    let items = history["items"].as_array().expect("items");
    assert_eq!(items[0]["reason"], "created", "{history}");
    let ended: Vec<&Value> = items.iter().filter(|r| r["state"] == "completed").collect();
    assert!(ended.len() >= 4, "{history}");
    for run in &ended {
        assert_eq!(run["exit_code"], 0);
        assert_eq!(run["summary"], "12 pages, 0 errors", "{run}");
        assert!(
            run["duration_ms"].as_i64().is_some_and(|d| d >= 200),
            "{run}"
        );
    }
    assert!(
        items
            .iter()
            .skip(1)
            .all(|r| r["reason"] == "scheduled" || r["reason"] == "catch-up")
    );
    let view = resource(m, "quick-a").await;
    assert!(view["schedule"]["last_scheduled_at"].is_string(), "{view}");
    assert_eq!(view["schedule"]["last_outcome"], "started");
    assert!(metric(m, "crawler_schedule_runs_total{outcome=\"started\"}").await >= 5.0);

    // Suspended: nothing starts (a run decided just before the PATCH may still begin).
    let (status, body) = patch(m, "quick-a", json!({"schedule": {"suspend": true}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schedule"]["suspend"], true);
    assert!(body["schedule"]["next_run_at"].is_null(), "{body}");
    // A run decided before the PATCH ends first.
    eventually("the last run completed", WAIT, || async {
        let s = &resource(m, "quick-a").await["status"];
        (s["state"] == "completed" && s["stale"] == false).then_some(())
    })
    .await;
    let count = starts(&c.records, "quick-a").len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        starts(&c.records, "quick-a").len(),
        count,
        "a suspended schedule ran"
    );
    // Resumed: runs go on, and the slots passed while suspended are not caught up.
    let resumed_at = crawler::model::status::now_ms();
    let (status, _) = patch(m, "quick-a", json!({"schedule": {"suspend": false}})).await;
    assert_eq!(status, 200);
    let after = eventually("runs after resuming", WAIT, || async {
        let s: Vec<Record> = starts(&c.records, "quick-a")
            .into_iter()
            .skip(count)
            .collect();
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert!(
        after
            .iter()
            .all(|r| r.slot.is_some_and(|s| s >= resumed_at - 50)),
        "a slot from the suspension was run: {after:?} (resumed at {resumed_at})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_never_runs_two_at_once_and_replace_stops_the_old_run_first() {
    let c = cluster(50).await;
    let master = master_process(1, &c.endpoints, &c.config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let _worker = worker_process(1, &c.endpoints, &c.config);
    wait_workers(&master.url, 1).await;
    let m = master.url.as_str();
    let (s1, b1) = post(m, json!({"name": "slow-s", "schedule": {"every": "1s"}})).await;
    let (s2, b2) = post(
        m,
        json!({"name": "long-r", "schedule": {"every": "2s", "overlap": "replace"}}),
    )
    .await;
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    eventually("runs of both", Duration::from_secs(30), || async {
        let slow = starts(&c.records, "slow-s").len();
        let long = starts(&c.records, "long-r").len();
        (slow >= 3 && long >= 4).then_some(())
    })
    .await;

    // skip: from the task's own records, each run starts after the one before ended.
    let slow = records(&c.records, "slow-s");
    let mut going: Option<i64> = None;
    for r in &slow {
        match r.event.as_str() {
            "start" => {
                assert!(going.is_none(), "two runs at once: {slow:?}");
                going = Some(r.epoch);
            }
            "end" => {
                assert_eq!(going, Some(r.epoch), "{slow:?}");
                going = None;
            }
            _ => {}
        }
    }
    let view = resource(m, "slow-s").await;
    assert!(
        view["schedule"]["skipped"].as_u64().is_some_and(|n| n >= 2),
        "{view}"
    );
    let history = runs(m, "slow-s").await;
    let skipped = history["passed"]
        .as_array()
        .expect("passed")
        .iter()
        .filter(|p| p["outcome"] == "skipped")
        .count();
    assert!(skipped >= 2, "{history}");
    let slow_starts = starts(&c.records, "slow-s");
    assert_every_slot_accounted("slow-s", &slow_starts, &history["passed"], 1000);

    // replace: each new run starts only after the old process was stopped.
    let long = records(&c.records, "long-r");
    let mut last_term: BTreeMap<i64, i64> = BTreeMap::new();
    let mut previous: Option<i64> = None;
    for r in &long {
        match r.event.as_str() {
            "term" => {
                last_term.insert(r.epoch, r.at);
            }
            "start" => {
                if let Some(p) = previous {
                    let stopped = last_term.get(&p).copied();
                    assert!(
                        stopped.is_some_and(|t| t <= r.at),
                        "run {} started before run {p} stopped: {long:?}",
                        r.epoch
                    );
                }
                previous = Some(r.epoch);
            }
            _ => {}
        }
    }
    let view = resource(m, "long-r").await;
    assert_eq!(view["schedule"]["last_outcome"], "replaced", "{view}");
    let history = runs(m, "long-r").await;
    assert!(
        history["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|r| r["state"] == "stopped"),
        "{history}"
    );

    // A change of the schedule alone keeps the run going: the same process, the same epoch.
    let (status, body) = patch(m, "long-r", json!({"schedule": {"every": "1h"}})).await;
    assert_eq!(status, 200, "{body}");
    // A replacement decided before the PATCH starts first.
    let epoch = eventually("the last run going", WAIT, || async {
        let s = resource(m, "long-r").await["status"].clone();
        (s["state"] == "running" && s["stale"] == false).then_some(s["epoch"].clone())
    })
    .await;
    let before = records(&c.records, "long-r").len();
    let (status, body) = patch(m, "long-r", json!({"schedule": {"suspend": true}})).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        records(&c.records, "long-r").len(),
        before,
        "a schedule change restarted the run: {:?}",
        records(&c.records, "long-r")
    );
    let view = resource(m, "long-r").await;
    assert_eq!(
        (
            view["status"]["epoch"].clone(),
            view["status"]["state"].as_str()
        ),
        (epoch, Some("running")),
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field_and_change_nothing() {
    let (etcd, _config, master) = etcd_and_leader().await;
    let m = master.url.as_str();
    assert_eq!(
        post(m, json!({"name": "kept", "schedule": {"every": "1h"}}))
            .await
            .0,
        201
    );
    let before = etcd.keys_but_audit("").await;
    let cases = [
        (json!({"cron": "0 * * * * *"}), "schedule.cron"),
        (json!({"cron": "0 0 30 2 *"}), "schedule.cron"),
        (json!({"cron": "whenever"}), "schedule.cron"),
        (json!({"every": "0s"}), "schedule.every"),
        (
            json!({"every": "1m", "time_zone": "Europe/Nowhere"}),
            "schedule.time_zone",
        ),
        (
            json!({"every": "1m", "starting_deadline": "0s"}),
            "schedule.starting_deadline",
        ),
        (json!({"every": "1m", "cron": "@daily"}), "schedule"),
        (json!({"every": "1m", "overlap": "allow"}), "schedule"),
        (json!({}), "schedule"),
    ];
    for (schedule, field) in cases {
        let (status, body) = post(m, json!({"name": "bad", "schedule": schedule.clone()})).await;
        assert_eq!(status, 422, "{schedule}: {body}");
        assert_eq!(body["field"], field, "{schedule}: {body}");
        // As a merge patch into `every: 1h`, all but `{}` (which changes nothing) break it.
        if schedule != json!({}) {
            let (status, body) = patch(m, "kept", json!({"schedule": schedule.clone()})).await;
            assert_eq!(status, 422, "PATCH {schedule}: {body}");
        }
    }
    // A merge patch that leaves both cadences names the schedule; one that removes both too.
    let (status, body) = patch(m, "kept", json!({"schedule": {"cron": "@hourly"}})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("schedule")),
        "{body}"
    );
    let (status, body) = post(m, json!({"name": "bad", "labels": {"": "x"}})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("labels")),
        "{body}"
    );
    assert_eq!(
        etcd.keys_but_audit("").await,
        before,
        "a refused request changed etcd"
    );
    // A good merge patch changes the cadence, and null removes the schedule.
    let (status, body) = patch(
        m,
        "kept",
        json!({"schedule": {"cron": "*/5 * * * *", "every": null, "time_zone": "Asia/Tokyo"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schedule"]["cron"], "*/5 * * * *");
    let (status, body) = patch(m, "kept", json!({"schedule": null})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("schedule").is_none(), "{body}");
}

/// The leader killed, or paused past its session, while runs are due, ten times: no slot runs
/// twice, and every slot is run or recorded as passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_neither_double_nor_lose_a_run() {
    let c = cluster(400).await;
    let mut masters = [
        master_process(1, &c.endpoints, &c.config, &[]),
        master_process(2, &c.endpoints, &c.config, &[]),
    ];
    ready_leader(&[&masters[0].url, &masters[1].url], WAIT).await;
    let _worker = worker_process(1, &c.endpoints, &c.config);
    wait_workers(&masters[0].url, 1).await;
    let tasks = ["quick-f1", "quick-f2", "quick-f3"];
    for t in tasks {
        let (status, body) = post(
            &masters[0].url,
            json!({"name": t, "schedule": {"every": "1s"}}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for trial in 0..10 {
        let urls: Vec<&str> = masters.iter().map(|m| m.url.as_str()).collect();
        let leader = ready_leader(&urls, WAIT).await;
        let follower = 1 - leader;
        if trial % 2 == 0 {
            masters[leader].kill();
            let other = masters[follower].url.clone();
            ready_leader(&[&other], WAIT).await;
            let id = u16::try_from(leader + 1).expect("id");
            masters[leader] = master_process(id, &c.endpoints, &c.config, &[]);
        } else {
            masters[leader].signal(Signal::SIGSTOP);
            let other = masters[follower].url.clone();
            ready_leader(&[&other], WAIT).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            masters[leader].signal(Signal::SIGCONT);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let urls: Vec<&str> = masters.iter().map(|m| m.url.as_str()).collect();
    let leader = ready_leader(&urls, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in tasks {
        let ran = starts(&c.records, t);
        let history = runs(&masters[leader].url, t).await;
        let passed = &history["passed"];
        eprintln!(
            "{t}: {} scheduled runs, passed: {}",
            ran.len(),
            passed
                .as_array()
                .map(|p| p
                    .iter()
                    .map(|x| format!("{}x{}", x["outcome"], x["count"]))
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        );
        assert!(
            ran.iter().filter(|r| r.slot.is_some()).count() >= 20,
            "{t}: {ran:?}"
        );
        assert_every_slot_accounted(t, &ran, passed, 1000);
    }
}

/// The whole cluster stopped for three intervals: one catch-up run within the deadline, none
/// for a slot past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_one_catch_up_within_the_deadline_and_none_past_it() {
    let c = cluster(50).await;
    let mut master = master_process(1, &c.endpoints, &c.config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let mut worker = worker_process(1, &c.endpoints, &c.config);
    wait_workers(&master.url, 1).await;
    let m = master.url.clone();
    let within = json!({"name": "quick-c", "schedule": {"every": "2s", "starting_deadline": "1m"}});
    let past = json!({"name": "quick-d", "schedule": {"every": "2s", "starting_deadline": "1s"}});
    assert_eq!(post(&m, within).await.0, 201);
    assert_eq!(post(&m, past).await.0, 201);
    eventually("scheduled runs", WAIT, || async {
        let n = starts(&c.records, "quick-c")
            .iter()
            .filter(|r| r.slot.is_some())
            .count();
        (n >= 2).then_some(())
    })
    .await;
    // Stopped when both runs completed, as their worker reported, and the next slot is not
    // at hand: no run is cut short (a worker that comes back starts a run it cut short again,
    // at its epoch).
    eventually("both runs completed", WAIT, || async {
        let now = crawler::model::status::now_ms();
        for t in ["quick-c", "quick-d"] {
            let view = resource(&m, t).await;
            let next = ms_of(&view["schedule"]["next_run_at"]);
            let last = records(&c.records, t);
            let ended = last.last().is_some_and(|l| l.event == "end");
            if view["status"]["state"] != "completed" || !ended || next - now < 700 {
                return None;
            }
        }
        Some(())
    })
    .await;
    master.kill();
    worker.kill();
    let stopped = crawler::model::status::now_ms();
    tokio::time::sleep(Duration::from_secs(7)).await;
    worker = worker_process(1, &c.endpoints, &c.config);
    // The master comes back after the worker, so the tasks' worker is there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = crawler::model::status::now_ms();
    master = master_process(1, &c.endpoints, &c.config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let m = master.url.clone();
    let after = eventually("a run after the outage", WAIT, || async {
        let s: Vec<Record> = starts(&c.records, "quick-c")
            .into_iter()
            .filter(|r| r.slot.is_some_and(|s| s > stopped))
            .collect();
        (!s.is_empty()).then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = crawler::model::status::now_ms();

    // Within the deadline: the first run after the outage is the one catch-up, for the latest
    // slot, and the slots before it are missed.
    let history = runs(&m, "quick-c").await;
    let items = history["items"].as_array().expect("items");
    let catch_ups: Vec<&Value> = items.iter().filter(|r| r["reason"] == "catch-up").collect();
    assert_eq!(catch_ups.len(), 1, "{history}");
    assert_eq!(
        ms_of(&catch_ups[0]["scheduled_for"]),
        after[0].slot.unwrap_or(0),
        "{history}"
    );
    assert!(
        after[0].slot.is_some_and(|s| s > stopped + 4000),
        "{after:?}"
    );
    let missed: i64 = history["passed"]
        .as_array()
        .expect("passed")
        .iter()
        .filter(|p| p["outcome"] == "missed")
        .filter_map(|p| p["count"].as_i64())
        .sum();
    assert!(missed >= 2, "{history}");
    assert_every_slot_accounted(
        "quick-c",
        &starts(&c.records, "quick-c"),
        &history["passed"],
        2000,
    );
    // Past the deadline: no run for a slot more than the deadline older than the restart, and
    // every run started within the deadline of its slot.
    let late: Vec<Record> = starts(&c.records, "quick-d")
        .into_iter()
        .filter(|r| r.slot.is_some_and(|s| s > stopped && s <= restarted - 1000))
        .collect();
    assert!(late.is_empty(), "runs past the deadline: {late:?}");
    let history = runs(&m, "quick-d").await;
    for run in history["items"].as_array().expect("items") {
        if let Some(slot) = run["scheduled_for"].as_str() {
            let late = ms_of(&run["started_at"]) - ms_of(&json!(slot));
            assert!(late <= 1000, "run {run} started {late} ms after its slot");
        }
    }
    assert_every_slot_accounted(
        "quick-d",
        &starts(&c.records, "quick-d"),
        &history["passed"],
        2000,
    );
    eprintln!(
        "outage {} ms, cluster ready after {} ms",
        restarted - stopped,
        ready - restarted
    );
    drop(worker);
}
