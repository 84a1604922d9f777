//! What ships in `deploy/prometheus/`, checked with the tools operators use: promtool checks the
//! rules and the configuration and runs a unit test of every alert; every metric the rules and
//! the Grafana dashboard name is one a real master serves; and a real Prometheus (Debian's)
//! scrapes a real cluster, sees a staged storm and fires `CrawlerStormFreeze`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read");
    serde_yaml_ng::from_str(&text).expect("YAML")
}

/// Runs promtool with `args` in `deploy/prometheus`; returns whether it succeeded and what it
/// printed.
fn promtool(args: &[&str]) -> (bool, String) {
    run_tool(Command::new("promtool").args(args).current_dir(deploy()))
}

/// Every rule of a rules file: (`alert` or `record`, its name, its expression).
fn rules(path: &Path) -> Vec<(String, String, String)> {
    let doc = yaml(path);
    let mut out = Vec::new();
    for group in doc["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let (kind, name) = match (rule["alert"].as_str(), rule["record"].as_str()) {
                (Some(a), _) => ("alert", a),
                (_, Some(r)) => ("record", r),
                _ => panic!("a rule with neither alert nor record: {rule:?}"),
            };
            let expr = rule["expr"].as_str().expect("expr");
            out.push((kind.to_owned(), name.to_owned(), expr.to_owned()));
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_config_and_a_unit_test_covers_every_alert() {
    let (ok, text) = promtool(&[
        "check",
        "rules",
        "prometheus_rules.yaml",
        "prometheus_alerts.yaml",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["test", "rules", "tests/alerts_test.yaml"]);
    assert!(ok, "{text}");
    println!(
        "measured: promtool test rules: {}",
        text.trim().replace('\n', " ")
    );

    // Each alert has a case where it fires and one where it does not.
    let alerts: BTreeSet<String> = rules(&deploy().join("prometheus_alerts.yaml"))
        .into_iter()
        .filter(|(kind, _, _)| kind == "alert")
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    let tests = yaml(&deploy().join("tests/alerts_test.yaml"));
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_array().expect("tests") {
        for check in case["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = check["alertname"].as_str().expect("alertname").to_owned();
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    assert_eq!(fires, alerts, "an alert with no test where it fires");
    assert_eq!(quiet, alerts, "an alert with no test where it stays quiet");
}

/// The metric and recording-rule names an expression uses.
fn names_in(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"crawler[_:][a-z0-9_:]+").expect("regex");
    re.find_iter(expr).map(|m| m.as_str().to_owned()).collect()
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_name_is_served_by_a_real_master() {
    let (_etcd, config, master) = etcd_and_leader().await;
    // A worker holding a task: the labelled families (moves, loads) have a child to show.
    let _worker = start_worker(config, 1, 10).await;
    wait_workers(&master.url, 1).await;
    assert_eq!(create(&master.url, "placed").await.expect("create").0, 201);
    let exposition = eventually("a move and a load", WAIT, || async {
        let text = metrics_text(&master.url).await;
        (text.contains("crawler_moves_total") && text.contains("crawler_worker_load{"))
            .then_some(text)
    })
    .await;
    // Every family the exposition declares, with its sample names (a family with no labelled
    // child yet, such as the moves before any move, has no sample but is declared).
    let served: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().map(move |s| format!("{name}{s}"))
        })
        .collect();
    let all_rules: Vec<_> = ["prometheus_rules.yaml", "prometheus_alerts.yaml"]
        .iter()
        .flat_map(|f| rules(&deploy().join(f)))
        .collect();
    let recorded: BTreeSet<String> = all_rules
        .iter()
        .filter(|(kind, _, _)| kind == "record")
        .map(|(_, name, _)| name.clone())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("dashboards_out/crawler.json")).expect("read"),
    )
    .expect("the dashboard is JSON");
    let panel_exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(panel_exprs.len() >= 10, "{panel_exprs:?}");
    let mut used = BTreeSet::new();
    for expr in all_rules.iter().map(|(_, _, e)| e).chain(&panel_exprs) {
        used.extend(names_in(expr));
    }
    let missing: Vec<_> = used
        .iter()
        .filter(|name| {
            if name.contains(':') {
                return !recorded.contains(*name);
            }
            !served.contains(*name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "named in deploy/prometheus but not served or recorded: {missing:?}"
    );
    println!(
        "measured: deploy/prometheus names {} metrics and recording rules, all served",
        used.len()
    );
}

/// Debian's Prometheus on a free port, scraping `targets` every second with the shipped rules.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets
            .iter()
            .map(|t| format!("\"{}\"", t.trim_start_matches("http://")))
            .collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n  - {alerts}\n\
                 scrape_configs:\n  - job_name: crawler-masters\n    static_configs:\n      \
                 - targets: [{targets}]\n",
                rules = deploy().join("prometheus_rules.yaml").display(),
                alerts = deploy().join("prometheus_alerts.yaml").display(),
                targets = targets.join(", "),
            ),
        )
        .expect("config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus; scripts/test installs it)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let (status, _, body) = get_json(&format!("{}{path}", self.url)).await?;
        (status == 200 && body["status"] == "success").then_some(body["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_masters_and_fires_the_storm_alert() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.yaml");
    // Departures freeze reassignment when two of three workers leave within a minute; their
    // tasks would move only after a long grace.
    std::fs::write(
        &config,
        "etcd:\n  request_timeout_ms: 1000\n  dial_timeout_ms: 500\n\
         master:\n  session_ttl_secs: 2\n\
         worker:\n  lease_ttl_secs: 3\n  lease_margin_ms: 1000\n\
         scheduling:\n  reassign_after: 10m\n  storm_fraction: 0.5\n  storm_window: 60s\n  \
         storm_min_workers: 2\n\
         log:\n  level: warn\n",
    )
    .expect("config");
    let endpoints = vec![etcd.url.clone()];
    let master = master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&master.url], WAIT).await;
    let mut workers: Vec<Proc> = (1..=3)
        .map(|n| worker_process(n, &endpoints, &config))
        .collect();
    wait_workers(&master.url, 3).await;
    let prometheus = Prometheus::start(std::slice::from_ref(&master.url));

    // The scrape works: the target is up with no error, and the OpenMetrics families keep
    // their types (promtool's `check metrics` reads only the older text format).
    eventually("the master's target is up", WAIT, || async {
        let targets = prometheus.api("/api/v1/targets").await?;
        let target = targets["activeTargets"].as_array()?.first()?.clone();
        (target["health"] == "up" && target["lastError"] == "").then_some(())
    })
    .await;
    let workers_seen = eventually("Prometheus has crawler_workers", WAIT, || async {
        let data = prometheus
            .api("/api/v1/query?query=crawler_workers")
            .await?;
        let value = data["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .to_owned();
        (value == "3").then_some(value)
    })
    .await;
    assert_eq!(workers_seen, "3");
    let metadata = eventually("metric metadata", WAIT, || async {
        let data = prometheus.api("/api/v1/metadata").await?;
        data.get("crawler_task_start_seconds").map(|_| data.clone())
    })
    .await;
    for (family, kind) in [
        ("crawler_task_start_seconds", "histogram"),
        ("crawler_tasks", "gauge"),
        ("crawler_leader_changes", "counter"),
    ] {
        assert_eq!(metadata[family][0]["type"], kind, "{family}: {metadata}");
    }
    let quiet = prometheus.api("/api/v1/alerts").await.expect("alerts");
    assert!(
        !quiet.to_string().contains("CrawlerStormFreeze"),
        "no storm yet: {quiet}"
    );

    // A storm: two of three workers die at once.
    for worker in workers.iter_mut().take(2) {
        worker.kill();
    }
    let started = std::time::Instant::now();
    let alert = eventually("CrawlerStormFreeze fires", WAIT, || async {
        let data = prometheus.api("/api/v1/alerts").await?;
        data["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "CrawlerStormFreeze" && a["state"] == "firing")
            .cloned()
    })
    .await;
    println!(
        "measured: CrawlerStormFreeze firing in Prometheus {:.1} s after two of three workers died",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    let frozen = metric(&master.url, "crawler_reassignment_frozen").await;
    assert_eq!(frozen, 1.0, "the master reports the freeze the alert saw");
}
