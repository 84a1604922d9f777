//! `crawler bench`: how close the control plane gets to raw etcd and to a bare HTTP handler,
//! and how it scales, measured in one run on this machine and reported as ratios.
//!
//! It starts its own etcd, masters and a bare HTTP server as child processes on loopback,
//! drives them with a closed-loop HTTP/1.1 keep-alive client at fixed concurrency
//! ([`load`]), prints a table and writes a Markdown report. `--quick` runs every scenario
//! with tiny counts, as a smoke test.
//!
//! One file per scenario (`reads.rs`, `creates.rs`, `follower.rs`, `propagation.rs`, `failover.rs`,
//! `scale.rs`, `ids.rs`, `scheduling.rs`, `fanout.rs`, `workers.rs`, `real_load.rs`, `soak/`,
//! `recurring.rs`, `placement.rs`, `politeness.rs`, `fair_use.rs`, `member_loss.rs`), over a
//! shared `harness.rs` and `report.rs`; this file runs them in order.

mod creates;
mod failover;
mod fair_use;
mod fanout;
mod follower;
mod harness;
mod ids;
pub mod load;
mod member_loss;
mod placement;
mod politeness;
mod propagation;
mod reads;
mod real_load;
mod recurring;
mod report;
mod scale;
mod scheduling;
mod soak;
mod workers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::tools::member;
use crate::tools::procs::{self, Scratch, ToolError};

use creates::create_on_leader;
use failover::failover;
use fair_use::fair_use;
use fanout::fanout;
use follower::through_follower;
use harness::{http_client, is_ready, is_ready_leader, wait_until};
use ids::ids;
use member_loss::member_loss;
use placement::placement;
use politeness::politeness;
use propagation::propagation;
use reads::cached_read;
use real_load::real_load;
use recurring::recurring;
use report::{Report, write_report};
use scale::scale;
use scheduling::scheduling;
use soak::soak;
use workers::worker_memory;

/// How to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tiny counts, for a smoke test.
    pub quick: bool,
    /// Where to write the report.
    pub out: PathBuf,
    /// Only these scenarios (all when empty).
    pub only: Vec<u8>,
    /// Resources in the scale scenario and creates in the real-load one (default 100,000).
    pub scale: Option<usize>,
    /// Length of the soak in seconds (default 600, or 30 with `quick`).
    pub soak_secs: Option<u64>,
}

impl BenchOptions {
    fn runs(&self, scenario: u8) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }
}

/// Runs every scenario and writes the report.
pub async fn run(options: BenchOptions) -> Result<(), ToolError> {
    let q = options.quick;
    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    println!(
        "{:<22} {:<44} {:>16} {:>16} {:>8} {:<28}",
        "scenario", "metric", "ours", "baseline", "ratio", "target"
    );
    let started = Instant::now();
    let scratch = Scratch::new("main")?;
    let etcd = member::etcd(&scratch.0).await?;
    let ttl_secs = 2;
    let config = procs::master_config(&scratch.0, ttl_secs)?;
    let leader = procs::master(1, &etcd.url, &config)?;
    let client = http_client(64)?;
    wait_until("the first master to lead", Duration::from_secs(30), || {
        is_ready_leader(&client, &leader.url)
    })
    .await?;
    let raw = Client::connect([etcd.url.as_str()], None).await?;

    if options.runs(1) {
        cached_read(&mut report, q, &scratch, &client, &leader, &raw, &etcd.url).await?;
    }
    if options.runs(2) {
        create_on_leader(&mut report, q, &client, &leader, &raw).await?;
    }
    let follower = procs::master(2, &etcd.url, &config)?;
    wait_until("the follower", Duration::from_secs(30), || {
        is_ready(&client, &follower.url)
    })
    .await?;
    if options.runs(3) {
        through_follower(&mut report, q, &client, &leader, &follower).await?;
    }
    if options.runs(4) {
        propagation(&mut report, q, &client, &leader, &follower, &raw).await?;
    }
    if options.runs(5) {
        failover(
            &mut report,
            &client,
            leader,
            follower,
            &etcd,
            &config,
            ttl_secs,
        )
        .await?;
    }
    drop(raw);
    drop(etcd);
    if options.runs(6) {
        scale(&mut report, q, options.scale).await?;
    }
    if options.runs(7) {
        ids(&mut report, q);
    }
    if options.runs(8) {
        scheduling(&mut report, q).await?;
    }
    if options.runs(9) {
        fanout(&mut report, q).await?;
    }
    if options.runs(10) {
        worker_memory(&mut report, q).await?;
    }
    if options.runs(11) {
        real_load(&mut report, q, options.scale).await?;
    }
    if options.runs(12) {
        soak(&mut report, q, options.soak_secs).await?;
    }
    if options.runs(13) {
        recurring(&mut report, q).await?;
    }
    if options.runs(14) {
        placement(&mut report, q).await?;
    }
    if options.runs(15) {
        politeness(&mut report, q).await?;
    }
    if options.runs(16) {
        fair_use(&mut report, q).await?;
    }
    if options.runs(17) {
        member_loss(&mut report, q).await?;
    }

    let total = started.elapsed();
    println!("benchmark finished in {:.1} s", total.as_secs_f64());
    write_report(&options, &report, total)?;
    Ok(())
}
