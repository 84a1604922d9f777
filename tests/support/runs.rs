//! What task runners record of their own runs, so that "at most one running instance" is
//! judged from the task processes themselves, not from the control plane's view.

use std::path::Path;

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

/// Start and end times (ns) of each task run, by task and worker, as the runners logged them.
pub fn runs(log: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: Vec<Run> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, task, worker, at] = parts[..] else {
            continue;
        };
        let Ok(at) = at.parse::<u128>() else { continue };
        match what {
            "start" => runs.push((task.into(), worker.into(), at, None)),
            "end" => {
                if let Some(run) = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.0 == task && r.1 == worker && r.3.is_none())
                {
                    run.3 = Some(at);
                }
            }
            _ => {}
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
