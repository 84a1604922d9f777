//! Scenario 3: creates through a follower (forwarded to the leader) against creates on the
//! leader itself.

use std::time::{Duration, Instant};

use super::harness::create;
use super::load::percentile;
use super::report::{Report, ms};
use crate::tools::procs::{Proc, ToolError};

pub(super) async fn through_follower(
    report: &mut Report,
    q: bool,
    client: &reqwest::Client,
    leader: &Proc,
    follower: &Proc,
) -> Result<(), ToolError> {
    let n = if q { 50 } else { 1_000 };
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for i in 0..n {
        for (url, samples, tag) in [
            (&leader.url, &mut direct, "d"),
            (&follower.url, &mut proxied, "p"),
        ] {
            let t = Instant::now();
            if create(client, url, &format!("via-{tag}-{i}")).await {
                samples.push(t.elapsed());
            }
        }
    }
    direct.sort();
    proxied.sort();
    let (d, p) = (percentile(&direct, 50), percentile(&proxied, 50));
    report.add(
        "3 create via follower",
        "p50 proxied vs direct (c=1, interleaved)",
        ms(p),
        ms(d),
        format!("+{}", ms(p.saturating_sub(d))),
        "<= direct + 1 ms",
        Some(p <= d + Duration::from_millis(1)),
    );
    report.add(
        "3 create via follower",
        "p99 proxied / direct",
        ms(percentile(&proxied, 99)),
        ms(percentile(&direct, 99)),
        "",
        "",
        None,
    );
    Ok(())
}
