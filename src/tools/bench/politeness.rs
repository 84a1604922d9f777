//! Scenario 15: what keeping politeness shares costs. 1,000 domains × 100 workers (simulated:
//! each puts its demand for every domain on a lease, reads its shares every second and
//! acknowledges new ones, as the worker's renewal does), and every second 5 % of them change
//! what their tasks want on a tenth of the domains. Reports the leader's CPU per second against
//! the follower's (same caches, no splitting), the leader's etcd writes per second for the
//! shares (txns, keys and bytes, from a watch on the shares) against the workers' own writes,
//! and how long the first full split took.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};

use super::harness::{cpu, http_client, is_ready, is_ready_leader, wait_until};
use super::report::{Report, ms};
use crate::keys::KeyLayout;
use crate::model::politeness::{Demand, Shares, Want};
use crate::object::Object;
use crate::tools::member;
use crate::tools::procs::{self, MOVE_AT_ONCE, Scratch, ToolError};

const WAIT: Duration = Duration::from_secs(120);

fn config(dir: &Path) -> Result<PathBuf, ToolError> {
    let path = dir.join("politeness.yaml");
    std::fs::write(
        &path,
        format!(
            "master:\n  session_ttl_secs: 10\n{MOVE_AT_ONCE}\
             politeness:\n  default: {{rate: 50, concurrency: 200}}\n  share_lease: 5s\n  renew_interval: 1s\n\
             log:\n  level: error\n"
        ),
    )?;
    Ok(path)
}

fn domain(d: usize) -> String {
    format!("site-{d:04}.example")
}

/// Worker `w`'s demand, `round` changing the tasks of a tenth of the domains for the workers
/// whose turn it is.
fn demand(w: usize, domains: usize, seen: i64, bump: usize) -> Demand {
    let domains = (0..domains)
        .map(|d| {
            let tasks = 1 + ((w + d + bump * (d % 10 == w % 10) as usize) % 4) as u32;
            (
                domain(d),
                Want {
                    tasks,
                    used: 0.0,
                    saturated: true,
                    waiting: 1,
                    throttled: 0,
                    crawl_delay_ms: None,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    Demand { seen, domains }
}

/// The simulated workers' state.
struct Fleet {
    raw: Client,
    keys: KeyLayout,
    lease: i64,
    workers: usize,
    domains: usize,
    seen: Vec<i64>,
    bump: Vec<usize>,
    /// Demand writes the fleet made.
    writes: u64,
}

impl Fleet {
    fn node(w: usize) -> String {
        format!("go.micro.server.worker-{}", 1_000 + w)
    }

    async fn put(&mut self, w: usize) -> Result<(), ToolError> {
        let value = serde_json::to_vec(&demand(w, self.domains, self.seen[w], self.bump[w]))
            .unwrap_or_default();
        let key = self.keys.demand_key(&Self::node(w));
        let options = PutOptions::new().with_lease(self.lease);
        self.raw.put(key, value, Some(options)).await?;
        self.writes += 1;
        Ok(())
    }

    /// One renewal of every worker: read its shares, acknowledge new ones; `changing` workers
    /// change their demand too. Returns how many workers hold a share of every domain.
    async fn renew(&mut self, changing: &[usize]) -> Result<usize, ToolError> {
        let mut full = 0;
        for w in 0..self.workers {
            let key = self.keys.shares_key(&Self::node(w));
            let got = self.raw.get(key, None).await?;
            let mut changed = changing.contains(&w);
            if changed {
                self.bump[w] += 1;
            }
            if let Some(kv) = got.kvs().first() {
                if kv.mod_revision() > self.seen[w] {
                    self.seen[w] = kv.mod_revision();
                    changed = true;
                }
                if Shares::decode("", kv.value()).is_ok_and(|s| s.grants.len() == self.domains) {
                    full += 1;
                }
            }
            if changed {
                self.put(w).await?;
            }
        }
        Ok(full)
    }
}

/// Counts the leader's writes of shares: txns (revisions), keys and bytes.
async fn count_shares(
    raw: Client,
    prefix: String,
    stop: tokio_util::sync::CancellationToken,
) -> (u64, u64, u64) {
    let mut watch = raw.watch_client();
    let Ok(watched) = watch
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
    else {
        return (0, 0, 0);
    };
    let (_requests, mut stream) = watched.split();
    let (mut revisions, mut keys, mut bytes) = (HashMap::new(), 0u64, 0u64);
    loop {
        tokio::select! {
            () = stop.cancelled() => return (revisions.len() as u64, keys, bytes),
            msg = stream.message() => match msg {
                Ok(Some(resp)) => for event in resp.events() {
                    if let Some(kv) = event.kv() {
                        revisions.insert(kv.mod_revision(), ());
                        keys += 1;
                        if event.event_type() == EventType::Put {
                            bytes += kv.value().len() as u64;
                        }
                    }
                },
                _ => return (revisions.len() as u64, keys, bytes),
            }
        }
    }
}

pub(super) async fn politeness(report: &mut Report, q: bool) -> Result<(), ToolError> {
    let (workers, domains, window) = if q {
        (10, 100, Duration::from_secs(5))
    } else {
        (100, 1_000, Duration::from_secs(20))
    };
    let scratch = Scratch::new("politeness")?;
    let etcd = member::etcd(&scratch.0).await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;
    let config = config(&scratch.0)?;
    let keys = KeyLayout::default();
    let client = http_client(8)?;
    let leader = procs::master(1, &etcd.url, &config)?;
    wait_until("the leader", WAIT, || is_ready_leader(&client, &leader.url)).await?;
    let follower = procs::master(2, &etcd.url, &config)?;
    wait_until("the follower", WAIT, || is_ready(&client, &follower.url)).await?;
    let lease = raw.clone().lease_grant(3_600, None).await?.id();
    let mut fleet = Fleet {
        raw: raw.clone(),
        keys: keys.clone(),
        lease,
        workers,
        domains,
        seen: vec![0; workers],
        bump: vec![0; workers],
        writes: 0,
    };
    let started = Instant::now();
    for w in 0..workers {
        fleet.put(w).await?;
    }
    // The first full split: every worker holds a share of every domain.
    let mut settled = None;
    while started.elapsed() < WAIT {
        if fleet.renew(&[]).await? == workers {
            settled = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled =
        settled.ok_or_else(|| ToolError::Setup("the shares never covered every domain".into()))?;
    // Steady churn, measured.
    let stop = tokio_util::sync::CancellationToken::new();
    let counter = tokio::spawn(count_shares(
        raw.clone(),
        keys.shares_prefix(),
        stop.clone(),
    ));
    let (l0, f0, writes0, t0) = (cpu(&leader), cpu(&follower), fleet.writes, Instant::now());
    let revision0 = raw
        .clone()
        .get("/", Some(GetOptions::new().with_count_only()))
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let mut second = 0usize;
    while t0.elapsed() < window {
        let tick = Instant::now();
        let changing: Vec<usize> = (0..workers.div_ceil(20))
            .map(|i| (second * 7 + i * 13) % workers)
            .collect();
        fleet.renew(&changing).await?;
        second += 1;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (leader_cpu, follower_cpu) = ((cpu(&leader) - l0) / secs, (cpu(&follower) - f0) / secs);
    let revision1 = raw
        .clone()
        .get("/", Some(GetOptions::new().with_count_only()))
        .await?
        .header()
        .map_or(0, |h| h.revision());
    stop.cancel();
    let (txns, share_keys, bytes) = counter.await.unwrap_or((0, 0, 0));
    let fleet_writes = (fleet.writes - writes0) as f64 / secs;
    let all_writes = (revision1 - revision0) as f64 / secs;
    let ratio = leader_cpu / follower_cpu.max(1e-6);
    report.add(
        "15 politeness",
        format!("leader CPU/s, {domains} domains x {workers} workers (vs follower)"),
        format!("{leader_cpu:.3} s"),
        format!("{follower_cpu:.3} s"),
        format!("{ratio:.2}x"),
        "report",
        None,
    );
    report.add(
        "15 politeness",
        "etcd writes/s for shares (vs the workers' own)",
        format!("{:.2}/s", txns as f64 / secs),
        format!("{fleet_writes:.2}/s"),
        format!("{:.2}x", txns as f64 / secs / fleet_writes.max(1e-6)),
        "report",
        None,
    );
    report.add(
        "15 politeness",
        "first full split (every worker, every domain)",
        ms(settled),
        "-",
        "-",
        "report",
        None,
    );
    report.note(
        "15 politeness",
        format!(
            "{workers} workers, {domains} domains; {} of them change a tenth of their demand each second; over {secs:.0} s: {txns} share txns carrying {share_keys} keys, {:.1} MB/s of shares; etcd revisions {all_writes:.1}/s in all",
            workers.div_ceil(20),
            bytes as f64 / secs / 1e6
        ),
    );
    Ok(())
}
