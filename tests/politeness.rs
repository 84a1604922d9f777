//! Politeness budgets, end to end, with real processes: 3 workers × 4 Python tasks fetch from
//! shards of one site (`shard-N.site.test`, one registrable domain) through their workers'
//! task agents, with a fleet-wide budget of 20 req/s set through the API. The site counts
//! requests per Host and time. Through steady state, a leader kill (and its return) and a
//! worker cut off from etcd (and healed), no 1 s window may exceed 20 × 1.1 plus the
//! documented burst (one request per worker holding a share), and steady use must reach 80 %.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);
const RATE: f64 = 20.0;
const WORKERS: u32 = 3;
const TASKS: usize = 12;
const THIRD: &str = "go.micro.server.worker-3";

/// Every request the site saw: when (since the site started) and its Host.
type Seen = Arc<Mutex<Vec<(f64, String)>>>;

async fn site(listener: tokio::net::TcpListener) -> (Seen, Instant) {
    let seen: Seen = Arc::default();
    let start = Instant::now();
    let app = axum::Router::new()
        .fallback(
            |State((seen, start)): State<(Seen, Instant)>, headers: HeaderMap| async move {
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock()
                    .expect("lock")
                    .push((start.elapsed().as_secs_f64(), host));
                // A fetch takes a while, as a real page does.
                tokio::time::sleep(Duration::from_millis(20)).await;
                "<html>ok</html>"
            },
        )
        .with_state((Arc::clone(&seen), start));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, start)
}

/// The fetcher each task runs: acquire a slot for its shard, fetch, release; or, for
/// `latency-*` tasks, time 2,000 acquire/release pairs on a domain with room to spare.
fn runner(dir: &Path) -> std::path::PathBuf {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let path = dir.join("fetch.py");
    std::fs::write(
        &path,
        format!(
            r#"import os, sys, time, urllib.request
sys.path.insert(0, {scripts:?})
from crawler_agent import Moved, _call, slot
name = os.environ["CRAWLER_TASK_NAME"]
out = os.path.join(os.environ["RUN_DIR"], name)
if name.startswith("probe"):
    with open(out + ".tmp", "w") as f:
        f.write(os.environ["CRAWLER_AGENT_URL"] + " " + os.environ["CRAWLER_AGENT_TOKEN"])
    os.rename(out + ".tmp", out)
    time.sleep(600)
if name.startswith("latency"):
    with slot("http://fast.test/"):
        pass
    times = []
    for _ in range(2000):
        t = time.perf_counter()
        permit = _call("/acquire", {{"domain": "fast.test", "wait_ms": 1000}})["permit"]
        times.append(time.perf_counter() - t)
        _call("/release", {{"permit": permit}})
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(f"{{x * 1000:.4f}}" for x in times))
    os.rename(out + ".tmp", out)
    sys.exit(0)
host = "shard-" + name.split("-")[1] + ".site.test"
while True:
    try:
        with slot("http://" + host + "/page", wait_ms=5000):
            req = urllib.request.Request("http://" + os.environ["SITE"] + "/page", headers={{"Host": host}})
            urllib.request.urlopen(req, timeout=5).read()
    except Moved:
        sys.exit(3)
    except OSError as e:
        print(name, e, flush=True)
        time.sleep(0.1)
"#
        ),
    )
    .expect("write runner");
    path
}

fn config(dir: &Path) -> std::path::PathBuf {
    let runner = runner(dir);
    // Registrations last 6 s, shares 2 s: a worker cut off from etcd paces at its safe share
    // from 2 s after its last renewal until its guard stops its tasks (about 5 s).
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "etcd:\n  request_timeout_ms: 1000\n  dial_timeout_ms: 500\n\
             master:\n  session_ttl_secs: 2\n\
             worker:\n  lease_ttl_secs: 6\n  lease_margin_ms: 1000\n  stop_grace_ms: 1000\n  \
             runners:\n    default: [python3, \"{}\"]\n\
             politeness:\n  share_lease: 2s\n  renew_interval: 500ms\n  safe_fraction: 0.1\n  \
             domains:\n    fast.test: {{rate: 100000, concurrency: 1000}}\n\
             {}log:\n  level: warn\n",
            runner.display(),
            crawler::tools::procs::MOVE_AT_ONCE,
        ),
    )
    .expect("write config");
    file
}

/// Requests in each 1 s window starting every 100 ms over [from, to): the largest, and the
/// mean rate.
fn windows(seen: &[(f64, String)], from: f64, to: f64) -> (usize, f64) {
    let mut times: Vec<f64> = seen
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= from && *t < to)
        .collect();
    times.sort_by(f64::total_cmp);
    let mut most = 0;
    let mut start = from;
    while start + 1.0 <= to {
        let n = times
            .iter()
            .filter(|t| **t >= start && **t < start + 1.0)
            .count();
        most = most.max(n);
        start += 0.1;
    }
    (most, times.len() as f64 / (to - from))
}

/// Requests per Host over [from, to).
fn per_host(seen: &[(f64, String)], from: f64, to: f64) -> BTreeMap<String, usize> {
    let mut hosts = BTreeMap::new();
    for (_, host) in seen.iter().filter(|(t, _)| *t >= from && *t < to) {
        *hosts.entry(host.clone()).or_default() += 1;
    }
    hosts
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn holder(master: &str, name: &str) -> Option<String> {
    let (_, _, body) = get_json(&format!("{master}/api/v1/resources/{name}")).await?;
    body["assigned_node"]["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_tasks_on_three_workers_keep_one_budget_through_a_leader_kill_and_a_cut_off() {
    let etcd = Etcd::start().await;
    let proxy = crawler::tools::proxy::Proxy::start(etcd.url.trim_start_matches("http://"))
        .await
        .expect("proxy");
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let (seen, started) = site(listener).await;
    let mut masters = [
        master_process(1, &endpoints, &config, &[]),
        master_process(2, &endpoints, &config, &[]),
    ];
    let urls: Vec<String> = masters.iter().map(|m| m.url.clone()).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let leader = ready_leader(&refs, WAIT).await;
    let follower = urls[1 - leader].clone();
    wait_leader_known(&follower, &urls[leader]).await;

    // Bad budgets are refused, naming the field, and leave nothing behind.
    for (body, field) in [
        (json!({"rate": 0, "concurrency": 8}), "rate"),
        (json!({"rate": 20, "concurrency": 0}), "concurrency"),
        (
            json!({"rate": 20, "concurrency": 8, "scope": "planet"}),
            "scope",
        ),
    ] {
        let resp = http()
            .put(format!("{follower}/api/v1/domains/site.test/budget"))
            .json(&body)
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 422, "{body}");
        let problem: serde_json::Value = resp.json().await.expect("problem");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let resp = http()
        .put(format!("{follower}/api/v1/domains/Not_A..Domain/budget"))
        .json(&json!({"rate": 20, "concurrency": 8}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 422);
    // Set through a follower: forwarded to the leader.
    let resp = http()
        .put(format!("{follower}/api/v1/domains/site.test/budget"))
        .json(&json!({"rate": RATE, "concurrency": 8}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);

    let runs = dir.path().display().to_string();
    let env = [("SITE", address.as_str()), ("RUN_DIR", runs.as_str())];
    let mut workers: Vec<Proc> = (1..=WORKERS)
        .map(|id| {
            // Worker 3 reaches etcd through a proxy that can cut it off.
            let via = if id == 3 {
                vec![proxy.url.clone()]
            } else {
                endpoints.clone()
            };
            crawler_process(Role::Worker, (id, free_port()), &via, &config, &env, &[])
        })
        .collect();
    wait_workers(&urls[leader], WORKERS as usize).await;
    for i in 0..TASKS {
        let (status, _) = create(&urls[leader], &format!("load-{i}"))
            .await
            .expect("create");
        assert_eq!(status, 201);
    }
    let leader_url = urls[leader].clone();
    eventually("every shard fetches", WAIT, || async {
        let hosts = per_host(&seen.lock().expect("lock"), 0.0, f64::MAX);
        (hosts.len() == TASKS).then_some(())
    })
    .await;
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..TASKS {
        let w = holder(&leader_url, &format!("load-{i}"))
            .await
            .expect("holder");
        *per_worker.entry(w).or_default() += 1;
    }
    println!("measured: tasks per worker {per_worker:?}");

    // Steady state: 3 s to settle, then 10 s measured.
    let t0 = started.elapsed().as_secs_f64() + 3.0;
    tokio::time::sleep(Duration::from_secs(13)).await;
    let t1 = t0 + 10.0;
    let domains = get_json(&format!("{follower}/api/v1/domains"))
        .await
        .expect("domains");
    let shown = domains.2["domains"]
        .as_array()
        .and_then(|d| d.iter().find(|v| v["domain"] == "site.test").cloned())
        .expect("site.test listed");
    println!("measured: /api/v1/domains shows {shown}");
    let metrics = metrics_text(&follower).await;
    assert!(
        metrics.contains("crawler_domain_granted_rate{domain=\"site.test\"}"),
        "the follower's metrics show the domain's grants"
    );
    assert_eq!(shown["budget"]["rate"], RATE);
    assert_eq!(shown["source"], "api");
    assert!(shown["granted"]["rate"].as_f64().unwrap_or(0.0) <= RATE * 1.0001);

    // The leader is killed, and comes back after 6 s.
    masters[leader].kill();
    let killed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(6)).await;
    masters[leader] = master_process(leader as u16 + 1, &endpoints, &config, &[]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let t2 = started.elapsed().as_secs_f64();

    // Worker 3 is cut off from etcd for 10 s, then heals.
    let mut on_third = Vec::new();
    for i in 0..TASKS {
        if holder(&follower, &format!("load-{i}")).await.as_deref() == Some(THIRD) {
            on_third.push(format!("shard-{i}.site.test"));
        }
    }
    proxy.cut();
    let cut = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.restore();
    let healed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let end = started.elapsed().as_secs_f64();

    let all = seen.lock().expect("lock").clone();
    let burst = WORKERS as usize;
    let limit = (RATE * 1.1).floor() as usize + burst;
    let phases = [
        ("steady", t0, t1),
        ("leader killed and back", killed, t2),
        ("worker 3 cut off", cut, healed),
        ("healed", healed, end),
    ];
    for (what, from, to) in phases {
        let (most, mean) = windows(&all, from, to);
        println!(
            "measured: {what} [{from:.1} s, {to:.1} s): busiest 1 s window {most} requests (limit {limit}), mean {mean:.1} req/s ({:.0} % of the budget)",
            mean / RATE * 100.0
        );
    }
    // The cut-off worker's shards, second by second: its share, then the safe share, then
    // nothing once its guard stops its tasks; the others take its share over once its
    // registration has ended and a lease has passed.
    let mut line = String::new();
    let mut second = cut.floor() - 1.0;
    while second < healed + 3.0 {
        let theirs = all
            .iter()
            .filter(|(t, h)| *t >= second && *t < second + 1.0 && on_third.contains(h))
            .count();
        let (_, rest) = windows(&all, second, second + 1.0);
        line.push_str(&format!(" {:+.0}s:{theirs}/{rest:.0}", second - cut));
        second += 1.0;
    }
    println!("measured: worker 3's shards / all, per second from its cut:{line}");
    let (most, _) = windows(&all, 0.0, end);
    assert!(
        most <= limit,
        "a 1 s window held {most} requests, over {limit}"
    );
    let (_, steady) = windows(&all, t0, t1);
    assert!(
        steady >= RATE * 0.8,
        "steady use {steady:.1} req/s, under 80 % of {RATE}"
    );

    // Acquire latency on a worker, from a task, through the agent's HTTP: 2,000 pairs.
    let (status, _) = create(&follower, "latency-0").await.expect("create");
    assert_eq!(status, 201);
    let file = dir.path().join("latency-0");
    let text = eventually("the latency task's figures", WAIT, || async {
        std::fs::read_to_string(&file).ok()
    })
    .await;
    let mut ms: Vec<f64> = text.lines().filter_map(|l| l.parse().ok()).collect();
    ms.sort_by(f64::total_cmp);
    assert_eq!(ms.len(), 2000);
    println!(
        "measured: acquire round trip from a Python task (debug build): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        quantile(&ms, 1.0)
    );
    workers.clear();
}

/// A request to the agent: route, token, body; the status and problem field it must get.
type Case<'a> = (&'a str, Option<&'a str>, String, u16, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_to_the_agent_get_clear_answers_naming_the_field() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let master = master_process(1, &endpoints, &config, &[]);
    wait_ready(&master.url).await;
    let runs = dir.path().display().to_string();
    let env = [("SITE", "127.0.0.1:9"), ("RUN_DIR", runs.as_str())];
    let _worker = crawler_process(
        Role::Worker,
        (1, free_port()),
        &endpoints,
        &config,
        &env,
        &[],
    );
    wait_workers(&master.url, 1).await;
    assert_eq!(create(&master.url, "probe-0").await.expect("create").0, 201);
    let file = dir.path().join("probe-0");
    let text = eventually("the probe's agent URL and token", WAIT, || async {
        std::fs::read_to_string(&file).ok()
    })
    .await;
    let (url, token) = text.split_once(' ').expect("url and token");
    let post = |path: &str, token: Option<&str>, body: String| {
        let mut request = http()
            .post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let cases: Vec<Case> = vec![
        (
            "/acquire",
            None,
            json!({"domain": "a.test"}).to_string(),
            401,
            None,
        ),
        (
            "/acquire",
            Some("not-a-token"),
            json!({"domain": "a.test"}).to_string(),
            403,
            None,
        ),
        (
            "/acquire",
            Some(token),
            json!({"url": "not a url://x"}).to_string(),
            422,
            Some("url"),
        ),
        (
            "/acquire",
            Some(token),
            json!({"domain": "bad domain"}).to_string(),
            422,
            Some("domain"),
        ),
        (
            "/acquire",
            Some(token),
            json!({"url": "http://a.test/", "domain": "a.test"}).to_string(),
            422,
            Some("url"),
        ),
        (
            "/acquire",
            Some(token),
            json!({"domain": "a.test", "wait_ms": 99_999}).to_string(),
            422,
            Some("wait_ms"),
        ),
        (
            "/acquire",
            Some(token),
            "{not json".to_owned(),
            422,
            Some("body"),
        ),
        ("/acquire", Some(token), "x".repeat(100_000), 413, None),
        (
            "/release",
            Some(token),
            json!({"permit": 12345}).to_string(),
            404,
            None,
        ),
        (
            "/release",
            Some(token),
            json!({"permit": "x"}).to_string(),
            422,
            Some("body"),
        ),
        (
            "/feedback",
            Some(token),
            json!({"domain": "a.test", "status": 700}).to_string(),
            422,
            Some("status"),
        ),
        (
            "/feedback",
            Some(token),
            json!({"domain": "a.test", "crawl_delay_s": -1}).to_string(),
            422,
            Some("crawl_delay_s"),
        ),
        (
            "/feedback",
            Some(token),
            json!({"domain": "a.test", "status": 429}).to_string(),
            204,
            None,
        ),
    ];
    for (path, token, body, status, field) in cases {
        let resp = post(path, token, body.clone()).await.expect("answer");
        let shown: String = body.chars().take(60).collect();
        assert_eq!(resp.status(), status, "{path} {shown}");
        if status >= 400 {
            assert_eq!(
                resp.headers()["content-type"],
                "application/problem+json",
                "{path} {shown}"
            );
            let problem: serde_json::Value = resp.json().await.expect("problem");
            if let Some(field) = field {
                assert_eq!(problem["field"], field, "{path} {shown}: {problem}");
            }
        }
    }
    // A grant, released once; a second release of the same permit is refused.
    let resp = post(
        "/acquire",
        Some(token),
        json!({"domain": "a.test", "wait_ms": 10_000}).to_string(),
    )
    .await
    .expect("acquire");
    let granted: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(granted["granted"], true, "{granted}");
    assert_eq!(granted["domain"], "a.test");
    let permit = granted["permit"].clone();
    let release = json!({"permit": permit}).to_string();
    assert_eq!(
        post("/release", Some(token), release.clone())
            .await
            .expect("release")
            .status(),
        204
    );
    assert_eq!(
        post("/release", Some(token), release)
            .await
            .expect("release")
            .status(),
        404
    );
}

/// A domain's budget is a resource of its own, `/api/v1/domains/{domain}/budget`: PUT sets it,
/// GET reads it, DELETE removes it and a GET after that is a 404, through a follower as
/// through the leader; the domain itself (its view) is always there, showing where its budget
/// comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_budget_is_set_read_and_removed_at_its_own_url() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let (_masters, leader, follower) = leader_and_follower(&config).await;
    let budget = |master: &str| format!("{master}/api/v1/domains/example.org/budget");
    let view = |master: &str| format!("{master}/api/v1/domains/example.org");
    let body = json!({"rate": 5.0, "concurrency": 2});

    assert_eq!(
        request("GET", &budget(&follower), None, &[], None)
            .await
            .status,
        404
    );
    let set = request("PUT", &budget(&follower), None, &[], Some(&body)).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.json()["rate"], 5.0, "{}", set.text);
    let revision = set.headers["x-etcd-revision"].to_str().expect("revision");
    for master in [&leader, &follower] {
        let read = format!("{}?min_revision={revision}", budget(master));
        let got = request("GET", &read, None, &[], None).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_eq!(
            got.json(),
            json!({"rate": 5.0, "concurrency": 2, "scope": "domain"})
        );
    }
    let (status, _, shown) = get_json(&view(&leader)).await.expect("view");
    assert_eq!((status, &shown["source"]), (200, &json!("api")), "{shown}");

    let cleared = request("DELETE", &budget(&follower), None, &[], None).await;
    assert_eq!(cleared.status, 204, "{}", cleared.text);
    for master in [&leader, &follower] {
        let gone = eventually("the budget is gone", WAIT, || async {
            let got = request("GET", &budget(master), None, &[], None).await;
            (got.status != 200).then_some(got)
        })
        .await;
        assert_eq!(gone.status, 404, "{}", gone.text);
        assert_eq!(
            gone.headers["content-type"], "application/problem+json",
            "{}",
            gone.text
        );
    }
    let (status, _, shown) = get_json(&view(&follower)).await.expect("view");
    assert_eq!(
        (status, &shown["source"]),
        (200, &json!("default")),
        "{shown}"
    );
    assert_eq!(
        request("DELETE", &budget(&leader), None, &[], None)
            .await
            .status,
        404
    );
    // The domain's own URL takes no writes.
    for method in ["PUT", "DELETE"] {
        let answer = request(method, &view(&leader), None, &[], Some(&body)).await;
        assert_eq!(answer.status, 405, "{method}: {}", answer.text);
    }
    // Nothing is left in etcd but what the masters keep of themselves.
    let keys = etcd.keys_but_audit("/").await;
    assert!(
        !keys.iter().any(|(k, _)| k.contains("example.org")),
        "{keys:?}"
    );
}
