//! The report: one row per measurement, printed as a table and written as Markdown with the
//! machine it ran on.

use std::fmt::Write as _;
use std::time::Duration;

use super::BenchOptions;
use crate::tools::procs::ToolError;

/// One row of the report.
pub(super) struct Row {
    scenario: &'static str,
    metric: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: Option<bool>,
}

pub(super) struct Report {
    pub(super) rows: Vec<Row>,
    /// Lines that explain rows (per-process figures), printed and written after the table.
    pub(super) notes: Vec<String>,
}

impl Report {
    /// A line that explains a row of `scenario`, printed now and written under the table.
    pub(super) fn note(&mut self, scenario: &'static str, line: impl Into<String>) {
        let line = format!("{scenario}: {}", line.into());
        println!("  {line}");
        self.notes.push(line);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        scenario: &'static str,
        metric: impl Into<String>,
        ours: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        target: &'static str,
        met: Option<bool>,
    ) {
        let row = Row {
            scenario,
            metric: metric.into(),
            ours: ours.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            target,
            met,
        };
        println!(
            "{:<22} {:<44} {:>16} {:>16} {:>8} {:<28} {}",
            row.scenario,
            row.metric,
            row.ours,
            row.baseline,
            row.ratio,
            row.target,
            verdict(row.met)
        );
        self.rows.push(row);
    }

    /// A duration row, met when `took` is under `limit`.
    pub(super) fn add_duration(
        &mut self,
        scenario: &'static str,
        metric: String,
        took: Duration,
        baseline: String,
        (target, limit): (&'static str, Duration),
    ) {
        self.add(
            scenario,
            metric,
            ms(took),
            baseline,
            "",
            target,
            Some(took < limit),
        );
    }

    /// A throughput row: ours against the baseline in operations per second, with their ratio;
    /// met when the ratio is at least `min`.
    pub(super) fn add_rate_ratio(
        &mut self,
        scenario: &'static str,
        metric: &str,
        (ours, baseline): (f64, f64),
        target: &'static str,
        min: f64,
    ) {
        let ratio = ours / baseline;
        self.add(
            scenario,
            metric,
            rate(ours),
            rate(baseline),
            format!("{ratio:.2}x"),
            target,
            Some(ratio >= min),
        );
    }
}

pub(super) fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub(super) fn rate(r: f64) -> String {
    format!("{r:.0}/s")
}

pub(super) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.0} GiB", kb as f64 / 1048576.0),
        );
    let etcd = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory} memory; {etcd}; one etcd member on loopback")
}

pub(super) fn write_report(
    options: &BenchOptions,
    report: &Report,
    total: Duration,
) -> Result<(), ToolError> {
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `cargo run --release -- bench`{} on {date}, in {:.0} s.\n",
        if options.quick {
            " --quick (smoke counts, not figures to quote)"
        } else {
            ""
        },
        total.as_secs_f64()
    );
    let _ = writeln!(md, "Machine: {}.\n", machine());
    let _ = writeln!(
        md,
        "Every figure is measured in the same run as its baseline; ratios, not absolute numbers, \
         are what carry over to another machine. The load generator is a closed-loop HTTP/1.1 \
         keep-alive client (reqwest) in the benchmark process, sharing the machine's cores with \
         etcd and the masters.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | metric | ours | baseline | ratio | target | |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in &report.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.metric,
            r.ours,
            r.baseline,
            r.ratio,
            r.target,
            verdict(r.met)
        );
    }
    if !report.notes.is_empty() {
        let _ = writeln!(md, "\nNotes:\n\n```\n{}\n```", report.notes.join("\n"));
    }
    std::fs::write(&options.out, md)?;
    println!("report written to {}", options.out.display());
    Ok(())
}
