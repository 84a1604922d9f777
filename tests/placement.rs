//! Where tasks may run, against real etcd, an in-process master and worker processes started
//! with `--label` as an operator starts them: selectors, a region that dies and whose tasks wait
//! rather than move elsewhere, a worker that comes with the missing label, dedicated workers,
//! priorities with preemption off and on, and bad placements.

use std::time::Duration;

use crate::support::*;
use crawler::config::Config;
use crawler::tools::procs::{Proc, Role};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn worker_id(n: u32) -> String {
    format!("go.micro.server.worker-{n}")
}

fn policy(endpoints: &[String], preemption: bool) -> Config {
    let mut config = test_config(endpoints);
    config.scheduling.reassign_after = Duration::from_secs(2);
    config.scheduling.preemption = preemption;
    config
}

/// A worker process with `labels` given as `--label` flags.
fn labelled(id: u32, etcd: &[String], config: &std::path::Path, labels: &[&str]) -> Proc {
    let mut args = Vec::new();
    for l in labels {
        args.extend(["--label", l]);
    }
    crawler_process(Role::Worker, (id, free_port()), etcd, config, &[], &args)
}

async fn resource(master: &str, name: &str) -> Value {
    let (status, _, body) = get_json(&format!("{master}/api/v1/resources/{name}"))
        .await
        .expect("get");
    assert_eq!(status, 200, "{body}");
    body
}

fn on(r: &Value) -> Option<String> {
    r["assigned_node"]["id"].as_str().map(str::to_owned)
}

async fn create_placed(master: &str, name: &str, placement: Value) -> Value {
    let (status, body) = create_with(master, json!({"name": name, "placement": placement}))
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    body
}

/// Waits until resource `name` waits for the reason `reason`; returns its message.
async fn waits_for(master: &str, name: &str, reason: &str) -> String {
    eventually(&format!("{name} waits: {reason}"), WAIT, || async {
        let r = resource(master, name).await;
        (r["waiting"]["reason"] == reason)
            .then(|| r["waiting"]["message"].as_str().unwrap_or("").to_owned())
    })
    .await
}

#[tokio::test]
async fn selectors_hold_through_a_dead_region_and_a_worker_with_the_missing_label() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    let wconfig = fault_config(dir.path());
    let master = start_master(policy(&endpoints, false), 1).await;
    ready_leader(&[&master.url], WAIT).await;
    let mut eu: Vec<Proc> = (1..=2)
        .map(|n| labelled(n, &endpoints, &wconfig, &["region=eu"]))
        .collect();
    let _us = labelled(3, &endpoints, &wconfig, &["region=us", "browser=chromium"]);
    wait_workers(&master.url, 3).await;
    let (_, _, workers) = get_json(&format!("{}/api/v1/workers", master.url))
        .await
        .expect("workers");
    let regions: Vec<&str> = workers["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|w| w["metadata"]["region"].as_str())
        .collect();
    assert_eq!(
        regions.len(),
        3,
        "labels are published in the registration: {workers}"
    );

    let in_eu = json!({"selector": {"match_labels": {"region": "eu"}}});
    for i in 0..6 {
        let created = create_placed(&master.url, &format!("eu-{i}"), in_eu.clone()).await;
        let worker = on(&created).expect("placed at once");
        assert!(
            worker == worker_id(1) || worker == worker_id(2),
            "{created}"
        );
        assert_eq!(created["placement"], in_eu);
    }
    let browser =
        json!({"selector": {"match_expressions": [{"key": "browser", "operator": "Exists"}]}});
    let js = create_placed(&master.url, "js", browser).await;
    assert_eq!(on(&js), Some(worker_id(3)));
    let ap = create_placed(
        &master.url,
        "ap",
        json!({"selector": {"match_labels": {"region": "ap"}}}),
    )
    .await;
    assert_eq!(on(&ap), None);
    assert_eq!(ap["waiting"]["reason"], "no_match", "{ap}");
    assert_eq!(
        ap["waiting"]["message"],
        "no worker matches region=ap (3 workers have region=eu, region=us)"
    );
    // A list says the same, and only of the task that waits.
    let page: Value = http()
        .get(format!("{}/api/v1/resources?limit=100", master.url))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("a page");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 8, "{page}");
    for item in items {
        if item["name"] == "ap" {
            assert_eq!(item["waiting"], ap["waiting"], "{item}");
        } else {
            assert!(item["waiting"].is_null(), "{item}");
        }
    }

    // The eu region dies: after the grace period its tasks wait, named, instead of moving to us.
    for w in &mut eu {
        w.kill();
    }
    let message = waits_for(&master.url, "eu-0", "no_match").await;
    assert_eq!(
        message,
        "no worker matches region=eu (1 worker has region=us)"
    );
    // The leader counts them too, once it has released the dead workers.
    eventually(
        "the leader counts 7 tasks no worker matches",
        WAIT,
        || async {
            let text = metrics_text(&master.url).await;
            text.contains("crawler_pending_tasks{reason=\"no_match\"} 7")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..6 {
        let r = resource(&master.url, &format!("eu-{i}")).await;
        assert_ne!(on(&r), Some(worker_id(3)), "never moved to us: {r}");
    }

    // A worker with the label comes: the waiting tasks are placed on it.
    let mut new_eu = labelled(4, &endpoints, &wconfig, &["region=eu"]);
    for i in 0..6 {
        let name = format!("eu-{i}");
        eventually(
            &format!("{name} goes to the new eu worker"),
            WAIT,
            || async {
                (on(&resource(&master.url, &name).await) == Some(worker_id(4))).then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        resource(&master.url, "ap").await["waiting"]["reason"],
        "no_match"
    );
    // The task asks for a label no worker has yet; its operator adds that label to worker 4
    // (a restart with one more --label, within the grace period): the task is placed there,
    // and the worker keeps its tasks.
    let alias = json!({"placement": {"selector": {"match_labels": {"region": null, "region-alias": "ap"}}}});
    let (status, body) = patch(&master.url, "ap", alias).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(on(&body), None, "{body}");
    assert_eq!(
        body["waiting"]["message"],
        "no worker matches region-alias=ap (no worker has region-alias)"
    );
    new_eu.kill();
    let _new_eu = labelled(4, &endpoints, &wconfig, &["region=eu", "region-alias=ap"]);
    eventually(
        "the ap task goes to the relabelled worker",
        WAIT,
        || async { (on(&resource(&master.url, "ap").await) == Some(worker_id(4))).then_some(()) },
    )
    .await;
    for i in 0..6 {
        let r = resource(&master.url, &format!("eu-{i}")).await;
        assert_eq!(on(&r), Some(worker_id(4)), "kept: {r}");
    }

    // A drain of the only eu worker would strand its tasks, and the preview says so.
    let (status, plan) = post_json(
        &format!("{}/api/v1/placement/preview", master.url),
        json!({"drain": [worker_id(4)]}),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["total"], 0, "{plan}");
    let stuck = plan["waiting"].as_array().expect("waiting");
    assert_eq!(stuck.len(), 7, "{plan}");
    assert!(
        stuck
            .iter()
            .all(|w| w["why"]
                == format!("stays on {}: the matching worker is cordoned", worker_id(4))),
        "{plan}"
    );

    // A PATCH that the worker no longer meets moves that task alone (a merge patch: the
    // expression is removed by null).
    let (status, patched) = patch(
        &master.url,
        "js",
        json!({"placement": {"selector": {"match_labels": {"region": "eu"}, "match_expressions": null}}}),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(on(&patched), Some(worker_id(4)), "{patched}");
    let (_, _, history) = get_json(&format!("{}/api/v1/resources/js/history", master.url))
        .await
        .expect("history");
    assert!(history.to_string().contains("\"constrained\""), "{history}");
    // A pin to a worker that does not fit is a conflict with the fleet, naming the field.
    let (status, refused) = patch(&master.url, "js", json!({"assigned_node": worker_id(3)})).await;
    assert_eq!(
        (status, refused["field"].as_str()),
        (409, Some("assigned_node")),
        "{refused}"
    );
}

async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let resp = http().post(url).json(&body).send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn patch(master: &str, name: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .patch(format!("{master}/api/v1/resources/{name}"))
        .json(&body)
        .send()
        .await
        .expect("patch");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dedicated_workers_priorities_and_preemption_off_then_on() {
    let etcd = Etcd::start().await;
    let endpoints = vec![etcd.url.clone()];
    let dir = tempfile::tempdir().expect("tempdir");
    let wconfig = fault_config(dir.path());
    let mut master = start_master(policy(&endpoints, false), 1).await;
    ready_leader(&[&master.url], WAIT).await;
    let args = ["--capacity", "2"];
    let _small = crawler_process(
        Role::Worker,
        (1, free_port()),
        &endpoints,
        &wconfig,
        &[],
        &args,
    );
    let _acme = labelled(2, &endpoints, &wconfig, &["dedicated=acme"]);
    wait_workers(&master.url, 2).await;

    // The dedicated worker takes only what tolerates it.
    for i in 0..2 {
        let low = create_placed(&master.url, &format!("low-{i}"), json!({})).await;
        assert_eq!(on(&low), Some(worker_id(1)), "{low}");
    }
    let acme = create_placed(
        &master.url,
        "acme",
        json!({"tolerations": ["acme"], "selector": {"match_labels": {"dedicated": "acme"}}}),
    )
    .await;
    assert_eq!(on(&acme), Some(worker_id(2)));
    let high = create_placed(&master.url, "high", json!({"priority": 10})).await;
    assert_eq!(on(&high), None, "the general worker is full: {high}");
    assert_eq!(high["waiting"]["reason"], "full", "{high}");
    assert_eq!(high["waiting"]["message"], "the matching worker is full");
    // Preemption off: it keeps waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(on(&resource(&master.url, "high").await), None);

    // A leader with preemption on: the high task displaces one low task, which then waits.
    master.stop().await;
    master = start_master(policy(&endpoints, true), 2).await;
    ready_leader(&[&master.url], WAIT).await;
    eventually("high displaces a low task", WAIT, || async {
        (on(&resource(&master.url, "high").await) == Some(worker_id(1))).then_some(())
    })
    .await;
    let mut victims = Vec::new();
    for i in 0..2 {
        let name = format!("low-{i}");
        let r = resource(&master.url, &name).await;
        if on(&r).is_none() {
            assert_eq!(r["waiting"]["reason"], "full", "{r}");
            victims.push(name);
        }
    }
    assert_eq!(victims.len(), 1, "exactly one victim: {victims:?}");
    let (_, _, history) = get_json(&format!(
        "{}/api/v1/resources/{}/history",
        master.url, victims[0]
    ))
    .await
    .expect("history");
    assert!(history.to_string().contains("\"preempted\""), "{history}");
    assert_eq!(
        on(&resource(&master.url, "acme").await),
        Some(worker_id(2)),
        "never a victim"
    );
}

#[tokio::test]
async fn bad_placements_are_refused_naming_the_field_and_store_nothing() {
    let (etcd, _config, master) = etcd_and_leader().await;
    for (placement, field) in [
        (json!({"priority": 1001}), "placement.priority"),
        (
            json!({"selector": {"match_expressions": [{"key": "a", "operator": "In"}]}}),
            "placement.selector",
        ),
        (
            json!({"preferences": [{"weight": 0, "selector": {}}]}),
            "placement.preferences",
        ),
        (json!({"nodeSelector": {}}), "placement"),
        (json!("eu"), "placement"),
    ] {
        let (status, body) =
            create_with(&master.url, json!({"name": "bad", "placement": placement}))
                .await
                .expect("create");
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{placement}: {body}"
        );
    }
    assert!(stored_resources(&etcd).await.is_empty());
}
