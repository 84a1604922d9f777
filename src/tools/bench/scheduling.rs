//! Scenario 8: the scheduling policy at work, with worker processes: how long the storm guard
//! takes to decide (against the master's own cache propagation), drain throughput (against the
//! configured rate, and past a deadline with no rate), rebalancing after a divergence (against
//! the bound its churn limit sets), and history reads (against a cached read).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client::Client;
use serde_json::{Value, json};

use super::harness::{create, http_client, is_ready_leader, wait_until};
use super::report::{Report, ms, rate};
use nix::sys::signal::Signal;

use crate::tools::member;
use crate::tools::procs::{self, Proc, Scratch, ToolError};

const WAIT: Duration = Duration::from_secs(60);

fn policy_config(dir: &Path, rebalance_moves: usize) -> Result<std::path::PathBuf, ToolError> {
    let path = dir.join(format!("policy-{rebalance_moves}.yaml"));
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 2\nworker:\n  lease_ttl_secs: 3\n\
             scheduling:\n  reassign_after: 2s\n  storm_fraction: 0.5\n  storm_window: 30s\n  \
             reassign_rate: 100\n  rebalance_max_moves: {rebalance_moves}\n  rebalance_interval: 1s\n  \
             min_runtime: 0s\nlog:\n  level: error\n"
        ),
    )?;
    Ok(path)
}

fn worker(id: u32, etcd: &str, config: &Path) -> Result<Proc, ToolError> {
    procs::worker_on(id, procs::free_port()?, etcd, config, Stdio::null(), &[])
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    match client.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> bool {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Loads per worker id, as the master lists them.
async fn loads(client: &reqwest::Client, master: &str) -> Vec<(String, u64)> {
    get(client, &format!("{master}/api/v1/workers")).await["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|w| {
                    (
                        w["id"].as_str().unwrap_or("").to_owned(),
                        w["load"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /api/v1/workers/<node(id)>/<what>` with `body`.
async fn operate(client: &reqwest::Client, master: &str, id: u32, what: &str, body: Value) -> bool {
    post(
        client,
        &format!("{master}/api/v1/workers/{}/{what}", node(id)),
        body,
    )
    .await
}

fn node(id: u32) -> String {
    format!("go.micro.server.worker-{id}")
}

fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

pub(super) async fn scheduling(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (trials, tasks): (u32, usize) = if q { (1, 60) } else { (5, 500) };
    let scratch = Scratch::new("scheduling")?;
    let etcd = member::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let limit = 50;
    // Rebalancing stays off until its own part, so that it cannot help the drains.
    let config = policy_config(&scratch.0, 0)?;
    let client = http_client(8)?;
    let master = procs::master(1, &etcd.url, &config)?;
    let m = master.url.clone();
    wait_until("the master to lead", WAIT, || is_ready_leader(&client, &m)).await?;

    // The storm guard's decision: two of three workers SIGKILLed at once, from the moment
    // etcd dropped the second registration to the freeze showing on /cluster; the baseline is
    // the same master's workers cache showing them gone.
    let _survivor = worker(100, &etcd.url, &config)?;
    let (mut decisions, mut propagations) = (Vec::new(), Vec::new());
    for t in 0..trials {
        let ids = [101 + 2 * t, 102 + 2 * t];
        let mut pair = [
            worker(ids[0], &etcd.url, &config)?,
            worker(ids[1], &etcd.url, &config)?,
        ];
        wait_until("three workers", WAIT, || async {
            loads(&client, &m).await.len() == 3
        })
        .await?;
        for p in &pair {
            p.signal(Signal::SIGKILL);
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("/micro/registry/go.micro.server.worker/{}", node(*id)))
            .collect();
        let mut kv = raw.kv_client();
        wait_until("the registrations to expire", WAIT, || {
            let mut kv = kv.clone();
            let keys = keys.clone();
            async move {
                let mut gone = true;
                for k in keys {
                    gone &= kv.get(k, None).await.is_ok_and(|r| r.kvs().is_empty());
                }
                gone
            }
        })
        .await?;
        let gone = Instant::now();
        let (mut frozen, mut listed) = (None, None);
        while frozen.is_none() || listed.is_none() {
            if gone.elapsed() > WAIT {
                return Err(ToolError::Setup("the storm guard never froze".into()));
            }
            if frozen.is_none()
                && get(&client, &format!("{m}/api/v1/cluster")).await["scheduling"]["frozen"]
                    == true
            {
                frozen = Some(gone.elapsed());
            }
            if listed.is_none() && loads(&client, &m).await.len() == 1 {
                listed = Some(gone.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        decisions.extend(frozen);
        propagations.extend(listed);
        if !post(&client, &format!("{m}/api/v1/cluster/thaw"), json!({})).await {
            return Err(ToolError::Setup("thaw failed".into()));
        }
        for p in &mut pair {
            p.kill();
        }
        kv.get("/", None).await?;
    }
    let (d50, dmax) = median_max(decisions);
    let (p50, pmax) = median_max(propagations);
    report.add(
        "8 scheduling",
        format!("storm freeze decision, median/max of {trials}"),
        format!("{}/{}", ms(d50), ms(dmax)),
        format!("cache {}/{}", ms(p50), ms(pmax)),
        format!("{:.1}x", d50.as_secs_f64() / p50.as_secs_f64().max(1e-6)),
        "< 100 ms after etcd",
        Some(dmax < Duration::from_millis(100)),
    );

    // Drains: `tasks` on one worker, drained at the configured 100/s; then drained again past a
    // deadline of 0 s, which moves everything with no rate.
    let a = worker(1, &etcd.url, &config)?;
    wait_until("worker 1", WAIT, || async {
        loads(&client, &m).await.len() == 2
    })
    .await?;
    post(
        &client,
        &format!("{m}/api/v1/workers/{}/cordon", node(100)),
        json!({}),
    )
    .await;
    for i in 0..tasks {
        create(&client, &m, &format!("fleet-{i:04}")).await;
    }
    post(
        &client,
        &format!("{m}/api/v1/workers/{}/uncordon", node(100)),
        json!({}),
    )
    .await;
    let _b = worker(2, &etcd.url, &config)?;
    wait_until("worker 2", WAIT, || async {
        loads(&client, &m).await.len() == 3
    })
    .await?;
    let held = |who: String| {
        let client = client.clone();
        let m = m.clone();
        async move {
            loads(&client, &m)
                .await
                .iter()
                .find(|(id, _)| *id == who)
                .map_or(0, |(_, l)| *l)
        }
    };
    let started = Instant::now();
    operate(&client, &m, 1, "drain", json!({})).await;
    wait_until("the drain at the rate", WAIT, || async {
        held(node(1)).await == 0
    })
    .await?;
    let at_rate = tasks as f64 / started.elapsed().as_secs_f64();
    report.add(
        "8 scheduling",
        format!("drain {tasks} tasks, reassign_rate 100/s"),
        rate(at_rate),
        rate(100.0),
        format!("{:.2}x", at_rate / 100.0),
        ">= 0.9x the rate, bucket of 1 s",
        Some(at_rate >= 90.0),
    );
    // Everything sits on workers 2 and 100 now; drain worker 2 past its deadline.
    let on_b = held(node(2)).await;
    let started = Instant::now();
    operate(&client, &m, 2, "drain", json!({"deadline": "0s"})).await;
    wait_until("the drain past its deadline", WAIT, || async {
        held(node(2)).await == 0
    })
    .await?;
    let unlimited = on_b as f64 / started.elapsed().as_secs_f64();
    report.add(
        "8 scheduling",
        format!("drain {on_b} tasks past the deadline (no rate)"),
        rate(unlimited),
        rate(at_rate),
        format!("{:.1}x", unlimited / at_rate),
        "",
        None,
    );

    // Rebalancing: all tasks on worker 100; workers 1 and 2 uncordoned; a master whose policy
    // rebalances takes over and finds the loads diverged past the threshold. Bound:
    // ceil(moves / limit) rounds, one per 1 s interval, the first at once.
    for id in [1, 2] {
        operate(&client, &m, id, "uncordon", json!({})).await;
    }
    let rebalancing = policy_config(&scratch.0, limit)?;
    let next = procs::master(2, &etcd.url, &rebalancing)?;
    let n = next.url.clone();
    wait_until("the second master", WAIT, || {
        super::harness::is_ready(&client, &n)
    })
    .await?;
    master.signal(Signal::SIGTERM);
    wait_until("the second master to lead", WAIT, || {
        is_ready_leader(&client, &n)
    })
    .await?;
    let m = n;
    let started = Instant::now();
    wait_until("the spread to converge", WAIT, || async {
        let l: Vec<u64> = loads(&client, &m).await.iter().map(|(_, l)| *l).collect();
        l.len() == 3 && l.iter().max().unwrap_or(&0) - l.iter().min().unwrap_or(&0) <= 1
    })
    .await?;
    let converged = started.elapsed();
    let moves = tasks - tasks.div_ceil(3);
    let bound = Duration::from_secs((moves.div_ceil(limit) - 1) as u64);
    report.add(
        "8 scheduling",
        format!("rebalance {moves} moves, {limit} per 1 s"),
        ms(converged),
        format!("bound {}", ms(bound)),
        format!(
            "{:.2}x",
            converged.as_secs_f64() / bound.as_secs_f64().max(1e-6)
        ),
        "<= 1.2x the churn bound",
        Some(converged.as_secs_f64() <= 1.2 * bound.as_secs_f64().max(1.0)),
    );

    // History reads (etcd, per request) against cached reads of the same resources.
    let (mut history, mut cached) = (Vec::new(), Vec::new());
    for i in 0..tasks {
        let name = format!("fleet-{i:04}");
        let t = Instant::now();
        let h = get(&client, &format!("{m}/api/v1/resources/{name}/history")).await;
        history.push(t.elapsed());
        let t = Instant::now();
        get(&client, &format!("{m}/api/v1/resources/{name}")).await;
        cached.push(t.elapsed());
        if h["items"].as_array().is_none_or(Vec::is_empty) {
            return Err(ToolError::Setup(format!("{name} has no history")));
        }
    }
    history.sort();
    cached.sort();
    let p99 = |v: &[Duration]| v[(v.len() * 99 / 100).min(v.len() - 1)];
    report.add(
        "8 scheduling",
        format!("history read p50/p99, {tasks} resources"),
        format!("{}/{}", ms(history[history.len() / 2]), ms(p99(&history))),
        format!("get {}/{}", ms(cached[cached.len() / 2]), ms(p99(&cached))),
        format!(
            "{:.1}x",
            history[history.len() / 2].as_secs_f64() / cached[cached.len() / 2].as_secs_f64()
        ),
        "p99 < 10 ms",
        Some(p99(&history) < Duration::from_millis(10)),
    );
    drop(a);
    Ok(())
}
