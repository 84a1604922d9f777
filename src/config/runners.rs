//! The runner templates a worker's operator configures, and what of them this machine lacks:
//! a worker warns of it at start-up, and `crawler dev` refuses to start a demo whose every task
//! would fail.

use std::ffi::OsStr;
use std::path::Path;

use serde::Deserialize;

/// Command templates that run tasks. `{name}`, `{id}` and `{epoch}` in an argument are
/// replaced by the task's values; nothing runs through a shell unless the template names one.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Runners {
    /// The command for every task no rule below matches, e.g. `["scrapy", "crawl", "{name}"]`.
    pub default: Option<Vec<String>>,
    /// Commands for tasks whose name matches a glob (`*` any run of characters, `?` one);
    /// the first match wins.
    pub rules: Vec<RunnerRule>,
}

/// A command for the tasks whose names match a pattern.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunnerRule {
    /// A task name, or a glob over names.
    pub tasks: String,
    /// The command template.
    pub command: Vec<String>,
}

/// A part of a runner template this machine lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} needs {wanted:?}, which {why}")]
pub struct Missing {
    /// The config key of the template: `worker.runners.default`, `worker.runners.rules[0]`.
    pub key: String,
    /// The program or file, as the template names it once `{worker_dir}` is filled in.
    pub wanted: String,
    /// Why it is missing.
    pub why: &'static str,
}

impl Runners {
    /// What the templates need that this machine lacks: a program found neither at its path
    /// nor on `path` (the `PATH` tasks are started with), or a file under `{worker_dir}`. A
    /// worker with one would fail every task it hands to that template. Parts holding another
    /// placeholder, and relative paths (which resolve in each task's own directory), are not
    /// checked.
    pub fn missing(&self, worker_dir: &Path, path: Option<&OsStr>) -> Vec<Missing> {
        let templates = self
            .default
            .iter()
            .map(|command| ("worker.runners.default".to_owned(), command))
            .chain(
                self.rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| (format!("worker.runners.rules[{i}]"), &rule.command)),
            );
        let dir = worker_dir.display().to_string();
        let mut found = Vec::new();
        for (key, command) in templates {
            for (i, word) in command.iter().enumerate() {
                let under_dir = word.starts_with("{worker_dir}/");
                let filled = word.replace("{worker_dir}", &dir);
                if filled.contains('{') {
                    continue;
                }
                let why = if i == 0 && !filled.contains('/') {
                    (!on_path(&filled, path)).then_some("is not on PATH")
                } else if (i == 0 && Path::new(&filled).is_absolute()) || under_dir {
                    (!Path::new(&filled).exists()).then_some("does not exist")
                } else {
                    None
                };
                if let Some(why) = why {
                    found.push(Missing {
                        key: key.clone(),
                        wanted: filled,
                        why,
                    });
                }
            }
        }
        found
    }
}

/// Whether `program` is an executable file in one of `path`'s directories.
fn on_path(program: &str, path: Option<&OsStr>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .any(|file| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_and_files_are_named_with_their_key() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("scripts")).expect("mkdir");
        std::fs::write(dir.path().join("scripts/ok.py"), "").expect("write");
        let runners = Runners {
            default: Some(vec![
                "sh".into(),
                "{worker_dir}/scripts/ok.py".into(),
                "{name}".into(),
            ]),
            rules: vec![
                RunnerRule {
                    tasks: "a-*".into(),
                    command: vec!["no-such-program-here".into(), "x".into()],
                },
                RunnerRule {
                    tasks: "b-*".into(),
                    command: vec!["python3".into(), "{worker_dir}/scripts/gone.py".into()],
                },
                RunnerRule {
                    tasks: "c-*".into(),
                    command: vec!["/no/such/abs".into(), "./relative".into(), "{id}".into()],
                },
                RunnerRule {
                    tasks: "d-*".into(),
                    command: vec!["./in-task-dir".into(), "{name}".into()],
                },
            ],
        };
        let path = std::env::var_os("PATH");
        let found = runners.missing(dir.path(), path.as_deref());
        let shown: Vec<_> = found.iter().map(|m| (m.key.as_str(), m.why)).collect();
        assert_eq!(
            shown,
            [
                ("worker.runners.rules[0]", "is not on PATH"),
                ("worker.runners.rules[1]", "does not exist"),
                ("worker.runners.rules[2]", "does not exist"),
            ],
            "{found:?}"
        );
        assert!(found[1].wanted.ends_with("/scripts/gone.py"), "{found:?}");
        assert!(
            found[0]
                .to_string()
                .contains("worker.runners.rules[0] needs \"no-such-program-here\""),
            "{}",
            found[0]
        );
        // No PATH at all: a bare program name is never found.
        assert_eq!(runners.missing(dir.path(), None).len(), 5);
    }
}
