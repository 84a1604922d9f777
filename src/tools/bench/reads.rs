//! Scenario 1: cached reads from a master against a bare axum handler and a raw etcd get.
//!
//! A real worker runs the read tasks (each a `sleep`) and reports their status, so a read
//! joins a resource with a live report, as in use; it stops before the next scenario.

use std::process::Stdio;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use nix::sys::signal::Signal;

use super::harness::{create, get_json, wait_until};
use super::load::{self, Stats};
use super::report::{Report, ms, rate};
use crate::tools::procs::{self, Proc, Scratch, ToolError};

/// Tasks on the listed page (a quick run lists 10: starting their processes is most of its time).
const PAGE: usize = 100;

/// The GET of `url` at c=64, `n` times, alternately with `bare` (serving what `url` answered),
/// twice each after a warm-up; each one's better run.
async fn against_bare(
    client: &reqwest::Client,
    n: usize,
    url: &str,
    bare: &str,
) -> Result<(Stats, Stats), ToolError> {
    let get = |url: String| {
        let client = client.clone();
        move |_| {
            let client = client.clone();
            let url = url.clone();
            async move {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    };
    load::run(n / 10, 64, get(url.to_owned())).await;
    load::run(n / 10, 64, get(bare.to_owned())).await;
    let mut ours: Option<Stats> = None;
    let mut base: Option<Stats> = None;
    for _ in 0..2 {
        let o = load::run(n, 64, get(url.to_owned())).await;
        let b = load::run(n, 64, get(bare.to_owned())).await;
        if ours.as_ref().is_none_or(|x| o.per_sec() > x.per_sec()) {
            ours = Some(o);
        }
        if base.as_ref().is_none_or(|x| b.per_sec() > x.per_sec()) {
            base = Some(b);
        }
    }
    Ok((
        ours.ok_or_else(|| ToolError::Setup("no run".into()))?,
        base.ok_or_else(|| ToolError::Setup("no run".into()))?,
    ))
}

/// A bare server answering what `url` answers now.
async fn bare_copy(
    client: &reqwest::Client,
    scratch: &Scratch,
    file: &str,
    url: &str,
) -> Result<Proc, ToolError> {
    let body = client.get(url).send().await?.bytes().await?;
    let body_file = scratch.0.join(file);
    std::fs::write(&body_file, &body)?;
    let bare = procs::bare(&body_file)?;
    wait_until("the bare server", Duration::from_secs(10), || async {
        client.get(&bare.url).send().await.is_ok()
    })
    .await?;
    Ok(bare)
}

pub(super) async fn cached_read(
    report: &mut Report,
    q: bool,
    scratch: &Scratch,
    client: &reqwest::Client,
    leader: &Proc,
    raw: &Client,
    etcd: &str,
) -> Result<(), ToolError> {
    let config = scratch.0.join("reads-worker.yaml");
    std::fs::write(
        &config,
        "worker:\n  lease_ttl_secs: 3\n  runners:\n    default: [sleep, \"100000\"]\nlog:\n  level: error\n",
    )?;
    let mut worker = procs::worker_on(1, procs::free_port()?, etcd, &config, Stdio::null(), &[])?;
    if !create(client, &leader.url, "bench-read").await {
        return Err(ToolError::Setup("could not create the read target".into()));
    }
    let page_size = if q { PAGE / 10 } else { PAGE };
    for i in 0..page_size {
        if !create(client, &leader.url, &format!("bench-list-{i:03}")).await {
            return Err(ToolError::Setup("could not create the listed tasks".into()));
        }
    }
    let url = format!("{}/api/v1/resources/bench-read", leader.url);
    let page = format!(
        "{}/api/v1/resources?prefix=bench-list-&limit={page_size}",
        leader.url
    );
    wait_until(
        "the worker to run the read tasks",
        Duration::from_secs(60),
        || async {
            let running = |v: &serde_json::Value| v["status"]["state"] == "running";
            let one = get_json(client, &url).await.is_some_and(|v| running(&v));
            let all = get_json(client, &page).await.is_some_and(|v| {
                v["items"]
                    .as_array()
                    .is_some_and(|items| items.len() == page_size && items.iter().all(running))
            });
            one && all
        },
    )
    .await?;
    let bare = bare_copy(client, scratch, "body.json", &url).await?;
    let bare_page = bare_copy(client, scratch, "page.json", &page).await?;
    let n = if q { 500 } else { 40_000 };
    let (ours, base) = against_bare(client, n, &url, &bare.url).await?;
    let n_page = if q { 100 } else { 4_000 };
    let (ours_page, base_page) = against_bare(client, n_page, &page, &bare_page.url).await?;
    drop((bare, bare_page));
    worker.signal(Signal::SIGTERM);
    if !worker.wait_exit(Duration::from_secs(30)).await {
        worker.kill();
    }
    let etcd_n = if q { 500 } else { 20_000 };
    let key = "/resources/bench-read";
    let range = {
        let raw = raw.clone();
        load::run(etcd_n, 64, move |_| {
            let mut raw = raw.clone();
            async move {
                raw.get(key, Some(GetOptions::new().with_serializable()))
                    .await
                    .is_ok()
            }
        })
        .await
    };
    report.add_rate_ratio(
        "1 cached read c=64",
        "GET /api/v1/resources/{name} vs bare axum",
        (ours.per_sec(), base.per_sec()),
        ">= 0.97x",
        0.97,
    );
    let percentiles = |s: &Stats| format!("{} / {}", ms(s.pct(50)), ms(s.pct(99)));
    for (metric, o, b) in [
        ("p50 / p99 (ours)", &ours, &base),
        ("page p50 / p99 (ours)", &ours_page, &base_page),
    ] {
        if metric.starts_with("page") {
            report.add(
                "1 cached read c=64",
                format!("GET of a {page_size}-task page vs bare axum"),
                rate(o.per_sec()),
                rate(b.per_sec()),
                format!("{:.2}x", o.per_sec() / b.per_sec()),
                "",
                None,
            );
        }
        report.add(
            "1 cached read c=64",
            metric,
            percentiles(o),
            percentiles(b),
            "",
            "",
            None,
        );
    }
    report.add_rate_ratio(
        "1 cached read c=64",
        "GET vs etcd serializable range",
        (ours.per_sec(), range.per_sec()),
        ">= 10x",
        10.0,
    );
    Ok(())
}
