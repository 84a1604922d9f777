//! What task runners record of their own runs, so that "at most one running instance" is
//! judged from the task processes themselves, not from the control plane's view.

use std::path::Path;
use std::time::Duration;

/// One run of a task: task, worker, start and end (ns since the epoch; no end while alive).
pub type Run = (String, String, u128, Option<u128>);

/// A runner rule (YAML, under `worker.runners.rules`) for tasks matching `glob`: each run
/// appends `start <task> <worker> <ns>` to `log`, and `end ...` when it is told to stop.
pub fn logged_runner(glob: &str, log: &Path) -> String {
    format!(
        "      - tasks: \"{glob}\"\n        command: [sh, -c, \"echo start $CRAWLER_TASK_NAME $CRAWLER_WORKER_ID $(date +%s%N) >> {log}; trap 'echo end $CRAWLER_TASK_NAME $CRAWLER_WORKER_ID $(date +%s%N) >> {log}; exit 0' TERM; while true; do sleep 0.05; done\"]\n",
        log = log.display()
    )
}

/// A runner rule (YAML) for tasks matching `glob` that, besides `start` and `end`, appends
/// `beat <task> <worker> <ns>` to `log` every `beat`, with no process started per beat (bash
/// builtins only): a run killed by SIGKILL writes no `end`, and its beats tell when it died.
pub fn heartbeat_runner(glob: &str, log: &Path, beat: Duration) -> String {
    let now = "${EPOCHREALTIME/[.,]/}000";
    let who = "$CRAWLER_TASK_NAME $CRAWLER_WORKER_ID";
    format!(
        "      - tasks: \"{glob}\"\n        command: [bash, -c, \"exec 9<> <(:); echo start {who} {now} >> {log}; trap 'echo end {who} {now} >> {log}; exit 0' TERM; while :; do read -t {secs} -u 9; echo beat {who} {now} >> {log}; done\"]\n",
        log = log.display(),
        secs = beat.as_secs_f64(),
    )
}

/// Start and end times (ns) of each task run, by task and worker, as the runners logged them.
pub fn runs(log: &Path) -> Vec<Run> {
    parse(log, None)
}

/// As [`runs`], for runners that also write beats every `beat` ([`heartbeat_runner`]): a run
/// with no `end` (killed by SIGKILL) ended at the latest one `beat` after its last beat.
pub fn runs_with_beats(log: &Path, beat: Duration) -> Vec<Run> {
    parse(log, Some(beat))
}

fn parse(log: &Path, beat: Option<Duration>) -> Vec<Run> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: Vec<Run> = Vec::new();
    let mut last_beat: Vec<Option<u128>> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, task, worker, at] = parts[..] else {
            continue;
        };
        let Ok(at) = at.parse::<u128>() else { continue };
        if what == "start" {
            runs.push((task.into(), worker.into(), at, None));
            last_beat.push(Some(at));
            continue;
        }
        let Some(i) = runs
            .iter()
            .rposition(|r| r.0 == task && r.1 == worker && r.3.is_none())
        else {
            continue;
        };
        match what {
            "end" => runs[i].3 = Some(at),
            "beat" => last_beat[i] = Some(at),
            _ => {}
        }
    }
    if let Some(beat) = beat {
        for (run, last) in runs.iter_mut().zip(last_beat) {
            if run.3.is_none() {
                run.3 = last.map(|at| at + beat.as_nanos());
            }
        }
    }
    runs
}

/// Every time two runs of one task were alive at once, as (task, how long, ns); a run with no
/// end counts as alive until `now`.
pub fn overlaps(runs: &[Run], now: u128) -> Vec<(String, u128)> {
    let mut found = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if a.0 != b.0 {
                continue;
            }
            let start = a.2.max(b.2);
            let end = a.3.unwrap_or(now).min(b.3.unwrap_or(now));
            if start < end {
                found.push((a.0.clone(), end - start));
            }
        }
    }
    found
}
