//! `crawler ctl` as a user runs it, against a real cluster (etcd, two masters, two workers, all
//! processes): every command, every output format parsed back, the exit codes, and a master's
//! failover under `logs -f` and `get --watch`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> PathBuf {
    let worker = format!(
        "  lease_margin_ms: 1000\n  data_dir: {}\n  runners:\n    rules:\n      - tasks: \"once-*\"\n        \
         command: [sh, -c, \"echo ran > $CRAWLER_SUMMARY_FILE\"]\n      - tasks: \"tick-*\"\n        \
         command: [sh, -c, \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done\"]\n    \
         default: [sh, -c, \"echo hello from $CRAWLER_TASK_NAME; exec sleep 600\"]\n",
        dir.join("data").display()
    );
    fault_config_with(dir, &worker)
}

/// What one `crawler ctl` run printed, and its exit code.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `crawler ctl --server <servers> <args>`.
async fn ctl(servers: &str, args: &[&str]) -> Ran {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["ctl", "--server", servers])
        .args(args)
        .env_remove("CRAWLER_SERVER")
        .env_remove("CRAWLER_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("crawler ctl");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `ctl`, expecting exit code `code`; returns stdout.
async fn expect(servers: &str, args: &[&str], code: i32) -> String {
    let ran = ctl(servers, args).await;
    assert_eq!(
        ran.code, code,
        "crawler ctl {args:?}\nstdout: {}\nstderr: {}",
        ran.stdout, ran.stderr
    );
    ran.stdout
}

/// Runs `ctl` until it succeeds with an output that satisfies `ok`: a follower's cache reflects
/// a write a few milliseconds after the leader acknowledged it.
async fn until(servers: &str, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
    let what = format!("crawler ctl {args:?}");
    eventually(&what, WAIT, || async {
        let ran = ctl(servers, args).await;
        (ran.code == 0 && ok(&ran.stdout)).then_some(ran.stdout)
    })
    .await
}

/// A table's rows (header first), split on whitespace.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The names in the first column of a table, header left out.
fn first_column(table: &str) -> Vec<String> {
    rows(table)
        .into_iter()
        .skip(1)
        .map(|r| r[0].clone())
        .collect()
}

#[tokio::test]
async fn every_command_works_as_documented_with_its_exit_code() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config(dir.path());
    let endpoints = vec![etcd.url.clone()];
    let m1 = master_process(1, &endpoints, &config, &[]);
    let m2 = master_process(2, &endpoints, &config, &[]);
    let _w1 = worker_process(1, &endpoints, &config);
    let _w2 = worker_process(2, &endpoints, &config);
    ready_leader(&[&m1.url, &m2.url], WAIT).await;
    wait_workers(&m1.url, 2).await;
    wait_workers(&m2.url, 2).await;
    // A dead address first: the next one is tried.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let s = format!("{dead},{}", m2.url);
    let s = s.as_str();
    let ids = worker_ids(&m1.url).await.expect("worker ids");

    // get workers, in every format.
    let json: Value =
        serde_json::from_str(&expect(s, &["get", "workers", "-o", "json"], 0).await).expect("json");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(2), "{json}");
    let yaml: Value =
        serde_yaml_ng::from_str(&expect(s, &["get", "workers", "-o", "yaml"], 0).await)
            .expect("yaml");
    assert_eq!(yaml, json, "YAML and JSON carry the same objects");
    let table = expect(s, &["get", "workers"], 0).await;
    assert_eq!(
        rows(&table)[0],
        ["NAME", "STATE", "LOAD", "CAPACITY", "ADDRESS"]
    );
    assert_eq!(first_column(&table), ids);
    let wide = expect(s, &["get", "w", "-o", "wide"], 0).await;
    assert_eq!(rows(&wide)[0].len(), 7, "{wide}");
    let one: Value =
        serde_json::from_str(&expect(s, &["get", "worker", &ids[0], "-o", "json"], 0).await)
            .expect("one worker");
    assert_eq!(one["id"], ids[0].as_str());

    // create, and a second create of the same name: the API's problem, exit 1.
    assert!(
        expect(s, &["create", "ok-1"], 0)
            .await
            .contains("resource/ok-1 created")
    );
    let again = ctl(s, &["create", "ok-1"]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    expect(s, &["create", "ok-2"], 0).await;
    // Through the follower, once its cache has both.
    let both = until(s, &["get", "resources"], |t| {
        first_column(t) == ["ok-1", "ok-2"]
    })
    .await;
    assert_eq!(
        rows(&both)[0],
        ["NAME", "STATE", "WORKER", "RESTARTS", "AGE"]
    );
    let got: Value =
        serde_json::from_str(&expect(s, &["get", "resources", "ok-1", "-o", "json"], 0).await)
            .expect("resource");
    assert_eq!(got["name"], "ok-1");
    let missing = ctl(s, &["get", "resources", "nothing-here"]).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    // label: set, unchanged (no write, exit 0), select, remove.
    expect(s, &["label", "ok-1", "team=a", "tier=gold"], 0).await;
    until(s, &["get", "r", "ok-1", "-o", "wide"], |t| {
        t.contains("team=a") && t.contains("tier=gold")
    })
    .await;
    assert!(
        expect(s, &["label", "ok-1", "team=a"], 0)
            .await
            .contains("unchanged")
    );
    let selected = expect(s, &["get", "r", "--selector", "team=a"], 0).await;
    assert_eq!(first_column(&selected), ["ok-1"]);
    let others = expect(s, &["get", "r", "-l", "!team", "-o", "json"], 0).await;
    let others: Value = serde_json::from_str(&others).expect("json");
    assert_eq!(others["items"][0]["name"], "ok-2", "{others}");
    expect(s, &["label", "ok-1", "tier-"], 0).await;
    let yaml = until(s, &["get", "r", "ok-1", "-o", "yaml"], |t| {
        !t.contains("tier")
    })
    .await;
    let yaml: Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
    assert_eq!(yaml["labels"], serde_json::json!({"team": "a"}));

    // Both run: --state, describe, logs, restart.
    eventually("both tasks run", WAIT, || async {
        let table = ctl(s, &["get", "r", "--state", "running"]).await.stdout;
        (first_column(&table) == ["ok-1", "ok-2"]).then_some(())
    })
    .await;
    let described = expect(s, &["describe", "resource", "ok-1"], 0).await;
    for part in [
        "Name:        ok-1",
        "Labels:      team=a",
        "Status:      running",
        "created",
    ] {
        assert!(described.contains(part), "{part}: {described}");
    }
    eventually("the task's output", WAIT, || async {
        let log = ctl(s, &["logs", "ok-1", "--tail", "5"]).await.stdout;
        log.contains("hello from ok-1").then_some(())
    })
    .await;
    expect(s, &["restart", "ok-1"], 0).await;
    expect(s, &["restart", "nothing-here"], 3).await;

    // A checkpoint, as a worker stores it: shown, printed as it is, cleared.
    let header = crawler::model::checkpoint::Header {
        worker: ids[0].clone(),
        epoch: 7,
        written_ms: 1_700_000_000_000,
    };
    let stored = crawler::model::checkpoint::Checkpoint::encode(&header, b"frontier\n\x00bytes");
    etcd.client()
        .await
        .put(
            crawler::keys::KeyLayout::default().checkpoint_key("ok-1"),
            stored,
            None,
        )
        .await
        .expect("put a checkpoint");
    let shown = expect(s, &["checkpoint", "ok-1"], 0).await;
    assert!(
        shown.contains(&ids[0]) && shown.contains("Epoch:       7"),
        "{shown}"
    );
    assert!(shown.contains("Size:        15 bytes"), "{shown}");
    assert_eq!(
        expect(s, &["checkpoint", "ok-1", "--raw"], 0).await,
        "frontier\n\u{0}bytes"
    );
    assert!(
        expect(s, &["checkpoint", "ok-1", "--clear"], 0)
            .await
            .contains("checkpoint of resource/ok-1 cleared")
    );
    expect(s, &["checkpoint", "ok-1"], 3).await;
    expect(s, &["checkpoint", "nothing-here", "--clear"], 3).await;

    // cordon and uncordon: idempotent; an unknown worker is exit 3.
    let node = ids[0].as_str();
    assert!(expect(s, &["cordon", node], 0).await.contains("cordoned"));
    until(s, &["get", "workers", node], |t| {
        rows(t)[1][1] == "cordoned"
    })
    .await;
    assert!(expect(s, &["cordon", node], 0).await.contains("unchanged"));
    assert!(
        expect(s, &["uncordon", node], 0)
            .await
            .contains("uncordoned")
    );
    until(s, &["get", "workers", node], |t| rows(t)[1][1] == "ready").await;
    assert!(
        expect(s, &["uncordon", node], 0)
            .await
            .contains("unchanged")
    );
    expect(s, &["cordon", "no-such-worker"], 3).await;

    // preview: a plan, as a table and as JSON; an unknown worker is the API's 409, exit 1.
    let plan: Value =
        serde_json::from_str(&expect(s, &["preview", "--drain", node, "-o", "json"], 0).await)
            .expect("plan");
    let load = one_load(s, node).await;
    assert_eq!(plan["total"].as_u64(), Some(load), "{plan}");
    let table = expect(s, &["preview", "--drain", node], 0).await;
    assert!(
        table.contains(&format!("{load} moves, 0 unplaced")),
        "{table}"
    );
    let unknown = ctl(s, &["preview", "--remove", "no-such-worker"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("No such worker"),
        "{}",
        unknown.stderr
    );

    // cluster and thaw.
    let cluster: Value =
        serde_json::from_str(&expect(s, &["cluster", "-o", "json"], 0).await).expect("cluster");
    assert_eq!(cluster["masters"].as_array().map(Vec::len), Some(2));
    let table = expect(s, &["cluster"], 0).await;
    assert_eq!(table.matches("leader").count(), 1, "{table}");
    let yaml: Value =
        serde_yaml_ng::from_str(&expect(s, &["cluster", "-o", "yaml"], 0).await).expect("yaml");
    assert_eq!(yaml["leader"], cluster["leader"]);
    assert!(expect(s, &["thaw"], 0).await.contains("unchanged"));

    // drain --wait: progress lines until the worker holds nothing.
    let drained = expect(s, &["drain", node, "--deadline", "1s", "--wait"], 0).await;
    assert!(
        drained.contains(&format!("worker/{node} drained")),
        "{drained}"
    );
    assert_eq!(one_load(s, node).await, 0);
    expect(s, &["uncordon", node], 0).await;

    // delete: exit 3 the second time, 0 with --ignore-not-found.
    expect(s, &["delete", "ok-2"], 0).await;
    expect(s, &["delete", "ok-2"], 3).await;
    expect(s, &["delete", "ok-2", "--ignore-not-found"], 0).await;

    // Usage errors are exit 2; completions come from clap.
    for args in [
        &["get", "bogus"][..],
        &["label", "ok-1", "novalue"],
        &["get", "r", "--selector", "a b"],
        &["get", "r", "ok-1", "--watch"],
        &["logs", "ok-1", "--tail", "0"],
    ] {
        expect(s, args, 2).await;
    }
    // A recurring task: labels and a schedule at creation, its runs, suspend and resume.
    let created = expect(
        s,
        &["create", "once-1", "--label", "site=news", "--every", "1s"],
        0,
    )
    .await;
    assert!(created.contains("resource/once-1 created"), "{created}");
    until(s, &["runs", "once-1"], |t| {
        t.contains("scheduled") && t.contains("completed") && t.contains("ran")
    })
    .await;
    assert!(
        expect(s, &["suspend", "once-1"], 0)
            .await
            .contains("suspended")
    );
    assert!(
        expect(s, &["suspend", "once-1"], 0)
            .await
            .contains("unchanged")
    );
    let wide = expect(s, &["get", "r", "once-1", "-o", "wide"], 0).await;
    assert!(
        wide.contains("every 1s (suspended)") && wide.contains("site=news"),
        "{wide}"
    );
    assert!(
        expect(s, &["resume", "once-1"], 0)
            .await
            .contains("resumed")
    );
    let bad = ctl(s, &["create", "bad-1", "--every", "0s"]).await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("schedule.every"), "{}", bad.stderr);
    assert_eq!(
        ctl(s, &["create", "bad-2", "--time-zone", "UTC"])
            .await
            .code,
        2
    );
    expect(s, &["delete", "once-1"], 0).await;

    let bash = expect(s, &["completion", "bash"], 0).await;
    assert!(bash.contains("ctl") && bash.contains("complete"), "{bash}");
    // No master answers: exit 1, naming what to set.
    let nobody = ctl(&dead, &["get", "workers"]).await;
    assert_eq!(nobody.code, 1);
    assert!(
        nobody.stderr.contains("CRAWLER_SERVER"),
        "{}",
        nobody.stderr
    );
    // CRAWLER_SERVER is read when --server is not given.
    let from_env = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["ctl", "get", "workers", "-o", "json"])
        .env("CRAWLER_SERVER", &m1.url)
        .output()
        .await
        .expect("ctl");
    assert!(from_env.status.success());
}

async fn one_load(servers: &str, node: &str) -> u64 {
    let one: Value =
        serde_json::from_str(&expect(servers, &["get", "worker", node, "-o", "json"], 0).await)
            .expect("worker");
    one["load"].as_u64().expect("load")
}

/// Lines a child prints, as they come.
fn collect_lines(child: &mut tokio::process::Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

fn following(servers: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["ctl", "--server", servers])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("crawler ctl")
}

/// The tick numbers among `lines`.
fn ticks(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn logs_follow_and_get_watch_carry_on_across_a_masters_death() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config(dir.path());
    let endpoints = vec![etcd.url.clone()];
    let mut m1 = master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&m1.url], WAIT).await;
    let m2 = master_process(2, &endpoints, &config, &[]);
    let _w1 = worker_process(1, &endpoints, &config);
    wait_workers(&m1.url, 1).await;
    wait_ready(&m2.url).await;
    let servers = format!("{},{}", m1.url, m2.url);
    assert_eq!(create(&m1.url, "tick-1").await.expect("create").0, 201);
    eventually("the task ticks", WAIT, || async {
        let log = ctl(&servers, &["logs", "tick-1", "--tail", "1"])
            .await
            .stdout;
        (!ticks(&[log]).is_empty()).then_some(())
    })
    .await;

    // Both follow through master 1, the first server.
    let mut logs = following(&servers, &["logs", "tick-1", "-f", "--tail", "5"]);
    let log_lines = collect_lines(&mut logs);
    let mut watch = following(&servers, &["get", "resources", "--watch", "-o", "json"]);
    let watch_lines = collect_lines(&mut watch);
    eventually("both print", WAIT, || async {
        let seen = ticks(&log_lines.lock().expect("lines")).len();
        let listed = !watch_lines.lock().expect("lines").is_empty();
        (seen >= 10 && listed).then_some(())
    })
    .await;
    let before = ticks(&log_lines.lock().expect("lines")).len();
    m1.kill();
    // Written while the followers move to master 2 (once it leads).
    eventually("a create through master 2", WAIT, || async {
        let (status, _) = create(&m2.url, "during-failover").await?;
        // 409: an earlier try was written though its answer was lost.
        matches!(status, 201 | 409).then_some(())
    })
    .await;
    eventually("the watch shows the create", WAIT, || async {
        let lines = watch_lines.lock().expect("lines").clone();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["object"]["name"] == "during-failover")
            .then_some(())
    })
    .await;
    let goes_on = tokio::time::timeout(WAIT, async {
        while ticks(&log_lines.lock().expect("lines")).len() < before + 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        goes_on.is_ok(),
        "the log stopped at the failover: {:?}",
        log_lines.lock().expect("lines")
    );
    let seen = ticks(&log_lines.lock().expect("lines"));
    println!(
        "measured: logs -f across a master's death: {} ticks, {} before it",
        seen.len(),
        before
    );
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "no tick lost or repeated across the failover: {seen:?}"
        );
    }
    let _ = logs.kill().await;
    let _ = watch.kill().await;
}

#[tokio::test]
async fn the_token_comes_from_the_flag_or_the_environment_and_a_wrong_one_is_the_apis_401() {
    let etcd = Etcd::start().await;
    let mut config = test_config(std::slice::from_ref(&etcd.url));
    config.auth.tokens = vec!["s3cret".into()];
    config.auth.protect_reads = true;
    let master = start_master(config, 1).await;
    wait_ready(&master.url).await;
    let s = master.url.as_str();
    let refused = ctl(s, &["get", "workers"]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("Unauthorized"),
        "{}",
        refused.stderr
    );
    let wrong = ctl(s, &["--token", "guess", "create", "t-1"]).await;
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("Unauthorized"), "{}", wrong.stderr);
    // Once this master leads (its take-over may still run), the right token creates.
    eventually("a create with the token", WAIT, || async {
        (ctl(s, &["--token", "s3cret", "create", "t-1"]).await.code == 0).then_some(())
    })
    .await;
    let from_env = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["ctl", "--server", s, "get", "resources", "-o", "json"])
        .env("CRAWLER_TOKEN", "s3cret")
        .output()
        .await
        .expect("ctl");
    assert!(from_env.status.success());
    let listed: Value = serde_json::from_slice(&from_env.stdout).expect("json");
    assert_eq!(listed["items"][0]["name"], "t-1");
    // Following with no token is refused at once, not retried for ever.
    for args in [&["logs", "t-1", "-f"][..], &["get", "r", "--watch"]] {
        let refused = tokio::time::timeout(WAIT, ctl(s, args))
            .await
            .expect("a refused follow ends");
        assert_eq!(refused.code, 1, "{args:?}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("Unauthorized"),
            "{}",
            refused.stderr
        );
    }
}
