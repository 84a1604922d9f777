//! Scenario 7: snowflake ID generation, single-threaded and contended.

use std::time::Instant;

use super::report::Report;

pub(super) fn ids(report: &mut Report, q: bool) {
    let n: u64 = if q { 1_000_000 } else { 20_000_000 };
    let Ok(generator) = crate::model::snowflake::Generator::new(1) else {
        return;
    };
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..n {
        if let Ok(id) = generator.next_id() {
            last = std::hint::black_box(id);
        }
    }
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(last);
    report.add(
        "7 IDs",
        "snowflake IDs per second, one thread",
        format!("{:.1}M/s", per_sec / 1e6),
        "",
        "",
        ">= 1M/s",
        Some(per_sec >= 1e6),
    );
}
