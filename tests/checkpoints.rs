//! Fenced checkpoints, end to end, with real processes: the example crawler checkpoints its
//! frontier through its worker's task agent; its worker is killed mid-crawl; the task moves and
//! resumes. Pages fetched twice are counted from the demo site's own access log. A stale run's
//! write is refused by etcd after a move, and bad input gets its 4xx. Five trials of each.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const TRIALS: usize = 5;
/// Pages between two checkpoints of the crawl (its `checkpoint-every` label).
const EVERY: usize = 5;
/// Pages each crawl fetches (the front page counts).
const PAGES: usize = 100;

fn worker_lines(dir: &Path, interval: &str) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let stale = dir.join("stale.sh");
    // A run that leaves its agent's URL and secret where the test finds them, then waits.
    std::fs::write(
        &stale,
        "#!/bin/sh\nprintf '%s %s\\n' \"$CRAWLER_AGENT_URL\" \"$CRAWLER_AGENT_TOKEN\" > \"$RUN_FILE_DIR/$CRAWLER_TASK_NAME.$CRAWLER_TASK_EPOCH\"\nexec sleep 600\n",
    )
    .expect("write the runner");
    format!(
        "  stop_grace_ms: 2000\n  lease_margin_ms: 1000\n  checkpoint_interval: {interval}\n  checkpoint_bytes: 4096\n  runners:\n    default: [python3, \"{repo}/scripts/example_crawler.py\", \"{{name}}\"]\n    rules:\n      - tasks: \"stale-*\"\n        command: [sh, \"{}\"]\n\
         politeness:\n  domains:\n    127.0.0.1: {{rate: 1000, concurrency: 16}}\n",
        stale.display()
    )
}

fn worker(id: u32, etcd: &[String], config: &Path, site: &str, dir: &Path) -> Proc {
    let runs = dir.display().to_string();
    crawler_process(
        Role::Worker,
        (id, free_port()),
        etcd,
        config,
        &[("CRAWLER_DEMO_SITE", site), ("RUN_FILE_DIR", &runs)],
        &[],
    )
}

/// The worker that holds `name`, as the master shows it.
async fn holder(master: &str, name: &str) -> Option<String> {
    let (_, _, body) = get_json(&format!("{master}/api/v1/resources/{name}")).await?;
    body["assigned_node"]["id"].as_str().map(str::to_owned)
}

async fn state_of(master: &str, name: &str) -> Option<String> {
    let (_, _, body) = get_json(&format!("{master}/api/v1/resources/{name}")).await?;
    body["status"]["state"].as_str().map(str::to_owned)
}

/// The access log's lines: (unix ms, path, the run's epoch from the crawler's user agent).
fn access(log: &Path) -> Vec<(i64, String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut fields = l.splitn(3, ' ');
            let t = fields.next()?.parse().ok()?;
            let path = fields.next()?.to_owned();
            let epoch = fields.next()?.split("epoch ").nth(1)?.trim_end_matches(')');
            Some((t, path, epoch.to_owned()))
        })
        .collect()
}

async fn logs(master: &str, name: &str) -> String {
    let url = format!("{master}/api/v1/resources/{name}/logs?tail=400");
    match http().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crawl_whose_worker_dies_resumes_from_its_checkpoint_on_another() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fault_config_with(dir.path(), &worker_lines(dir.path(), "200ms"));
    let mut master = master_process(1, &endpoints, &config, &[]);
    let m = master.url.clone();
    wait_ready(&m).await;

    let mut figures = Vec::new();
    for trial in 0..TRIALS {
        // A site of its own for each trial, so that its access log is this crawl's alone.
        let log = dir.path().join(format!("access-{trial}.log"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let site = format!("http://{}/", listener.local_addr().expect("addr"));
        let options = crawler::tools::site::SiteOptions {
            delay: Duration::from_millis(20),
            access_log: Some(log.clone()),
        };
        let served = tokio::spawn(crawler::tools::site::serve(listener, options));
        let mut workers: BTreeMap<String, Proc> = BTreeMap::new();
        let spawned = std::time::Instant::now();
        for id in [1, 2] {
            let w = worker(id, &endpoints, &config, &site, dir.path());
            workers.insert(format!("go.micro.server.worker-{id}"), w);
        }
        wait_workers(&m, 2).await;
        let registered = spawned.elapsed();

        let name = format!("crawl-{trial}");
        let labels = json!({"max-pages": PAGES.to_string(), "delay-ms": "10", "checkpoint-every": EVERY.to_string()});
        let (status, _) = create_with(&m, json!({"name": name, "labels": labels}))
            .await
            .expect("create");
        assert_eq!(status, 201);
        // Killed mid-crawl: a third of the way, once a checkpoint is stored.
        eventually("a third of the crawl, checkpointed", WAIT, || async {
            let stored = get_json(&format!("{m}/api/v1/resources/{name}/checkpoint"))
                .await
                .filter(|(s, _, _)| *s == 200);
            (stored.is_some() && access(&log).len() >= PAGES / 3).then_some(())
        })
        .await;
        let first = holder(&m, &name).await.expect("a holder");
        let killed_ms = crawler::model::status::now_ms();
        workers
            .get(&first)
            .expect("its process")
            .signal(Signal::SIGKILL);
        let second = eventually("the task moves", WAIT, || async {
            holder(&m, &name).await.filter(|h| *h != first)
        })
        .await;
        eventually("the moved crawl completes", WAIT, || async {
            (state_of(&m, &name).await.as_deref() == Some("completed")).then_some(())
        })
        .await;
        let text = logs(&m, &name).await;
        let resumed: usize = text
            .lines()
            .find_map(|l| {
                l.split("resuming from a checkpoint: ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("the new run resumed from a checkpoint:\n{text}"));
        let lines = access(&log);
        // The old run's requests, told by the epoch its crawler sends in its user agent.
        let old_epoch = lines.first().map(|l| l.2.clone()).unwrap_or_default();
        let old = lines.iter().filter(|l| l.2 == old_epoch).count();
        let last_old = lines
            .iter()
            .filter(|l| l.2 == old_epoch)
            .map(|l| l.0)
            .max()
            .unwrap_or(0);
        // From the kill to the new run's first fetch: the lease's expiry, the move and a start.
        let first_new = lines
            .iter()
            .filter(|l| l.2 != old_epoch)
            .map(|l| l.0)
            .min()
            .unwrap_or(0);
        let resumed_after = first_new - killed_ms;
        // At most once: the old run never fetched after the new one began.
        assert!(
            last_old < first_new,
            "the old run fetched at {last_old}, after the new one began at {first_new}"
        );
        let old_after_kill = last_old - killed_ms;
        let distinct: HashSet<&str> = lines.iter().map(|(_, p, _)| p.as_str()).collect();
        let twice = lines.len() - distinct.len();
        let since_checkpoint = old.saturating_sub(resumed);
        // A run's process that is restarted on its worker (its lease not confirmed in time,
        // under load) resumes too, from the newest checkpoint it made: each such restart may
        // fetch again up to a checkpoint interval's pages.
        let restarts = text
            .lines()
            .filter(|l| l.contains("resuming from a checkpoint: "))
            .count()
            .saturating_sub(1);
        let allowed = since_checkpoint + EVERY * restarts;
        println!(
            "trial {trial}: workers registered {registered:?} after their start; {first} killed \
             after {old} fetches (its last {old_after_kill} ms after the kill); {second} resumed \
             from {resumed}, fetching again {resumed_after} ms after the kill (lease TTL 3 s); \
             fetched twice {twice} <= since the checkpoint {since_checkpoint}, plus {EVERY} for \
             each of its {restarts} restarts; {} requests, {} pages",
            lines.len(),
            distinct.len()
        );
        assert!(resumed > 0, "resumed, not started over");
        assert_eq!(distinct.len(), PAGES, "the whole crawl, once");
        assert!(
            twice <= allowed,
            "fetched twice {twice} > fetched since the last checkpoint {since_checkpoint} plus \
             {EVERY} for each of {restarts} restarts; the task's log on {second}:\n{text}"
        );
        figures.push((twice, since_checkpoint));
        // The dead worker returns before the next trial; it and the other stop now.
        drop(workers);
        served.abort();
        let (status, _, _) = get_json(&format!("{m}/api/v1/resources/{name}"))
            .await
            .expect("read");
        assert_eq!(status, 200);
        let deleted = http()
            .delete(format!("{m}/api/v1/resources/{name}"))
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status().as_u16(), 204);
        // The checkpoint went with its resource.
        let (status, _, _) = get_json(&format!("{m}/api/v1/resources/{name}/checkpoint"))
            .await
            .expect("read");
        assert_eq!(status, 404);
        assert!(
            etcd.client()
                .await
                .get(
                    crawler::keys::KeyLayout::default().checkpoint_key(&name),
                    None
                )
                .await
                .expect("get")
                .kvs()
                .is_empty()
        );
        eventually("workers gone", WAIT, || async {
            worker_ids(&m).await.filter(|w| w.is_empty())
        })
        .await;
    }
    println!("fetched twice vs since the last checkpoint, per trial: {figures:?}");
    master.kill();
}

/// The agent's URL and secret the stale runner left for `name` at some epoch, by epoch.
fn run_files(dir: &Path, name: &str) -> BTreeMap<i64, (String, String)> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(epoch) = file.strip_prefix(&format!("{name}.")) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let (Ok(epoch), Some((url, token))) = (epoch.parse(), text.trim().split_once(' ')) {
            found.insert(epoch, (url.to_owned(), token.to_owned()));
        }
    }
    found
}

async fn put(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = http().put(format!("{url}/checkpoint")).body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("the agent answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// etcd, a master and `workers` workers whose `stale-*` tasks leave their agent's URL and
/// secret in `runs` and wait.
struct WaitingRuns {
    etcd: Etcd,
    master: Proc,
    _workers: Vec<Proc>,
    runs: PathBuf,
    _dir: tempfile::TempDir,
}

async fn waiting_runs(interval: &str, workers: u32) -> WaitingRuns {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    let runs: PathBuf = dir.path().join("runs");
    std::fs::create_dir_all(&runs).expect("runs dir");
    let config = fault_config_with(dir.path(), &worker_lines(&runs, interval));
    let master = master_process(1, &endpoints, &config, &[]);
    wait_ready(&master.url).await;
    let workers: Vec<Proc> = (1..=workers)
        .map(|id| worker(id, &endpoints, &config, "http://127.0.0.1:9/", &runs))
        .collect();
    wait_workers(&master.url, workers.len()).await;
    WaitingRuns {
        etcd,
        master,
        _workers: workers,
        runs,
        _dir: dir,
    }
}

/// The agent's URL and secret of `name`'s run, once it runs.
async fn running(c: &WaitingRuns, name: &str) -> (String, i64, (String, String)) {
    let m = c.master.url.as_str();
    eventually("the run is up", WAIT, || async {
        let holder = holder(m, name).await?;
        let (_, _, body) = get_json(&format!("{m}/api/v1/resources/{name}")).await?;
        let epoch = body["status"]["epoch"].as_i64()?;
        let run = run_files(&c.runs, name).remove(&epoch)?;
        (body["status"]["state"] == "running").then_some((holder, epoch, run))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_checkpointing_in_a_tight_loop_is_coalesced() {
    let c = waiting_runs("200ms", 1).await;
    let m = c.master.url.clone();
    assert_eq!(create(&m, "stale-loop").await.expect("create").0, 201);
    let (_, _, (url, token)) = running(&c, "stale-loop").await;
    let started = std::time::Instant::now();
    let loops: Vec<_> = (0..16)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                let (mut stored, mut superseded, mut n) = (0u32, 0u32, 0u32);
                while started.elapsed() < Duration::from_secs(2) {
                    n += 1;
                    let (status, answer) = put(&url, Some(&token), format!("{i}-{n}").into()).await;
                    assert_eq!(status, 200, "{answer}");
                    stored += 1;
                    superseded += u32::from(answer["superseded"] == true);
                }
                (stored, superseded)
            })
        })
        .collect();
    let (mut stored, mut superseded) = (0, 0);
    for l in loops {
        let (s, x) = l.await.expect("a loop");
        stored += s;
        superseded += x;
    }
    let elapsed = started.elapsed();
    let got = c
        .etcd
        .client()
        .await
        .get(
            crawler::keys::KeyLayout::default().checkpoint_key("stale-loop"),
            None,
        )
        .await
        .expect("get");
    let writes = got.kvs().first().map_or(0, |kv| kv.version());
    let bound = (elapsed.as_secs_f64() / 0.2).ceil() as i64 + 1;
    println!(
        "measured: 16 loops put {stored} checkpoints in {elapsed:?} ({superseded} superseded \
         before their write); etcd took {writes} writes (interval 200 ms: at most {bound})"
    );
    assert!(
        writes >= 2 && writes <= bound,
        "{writes} writes, bound {bound}"
    );
    assert!(
        u64::from(stored) > 4 * writes as u64,
        "coalesced: {stored} puts, {writes} writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_runs_write_is_refused_after_its_task_moves() {
    // Writes 2 s apart, so a second write waits while the task moves.
    let c = waiting_runs("2s", 2).await;
    let (m, runs) = (c.master.url.clone(), c.runs.clone());
    let (status, _) = create(&m, "stale-1").await.expect("create");
    assert_eq!(status, 201);

    for trial in 0..TRIALS {
        let (holder_id, epoch, (url, token)) = running(&c, "stale-1").await;
        // The run knows itself by its secret.
        let me: Value = http()
            .get(format!("{url}/run"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (&me["task"], &me["epoch"]),
            (&json!("stale-1"), &json!(epoch)),
            "{me}"
        );
        // Bad input first: no token, another's token, too many bytes.
        assert_eq!(put(&url, None, b"x".to_vec()).await.0, 401);
        assert_eq!(put(&url, Some("0000"), b"x".to_vec()).await.0, 403);
        let (status, problem) = put(&url, Some(&token), vec![b'x'; 5000]).await;
        assert_eq!(status, 413, "{problem}");
        assert_eq!(problem["status"], 413, "problem+json: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains("4096"),
            "{problem}"
        );

        let kept = format!("kept by trial {trial}").into_bytes();
        let (status, stored) = put(&url, Some(&token), kept.clone()).await;
        assert_eq!(status, 200, "{stored}");
        // The next write waits for the interval; the task moves meanwhile.
        let late = tokio::spawn({
            let (url, token) = (url.clone(), token.clone());
            async move { put(&url, Some(&token), b"stale".to_vec()).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let drained = http()
            .post(format!("{m}/api/v1/workers/{holder_id}/drain"))
            .send()
            .await
            .expect("drain");
        assert_eq!(drained.status().as_u16(), 200);
        let (status, refused) = late.await.expect("the late write");
        assert_eq!(status, 409, "trial {trial}: {refused}");
        // The new run starts with what the old one stored before the move.
        let to = eventually("the task moves", WAIT, || async {
            holder(&m, "stale-1").await.filter(|h| *h != holder_id)
        })
        .await;
        let (_, _, view) = get_json(&format!("{m}/api/v1/resources/stale-1/checkpoint"))
            .await
            .expect("checkpoint");
        assert_eq!(view["worker"], holder_id.as_str(), "{view}");
        assert_eq!(view["epoch"], epoch, "{view}");
        let data = base64_decode(view["data"].as_str().expect("data"));
        assert_eq!(data, kept, "{view}");
        // The old secret opens nothing, here or there: 409 while its process stops, 403 once
        // it has ended.
        eventually("the old run ends", WAIT, || async {
            let (status, _) = put(&url, Some(&token), b"x".to_vec()).await;
            assert!(status == 409 || status == 403, "{status}");
            (status == 403).then_some(())
        })
        .await;
        let new_run = eventually("the new run is up", WAIT, || async {
            run_files(&runs, "stale-1")
                .into_iter()
                .find(|(e, _)| *e > epoch)
        })
        .await;
        assert_eq!(put(&new_run.1.0, Some(&token), b"x".to_vec()).await.0, 403);
        println!(
            "trial {trial}: {holder_id} -> {to}: the stale write got 409; the checkpoint is the old run's last stored one"
        );
        let uncordoned = http()
            .post(format!("{m}/api/v1/workers/{holder_id}/uncordon"))
            .send()
            .await
            .expect("uncordon");
        assert_eq!(uncordoned.status().as_u16(), 200);
    }
    // An operator clears the checkpoint; clearing again changes nothing; a task that is not
    // there has none to clear.
    assert_eq!(clear(&m, "stale-1").await, 204);
    assert_eq!(clear(&m, "stale-1").await, 204);
    let (status, _, _) = get_json(&format!("{m}/api/v1/resources/stale-1/checkpoint"))
        .await
        .expect("read");
    assert_eq!(status, 404);
    assert_eq!(clear(&m, "no-such-task").await, 404);
}

/// `DELETE .../checkpoint`'s status.
async fn clear(master: &str, name: &str) -> u16 {
    http()
        .delete(format!("{master}/api/v1/resources/{name}/checkpoint"))
        .send()
        .await
        .expect("clear")
        .status()
        .as_u16()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
