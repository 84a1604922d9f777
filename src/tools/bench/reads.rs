//! Scenario 1: cached reads from a master against a bare axum handler and a raw etcd get.

use std::time::Duration;

use etcd_client::{Client, GetOptions};

use super::harness::{create, wait_until};
use super::load::{self, Stats};
use super::report::{Report, ms};
use crate::tools::procs::{self, Proc, Scratch, ToolError};

pub(super) async fn cached_read(
    report: &mut Report,
    q: bool,
    scratch: &Scratch,
    client: &reqwest::Client,
    leader: &Proc,
    raw: &Client,
) -> Result<(), ToolError> {
    if !create(client, &leader.url, "bench-read").await {
        return Err(ToolError::Setup("could not create the read target".into()));
    }
    let url = format!("{}/api/v1/resources/bench-read", leader.url);
    let body = client.get(&url).send().await?.bytes().await?;
    let body_file = scratch.0.join("body.json");
    std::fs::write(&body_file, &body)?;
    let bare = procs::bare(&body_file)?;
    wait_until("the bare server", Duration::from_secs(10), || async {
        client.get(&bare.url).send().await.is_ok()
    })
    .await?;
    let n = if q { 500 } else { 40_000 };
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
    // Warm both up, then measure them alternately, twice, and keep each one's better run.
    load::run(n / 10, 64, get(url.clone())).await;
    load::run(n / 10, 64, get(bare.url.clone())).await;
    let mut ours: Option<Stats> = None;
    let mut base: Option<Stats> = None;
    for _ in 0..2 {
        let o = load::run(n, 64, get(url.clone())).await;
        let b = load::run(n, 64, get(bare.url.clone())).await;
        if ours.as_ref().is_none_or(|x| o.per_sec() > x.per_sec()) {
            ours = Some(o);
        }
        if base.as_ref().is_none_or(|x| b.per_sec() > x.per_sec()) {
            base = Some(b);
        }
    }
    let (ours, base) = (
        ours.ok_or_else(|| ToolError::Setup("no run".into()))?,
        base.ok_or_else(|| ToolError::Setup("no run".into()))?,
    );
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
        ">= 0.8x",
        0.8,
    );
    report.add(
        "1 cached read c=64",
        "p50 / p99 (ours)",
        format!("{} / {}", ms(ours.pct(50)), ms(ours.pct(99))),
        format!("{} / {}", ms(base.pct(50)), ms(base.pct(99))),
        "",
        "",
        None,
    );
    report.add_rate_ratio(
        "1 cached read c=64",
        "GET vs etcd serializable range",
        (ours.per_sec(), range.per_sec()),
        ">= 10x",
        10.0,
    );
    Ok(())
}
