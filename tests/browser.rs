//! The dashboard in a real browser: headless Chromium, driven through chromedriver's WebDriver
//! API, against a real master, workers and etcd. It creates a resource through the UI, sees it
//! appear, sees an error for a duplicate, kills the worker that runs it and sees the resource
//! move. A screenshot is saved to `target/browser/dashboard.png`.
//!
//! Run alone with `cargo test --test browser` (needs Debian's `chromium` and
//! `chromium-driver`, which `scripts/setup.sh` installs).

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    url: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

impl Driver {
    async fn start(profile: &std::path::Path) -> Driver {
        let driver = find_on_path("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver was not found on PATH. The browser test needs Debian's chromium and \
                 chromium-driver (`apt-get install chromium chromium-driver`); scripts/setup.sh \
                 installs them."
            )
        });
        let browser = find_on_path("chromium").expect("chromium on PATH next to chromedriver");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = crawler::tls::client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let session = eventually(
            "chromedriver starts a session",
            Duration::from_secs(30),
            || {
                let http = http.clone();
                let url = url.clone();
                let capabilities = capabilities.clone();
                async move {
                    let resp = http
                        .post(format!("{url}/session"))
                        .json(&capabilities)
                        .send()
                        .await
                        .ok()?;
                    let body: Value = resp.json().await.ok()?;
                    body["value"]["sessionId"].as_str().map(str::to_owned)
                }
            },
        )
        .await;
        Driver {
            child,
            url,
            session,
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("webdriver call");
        let body: Value = resp.json().await.expect("webdriver json");
        body["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    async fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().map(str::to_owned)
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.expect("input");
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await.expect("button");
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 png"))
            .expect("decode");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// Clicks `button` until `cell` reads `wanted`. The table is redrawn whenever an event
/// arrives, so a button found just before a redraw is gone when clicked (WebDriver answers
/// "stale element"): click again, as a user would.
async fn click_until(driver: &Driver, button: &str, cell: &str, wanted: &str) {
    for _ in 0..20 {
        // Gone already when an earlier click took effect and the table was redrawn.
        if let Some(id) = driver.find(button).await {
            driver
                .call(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await;
        }
        for _ in 0..25 {
            if driver.text(cell).await.as_deref() == Some(wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    panic!("{cell} never read {wanted:?} after clicking {button}");
}

#[tokio::test]
async fn create_in_the_dashboard_then_watch_a_dead_workers_resource_move() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = fault_config(dir.path());
    // The workers run every task as a small script that logs as it goes.
    let mut yaml = std::fs::read_to_string(&config).expect("config");
    yaml = yaml.replace(
        "worker:\n",
        "worker:\n  lease_margin_ms: 1000\n  runners:\n    default: [sh, -c, \"echo crawling $CRAWLER_TASK_NAME; while true; do echo fetched a page; sleep 0.2; done\"]\n    rules:\n      - tasks: \"recur-*\"\n        command: [sh, -c, \"echo recrawled > $CRAWLER_SUMMARY_FILE\"]\n",
    );
    std::fs::write(&config, yaml).expect("config");
    let endpoints = vec![etcd.url.clone()];
    let mut master_config = test_config(&endpoints);
    // Trends sampled four times a second, so that the charts fill within the test.
    master_config.master.trends_sample_ms = 250;
    let master = start_master(master_config, 1).await;
    ready_leader(&[&master.url], Duration::from_secs(20)).await;
    let mut workers = [
        support::worker_process(1, &endpoints, &config),
        support::worker_process(2, &endpoints, &config),
    ];
    wait_workers(&master.url, 2).await;

    let profile = tempfile::tempdir().expect("profile");
    let driver = Driver::start(profile.path()).await;
    driver.goto(&format!("{}/", master.url)).await;
    eventually(
        "the dashboard lists both workers",
        Duration::from_secs(20),
        || async {
            let text = driver.text("#workers").await?;
            (text.contains("go.micro.server.worker-1") && text.contains("go.micro.server.worker-2"))
                .then_some(())
        },
    )
    .await;
    eventually(
        "the event stream is live",
        Duration::from_secs(20),
        || async { (driver.text("#live").await? == "live").then_some(()) },
    )
    .await;

    // A budget set through the API shows in the domains panel.
    let resp = http()
        .put(format!("{}/api/v1/domains/site.test/budget", master.url))
        .json(&serde_json::json!({"rate": 20, "concurrency": 8}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);
    eventually(
        "the domains panel shows the budget",
        Duration::from_secs(20),
        || async {
            let text = driver.text("#domains").await?;
            (text.contains("site.test") && text.contains("20/s") && text.contains("(api)"))
                .then_some(())
        },
    )
    .await;

    // Create through the UI.
    driver.type_into("#name", "from-the-ui").await;
    driver.click("#create-button").await;
    let row = "tr[data-resource=\"from-the-ui\"] .worker";
    let first = eventually(
        "the new resource appears with its worker",
        Duration::from_secs(20),
        || async {
            let worker = driver.text(row).await?;
            worker
                .starts_with("go.micro.server.worker-")
                .then_some(worker)
        },
    )
    .await;
    let stored = stored_resources(&etcd).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].assigned_worker(), Some(first.as_str()));

    // Its task runs, and its log opens from the row.
    let state = "tr[data-resource=\"from-the-ui\"] .state";
    eventually(
        "the task shows as running",
        Duration::from_secs(20),
        || async { (driver.text(state).await? == "running").then_some(()) },
    )
    .await;
    driver
        .click("tr[data-resource=\"from-the-ui\"] button.log")
        .await;
    eventually("its log lines show", Duration::from_secs(20), || async {
        let log = driver.text("#log").await?;
        (log.contains("crawling from-the-ui") && log.contains("fetched a page")).then_some(())
    })
    .await;
    // The task panel shows its status and history too.
    eventually(
        "its status and history show",
        Duration::from_secs(20),
        || async {
            let detail = driver.text("#detail").await?;
            let history = driver.text("#detail-history").await?;
            (detail.contains("running") && history.contains("created")).then_some(())
        },
    )
    .await;

    // A duplicate is refused, and the UI says why.
    driver.type_into("#name", "from-the-ui").await;
    driver.click("#create-button").await;
    eventually("the error is shown", Duration::from_secs(20), || async {
        driver
            .text("#error")
            .await?
            .contains("already exists")
            .then_some(())
    })
    .await;

    // Cordon the other worker from its row: it shows as cordoned and takes no new task;
    // uncordon it again.
    let other = if first.ends_with("-1") {
        "go.micro.server.worker-2"
    } else {
        "go.micro.server.worker-1"
    };
    let other_row = format!("tr[data-worker=\"{other}\"]");
    click_until(
        &driver,
        &format!("{other_row} button[data-op=\"cordon\"]"),
        &format!("{other_row} .wstate"),
        "cordoned",
    )
    .await;
    for i in 0..4 {
        let (status, body) = create(&master.url, &format!("while-cordoned-{i}"))
            .await
            .expect("create");
        assert_eq!(status, 201);
        assert_eq!(
            body["assigned_node"]["id"],
            first.as_str(),
            "a cordoned worker takes nothing new"
        );
    }
    click_until(
        &driver,
        &format!("{other_row} button[data-op=\"uncordon\"]"),
        &format!("{other_row} .wstate"),
        "ready",
    )
    .await;

    // A recurring task: its schedule shows in its row, its runs in its panel, and the row's
    // toggle suspends and resumes it.
    let (status, body) = create_with(
        &master.url,
        json!({"name": "recur-1", "schedule": {"every": "1s"}}),
    )
    .await
    .expect("create");
    assert_eq!(status, 201, "{body}");
    let cell = "tr[data-resource=\"recur-1\"] .schedule";
    eventually("the schedule shows", Duration::from_secs(20), || async {
        let text = driver.text(cell).await?;
        (text.contains("every 1s") && text.contains("last started")).then_some(())
    })
    .await;
    click_until(
        &driver,
        &format!("{cell} button[data-suspend=\"true\"]"),
        &format!("{cell} button"),
        "resume",
    )
    .await;
    let (_, _, view) = get_json(&format!("{}/api/v1/resources/recur-1", master.url))
        .await
        .expect("get");
    assert_eq!(view["schedule"]["suspend"], true, "{view}");
    driver
        .click("tr[data-resource=\"recur-1\"] button[data-log]")
        .await;
    // What the panel and the API showed last, said if the runs never show.
    let seen = std::sync::Mutex::new(String::new());
    let shown = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let runs = driver.text("#detail-runs").await.unwrap_or_default();
            if runs.contains("scheduled") && runs.contains("recrawled") {
                return;
            }
            let api = get_json(&format!("{}/api/v1/resources/recur-1/runs", master.url)).await;
            *seen.lock().expect("lock") = format!("panel: {runs:?}; API: {api:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        shown.is_ok(),
        "its runs did not show within 20 s; {}",
        seen.lock().expect("lock")
    );
    click_until(
        &driver,
        &format!("{cell} button[data-suspend=\"false\"]"),
        &format!("{cell} button"),
        "suspend",
    )
    .await;

    // Kill the worker that runs it: the dashboard shows it moving to the other one.
    let victim = if first.ends_with("-1") { 0 } else { 1 };
    workers[victim].kill();
    let killed = Instant::now();
    let second = eventually(
        "the resource moves to the live worker",
        Duration::from_secs(30),
        || async {
            let worker = driver.text(row).await?;
            (worker.starts_with("go.micro.server.worker-") && worker != first).then_some(worker)
        },
    )
    .await;
    println!(
        "measured: the dashboard showed {first}'s resource on {second} {:?} after the kill (worker lease TTL 3 s)",
        killed.elapsed()
    );
    // The trends: the master's samples count the creates and the move, and the charts draw
    // them.
    let (_, _, trends) = get_json(&format!("{}/api/v1/trends", master.url))
        .await
        .expect("trends");
    let samples = trends["samples"].as_array().expect("samples").clone();
    let sum = |field: &str| -> u64 { samples.iter().filter_map(|s| s[field].as_u64()).sum() };
    assert!(sum("creates") >= 5, "five creates: {trends}");
    eventually("a move in the trends", Duration::from_secs(20), || async {
        let (_, _, t) = get_json(&format!("{}/api/v1/trends", master.url)).await?;
        let moves: u64 = t["samples"]
            .as_array()?
            .iter()
            .filter_map(|s| s["moves"].as_u64())
            .sum();
        (moves >= 1).then_some(())
    })
    .await;
    eventually("the three charts draw", Duration::from_secs(20), || async {
        driver
            .find("#trend-states polyline[data-series=\"running\"]")
            .await?;
        // Whichever minutes they fell in, the moves line carries the move.
        driver
            .find("#trend-events polyline[data-series=\"moves\"]:not([data-total=\"0\"])")
            .await?;
        driver.find("#trend-loads polyline").await?;
        let legend = driver.text("#trend-events-legend").await?;
        legend.contains("creates").then_some(())
    })
    .await;
    // A task that no worker can take says why, on its row and in its panel.
    let (status, body) = create_with(
        &master.url,
        json!({"name": "in-ap", "placement": {"selector": {"match_labels": {"region": "ap"}}}}),
    )
    .await
    .expect("create");
    assert_eq!(status, 201, "{body}");
    let why = "no worker matches region=ap (no worker has region)";
    eventually(
        "the row says why it waits",
        Duration::from_secs(20),
        || async {
            let cell = driver
                .text("tr[data-resource=\"in-ap\"] .worker .waiting")
                .await?;
            (cell == why).then_some(())
        },
    )
    .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser/dashboard.png");
    driver.screenshot(&shot).await;
    let size = std::fs::metadata(&shot).expect("screenshot").len();
    assert!(
        size > 10_000,
        "a real screenshot, not an empty page ({size} bytes)"
    );
    println!("screenshot: {}", shot.display());
    driver.call(reqwest::Method::DELETE, "", None).await;
    master.stop().await;
}

#[tokio::test]
async fn the_storm_banner_shows_and_an_operator_thaws_it() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = fault_config(dir.path());
    let endpoints = vec![etcd.url.clone()];
    let mut master_config = test_config(&endpoints);
    master_config.scheduling.storm_fraction = 0.5;
    master_config.scheduling.reassign_after = Duration::from_secs(60);
    let master = start_master(master_config, 1).await;
    ready_leader(&[&master.url], Duration::from_secs(20)).await;
    let mut workers = [
        support::worker_process(1, &endpoints, &config),
        support::worker_process(2, &endpoints, &config),
        support::worker_process(3, &endpoints, &config),
    ];
    wait_workers(&master.url, 3).await;
    let profile = tempfile::tempdir().expect("profile");
    let driver = Driver::start(profile.path()).await;
    driver.goto(&format!("{}/", master.url)).await;
    eventually(
        "the dashboard lists three workers",
        Duration::from_secs(20),
        || async {
            driver
                .text("#worker-count")
                .await?
                .starts_with("3 registered")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        driver.text("#storm-reason").await.as_deref(),
        Some(""),
        "no banner yet"
    );

    // Two of three workers vanish at once: the banner says reassignment is frozen.
    workers[0].kill();
    workers[1].kill();
    eventually(
        "the banner shows the freeze",
        Duration::from_secs(30),
        || async {
            let reason = driver.text("#storm-reason").await?;
            reason.contains("2 of 3 workers left").then_some(())
        },
    )
    .await;

    driver.click("#thaw").await;
    eventually("the banner goes away", Duration::from_secs(20), || async {
        driver.text("#storm-reason").await?.is_empty().then_some(())
    })
    .await;
    let cluster = cluster(&master.url).await.expect("cluster");
    assert_eq!(cluster["scheduling"]["frozen"], false);
    assert_eq!(cluster["scheduling"]["thawed_by"], "operator");
    driver.call(reqwest::Method::DELETE, "", None).await;
    master.stop().await;
}

/// The dashboard pages on the server: with 100,000 resources its first rows and counts show
/// without loading the rest (the benchmark times it; this test checks that it works), search
/// and paging go to the server, and a change to a row on screen shows live.
#[tokio::test]
async fn the_dashboard_pages_through_100_000_resources() {
    const N: usize = 100_000;
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let names: Vec<String> = (0..N).map(|i| format!("r-{i:06}")).collect();
    for chunk in names.chunks(128) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|name| {
                let value = format!(
                    r#"{{"ID":"{}","Name":"{name}","AssignedNode":"","CreationTime":1}}"#,
                    1000 + name[2..].parse::<u64>().expect("number")
                );
                etcd_client::TxnOp::put(format!("/resources/{name}"), value, None)
            })
            .collect();
        client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("bulk write");
    }
    let endpoints = vec![etcd.url.clone()];
    let master = start_master(test_config(&endpoints), 1).await;
    ready_leader(&[&master.url], Duration::from_secs(60)).await;

    let profile = tempfile::tempdir().expect("profile");
    let driver = Driver::start(profile.path()).await;
    driver.goto(&format!("{}/", master.url)).await;
    eventually("the first rows show", Duration::from_secs(20), || async {
        driver
            .find("tr[data-resource=\"r-000049\"]")
            .await
            .map(|_| ())
    })
    .await;
    assert!(
        driver
            .find("tr[data-resource=\"r-000050\"]")
            .await
            .is_none(),
        "one page of 50 rows, not every resource"
    );
    eventually("the counts show", Duration::from_secs(20), || async {
        let text = driver.text("#resource-count").await?;
        text.contains(&format!("{N} total · {N} unassigned"))
            .then_some(())
    })
    .await;
    // The next page comes from the server.
    driver.click("#next").await;
    eventually("the second page", Duration::from_secs(20), || async {
        driver
            .find("tr[data-resource=\"r-000099\"]")
            .await
            .map(|_| ())
    })
    .await;
    // Search by name prefix.
    driver.type_into("#search", "r-09999").await;
    eventually("the search's rows", Duration::from_secs(20), || async {
        let text = driver.text("#resources").await?;
        (text.contains("r-099990") && text.contains("r-099999") && !text.contains("r-000099"))
            .then_some(())
    })
    .await;
    // A change to a row on screen shows live: a restart is a write the row reflects (its
    // id stays; a delete removes the row and the count).
    let resp = http()
        .delete(format!("{}/api/v1/resources/r-099995", master.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    eventually(
        "the deleted row goes, the count drops",
        Duration::from_secs(20),
        || async {
            let rows = driver.text("#resources").await?;
            let count = driver.text("#resource-count").await?;
            (!rows.contains("r-099995") && count.contains(&format!("{} total", N - 1)))
                .then_some(())
        },
    )
    .await;
    driver.call(reqwest::Method::DELETE, "", None).await;
    master.stop().await;
}
