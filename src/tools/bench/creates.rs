//! Scenario 2: creates on the leader against the same fenced txn sent to etcd directly.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use std::time::Duration;

use super::harness::{create, metric_sums};
use super::load;
use super::report::{Report, ms, rate};
use crate::tools::procs::{Proc, ToolError};

/// A raw etcd txn shaped like the leader's create: a fence compare around a nested txn that
/// creates the key only if it does not exist.
pub(super) async fn raw_create(
    raw: Client,
    fence: (String, i64),
    key: String,
    value: Vec<u8>,
) -> bool {
    raw_create_all(raw, fence, vec![(key, value)], String::new()).await
}

/// The keys one of our creates wrote (each ends with `/<name>`), with their values: what the
/// c=1 control writes raw.
async fn written_by(raw: &Client, name: &str) -> Result<Vec<(String, Vec<u8>)>, ToolError> {
    let suffix = format!("/{name}");
    let all = raw
        .clone()
        .get("/", Some(GetOptions::new().with_from_key()))
        .await?;
    Ok(all
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?;
            key.ends_with(&suffix)
                .then(|| (key.to_owned(), kv.value().to_vec()))
        })
        .collect())
}

/// A raw fenced txn writing `keys` (each suffixed with `tag`), created only if the first does
/// not exist: the leader's create without HTTP, JSON, ids or placement.
async fn raw_create_all(
    mut raw: Client,
    fence: (String, i64),
    keys: Vec<(String, Vec<u8>)>,
    tag: String,
) -> bool {
    let Some(first) = keys.first().map(|(k, _)| format!("{k}{tag}")) else {
        return false;
    };
    let inner = Txn::new()
        .when([Compare::create_revision(first, CompareOp::Equal, 0)])
        .and_then(
            keys.into_iter()
                .map(|(k, v)| TxnOp::put(format!("{k}{tag}"), v, None))
                .collect::<Vec<_>>(),
        );
    let outer = Txn::new()
        .when([Compare::create_revision(
            fence.0.as_bytes(),
            CompareOp::Equal,
            fence.1,
        )])
        .and_then([TxnOp::txn(inner)]);
    raw.txn(outer).await.is_ok_and(|r| r.succeeded())
}

/// The p50 of `a` over that of `b`.
fn p50_ratio(a: &load::Stats, b: &load::Stats) -> f64 {
    a.pct(50).as_secs_f64() / b.pct(50).as_secs_f64().max(1e-9)
}

/// The leader's own clocks, read from its histograms' sums and counts: its API requests' and
/// its etcd writes'.
struct Clocks {
    requests: (f64, f64),
    txns: (f64, f64),
}

impl Clocks {
    async fn read(client: &reqwest::Client, leader: &Proc) -> Self {
        let [rs, rc, ts, tc] = metric_sums(
            client,
            &leader.url,
            [
                "crawler_http_request_duration_seconds_sum",
                "crawler_http_request_duration_seconds_count",
                "crawler_etcd_write_duration_seconds_sum",
                "crawler_etcd_write_duration_seconds_count",
            ],
        )
        .await;
        Self {
            requests: (rs, rc),
            txns: (ts, tc),
        }
    }
}

/// The mean of what one clock timed between two readings, `before` and `after`.
fn mean_between((sum0, count0): (f64, f64), (sum1, count1): (f64, f64)) -> Duration {
    Duration::from_secs_f64(((sum1 - sum0) / (count1 - count0).max(1.0)).max(0.0))
}

/// At c=1, where ours spends its time beyond the raw txn: the same keys our create wrote,
/// raw; a cached GET of the resource over HTTP; and, by the leader's own clocks, how long it
/// held each request and how long each of its etcd txns took.
async fn c1_split(
    report: &mut Report,
    n: usize,
    client: &reqwest::Client,
    leader: &Proc,
    (raw, fence): (&Client, &(String, i64)),
    ours: &load::Stats,
    (before, after): (&Clocks, &Clocks),
) -> Result<(), ToolError> {
    let keys = written_by(raw, "create-c1-0").await?;
    let same = {
        let (raw, fence, keys) = (raw.clone(), fence.clone(), keys.clone());
        load::run(n, 1, move |i| {
            raw_create_all(
                raw.clone(),
                fence.clone(),
                keys.clone(),
                format!("-raw-{i}"),
            )
        })
        .await
    };
    let read = {
        let (client, url) = (
            client.clone(),
            format!("{}/api/v1/resources/create-c1-0", leader.url),
        );
        load::run(n, 1, move |_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        })
        .await
    };
    report.add(
        "2 create on leader c=1",
        format!(
            "p50: raw txn of the {} keys a create writes / a cached GET over HTTP",
            keys.len()
        ),
        ms(same.pct(50)),
        ms(read.pct(50)),
        format!("ours {:.2}x the same keys raw", p50_ratio(ours, &same)),
        "",
        None,
    );
    let txn = mean_between(before.txns, after.txns);
    report.add(
        "2 create on leader c=1",
        "mean: the client's / the leader's request / its etcd txn",
        format!(
            "{} / {} / {}",
            ms(ours.mean()),
            ms(mean_between(before.requests, after.requests)),
            ms(txn)
        ),
        format!("{} raw, the same keys", ms(same.mean())),
        format!(
            "the leader's txn alone {:.2}x raw",
            txn.as_secs_f64() / same.mean().as_secs_f64().max(1e-9)
        ),
        "",
        None,
    );
    Ok(())
}

pub(super) async fn create_on_leader(
    report: &mut Report,
    q: bool,
    client: &reqwest::Client,
    leader: &Proc,
    raw: &Client,
) -> Result<(), ToolError> {
    let mut c = raw.clone();
    let put = c.put("/bench/fence", "x", None).await?;
    let fence = (
        "/bench/fence".to_owned(),
        put.header().map_or(0, |h| h.revision()),
    );
    let value = serde_json::to_vec(&crate::model::resource::Resource {
        id: 2_125_152_218_540_679_168u64.into(),
        name: "bench-raw-000000".into(),
        assigned_node: "".into(),
        creation_time: 1,
        extra: Default::default(),
    })
    .unwrap_or_default();
    for (concurrency, n) in [
        (1usize, if q { 50 } else { 1_000 }),
        (8, if q { 200 } else { 10_000 }),
        (64, if q { 500 } else { 20_000 }),
        (256, if q { 500 } else { 20_000 }),
    ] {
        let tag = format!("c{concurrency}");
        let before = Clocks::read(client, leader).await;
        let ours = {
            let client = client.clone();
            let url = leader.url.clone();
            let tag = tag.clone();
            load::run(n, concurrency, move |i| {
                let client = client.clone();
                let url = url.clone();
                let name = format!("create-{tag}-{i}");
                async move { create(&client, &url, &name).await }
            })
            .await
        };
        let after = Clocks::read(client, leader).await;
        let base = {
            let raw = raw.clone();
            let fence = fence.clone();
            let value = value.clone();
            let tag = tag.clone();
            load::run(n, concurrency, move |i| {
                raw_create(
                    raw.clone(),
                    fence.clone(),
                    format!("/bench/raw/{tag}-{i}"),
                    value.clone(),
                )
            })
            .await
        };
        if concurrency == 1 {
            let limit = base.pct(50).mul_f64(1.3);
            report.add(
                "2 create on leader c=1",
                "p50 vs raw fenced txn",
                ms(ours.pct(50)),
                ms(base.pct(50)),
                format!("{:.2}x", p50_ratio(&ours, &base)),
                "<= 1.3x raw",
                Some(ours.pct(50) <= limit),
            );
            c1_split(
                report,
                n,
                client,
                leader,
                (raw, &fence),
                &ours,
                (&before, &after),
            )
            .await?;
            report.add(
                "2 create on leader c=1",
                "p99 (ours / raw)",
                ms(ours.pct(99)),
                ms(base.pct(99)),
                "",
                "",
                None,
            );
        } else {
            // Group commit's goal is at c=64; the other levels show where it starts to pay.
            let (scenario, target, min) = match concurrency {
                8 => ("2 create on leader c=8", "", None),
                64 => ("2 create on leader c=64", ">= 1.5x", Some(1.5)),
                _ => ("2 create on leader c=256", "", None),
            };
            let ratio = ours.per_sec() / base.per_sec().max(1e-9);
            report.add(
                scenario,
                "creates/s vs raw fenced txns/s",
                rate(ours.per_sec()),
                rate(base.per_sec()),
                format!("{ratio:.2}x"),
                target,
                min.map(|m| ratio >= m),
            );
            report.add(
                scenario,
                "p50 / p99 (ours / raw)",
                format!("{} / {}", ms(ours.pct(50)), ms(ours.pct(99))),
                format!("{} / {}", ms(base.pct(50)), ms(base.pct(99))),
                "",
                "",
                None,
            );
        }
    }
    // Don't leave the raw keys around for later scenarios.
    c.delete(
        "/bench/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await?;
    Ok(())
}
