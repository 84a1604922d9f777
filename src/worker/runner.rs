//! Which command runs a task: the worker operator's templates, resolved for one task.
//!
//! A resource can only pick among what `worker.runners` allows, by its name: no field of a
//! resource is ever a program or an argument template, and nothing runs through a shell unless
//! the template itself names one. The task's identity reaches the process as `{name}`, `{id}`
//! and `{epoch}` in arguments and as environment variables, its labels as
//! `CRAWLER_LABEL_<KEY>`, and the slot a schedule started it for as `CRAWLER_SCHEDULED_AT`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::Runners;

/// What a task needs to be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Resource name.
    pub name: String,
    /// Snowflake id.
    pub id: String,
    /// Assignment epoch: the resource's mod revision.
    pub epoch: i64,
    /// The resource's labels.
    pub labels: BTreeMap<String, String>,
    /// The slot its schedule started this run for, Unix ms.
    pub scheduled_ms: Option<i64>,
    /// The create revision of its assignment key: the key goes when the task moves away, so
    /// a checkpoint write compared on it can never land after a move.
    pub assigned_at: i64,
}

/// A command ready to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables to add.
    pub env: Vec<(String, String)>,
}

/// Why a task has no command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no runner is configured for task {0:?}: set worker.runners.default, or a \
     worker.runners.rules entry whose tasks pattern matches it"
)]
pub struct NoRunner(pub String);

/// The command for `task`: the first rule whose pattern matches its name, else the default.
/// `{worker_dir}` is the directory the worker was started in (so a template can name a script
/// shipped beside it), since tasks run in directories of their own.
pub fn resolve(
    runners: &Runners,
    task: &TaskSpec,
    worker_dir: &Path,
) -> Result<Resolved, NoRunner> {
    let template = runners
        .rules
        .iter()
        .find(|rule| glob_matches(&rule.tasks, &task.name))
        .map(|rule| &rule.command)
        .or(runners.default.as_ref())
        .filter(|command| !command.is_empty())
        .ok_or_else(|| NoRunner(task.name.clone()))?;
    let worker_dir = worker_dir.display().to_string();
    let fill = |arg: &String| {
        arg.replace("{worker_dir}", &worker_dir)
            .replace("{name}", &task.name)
            .replace("{id}", &task.id)
            .replace("{epoch}", &task.epoch.to_string())
    };
    let mut words = template.iter().map(fill);
    let program = words.next().ok_or_else(|| NoRunner(task.name.clone()))?;
    let mut env = vec![
        ("CRAWLER_TASK_NAME".to_owned(), task.name.clone()),
        ("CRAWLER_TASK_ID".to_owned(), task.id.clone()),
        ("CRAWLER_TASK_EPOCH".to_owned(), task.epoch.to_string()),
    ];
    if let Some(ms) = task.scheduled_ms {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        let at = humantime::format_rfc3339_millis(at).to_string();
        env.push(("CRAWLER_SCHEDULED_AT".to_owned(), at));
    }
    for (key, value) in &task.labels {
        env.push((format!("CRAWLER_LABEL_{}", env_key(key)), value.clone()));
    }
    Ok(Resolved {
        program,
        args: words.collect(),
        env,
    })
}

/// A label key as an environment variable name: upper case, anything else than a letter or a
/// digit becomes `_`.
fn env_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Glob match over the whole name: `*` is any run of characters, `?` any one.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunnerRule;
    use std::path::Path;

    fn task(name: &str) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            id: "7".into(),
            epoch: 42,
            labels: BTreeMap::from([("site-url".into(), "http://x".into())]),
            scheduled_ms: None,
            assigned_at: 1,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("news-*", "news-daily"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a?c", "abc"));
        assert!(glob_matches("*-*-x", "a-b-c-x"));
        assert!(!glob_matches("news-*", "sports"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn the_first_matching_rule_wins_else_the_default() {
        let runners = Runners {
            default: Some(vec!["scrapy".into(), "crawl".into(), "{name}".into()]),
            rules: vec![
                RunnerRule {
                    tasks: "news-*".into(),
                    command: vec!["news".into(), "--epoch={epoch}".into()],
                },
                RunnerRule {
                    tasks: "*".into(),
                    command: vec!["never".into()],
                },
            ],
        };
        let news = resolve(&runners, &task("news-1"), Path::new("/w")).expect("rule");
        assert_eq!(news.program, "news");
        assert_eq!(news.args, vec!["--epoch=42"]);
        let only_default = Runners {
            rules: Vec::new(),
            ..runners
        };
        let other = resolve(&only_default, &task("douban"), Path::new("/w")).expect("default");
        assert_eq!(other.program, "scrapy");
        assert_eq!(other.args, vec!["crawl", "douban"]);
        assert!(other.env.contains(&("CRAWLER_TASK_ID".into(), "7".into())));
        assert!(
            other
                .env
                .contains(&("CRAWLER_LABEL_SITE_URL".into(), "http://x".into()))
        );
    }

    #[test]
    fn no_runner_names_the_config_key() {
        let error = resolve(&Runners::default(), &task("t"), Path::new("/w")).expect_err("none");
        assert!(error.to_string().contains("worker.runners.default"));
    }

    #[test]
    fn a_name_is_never_a_program() {
        // Whatever the name, it only ever fills an argument the operator placed.
        let runners = Runners {
            default: Some(vec![
                "echo".into(),
                "{worker_dir}/x.py".into(),
                "{name}".into(),
            ]),
            rules: Vec::new(),
        };
        let r = resolve(&runners, &task("rm"), Path::new("/w")).expect("default");
        assert_eq!(r.program, "echo");
        assert_eq!(r.args, vec!["/w/x.py", "rm"]);
    }
}
