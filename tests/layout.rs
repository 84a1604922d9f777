//! The source tree's layering, read from the code's own `crate::` and `super::` paths: each
//! part imports only the parts below it, the roles never import each other, no two modules
//! import each other, and no file is too long to read. The README's layout table and
//! `src/lib.rs` describe the same floors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each part may not import, bottom up. `server` is the composition root above the
/// roles; `tools` run the binary and import no role.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "object",
        &[
            "keys", "model", "config", "etcd", "master", "worker", "api", "server", "tools",
        ],
    ),
    (
        "keys",
        &[
            "model", "config", "etcd", "master", "worker", "api", "server", "tools",
        ],
    ),
    (
        "model",
        &[
            "config", "etcd", "master", "worker", "api", "server", "tools",
        ],
    ),
    (
        "config",
        &["etcd", "master", "worker", "api", "server", "tools"],
    ),
    (
        "body",
        &[
            "model", "config", "etcd", "master", "worker", "api", "server", "tools",
        ],
    ),
    (
        "etcd",
        &["model", "master", "worker", "api", "server", "tools"],
    ),
    ("master", &["worker", "api", "server", "tools"]),
    ("worker", &["master", "api", "server", "tools"]),
    ("api", &["worker", "server", "tools"]),
    ("server", &["worker", "tools"]),
    ("tools", &["master", "worker", "api", "server", "ctl"]),
    // The CLI is a client of the HTTP API: it shares no code with what serves it.
    (
        "ctl",
        &[
            "object", "keys", "model", "etcd", "master", "worker", "api", "server", "tools",
        ],
    ),
];

/// Longest a source file may be, its unit tests excepted.
const MAX_LINES: usize = 500;

/// A module path, `["api", "workers"]`; the crate root is empty.
type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every Rust file under `src/` with its module path.
fn modules() -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src()).expect("under src");
            let mut module: Module = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            if rel == Path::new("main.rs") {
                continue;
            }
            out.insert(module, path);
        }
    }
    out
}

/// The file's code, its unit tests excepted, without comment lines.
fn code(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read");
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(str::to_owned)
        .collect()
}

/// The paths a line names through `crate::` or `super::`, brace groups expanded one level:
/// `use super::{a, b::c}` names `super::a` and `super::b::c`.
fn paths(line: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        for (i, _) in line.match_indices(start) {
            if line[..i].chars().next_back().is_some_and(ident) {
                continue;
            }
            let mut segments = Vec::new();
            let mut rest = &line[i..];
            loop {
                let word: String = rest.chars().take_while(|c| ident(*c)).collect();
                if word.is_empty() {
                    break;
                }
                rest = &rest[word.len()..];
                segments.push(word);
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let mut path = segments.clone();
                    path.extend(
                        item.trim()
                            .split("::")
                            .map(|s| s.chars().take_while(|c| ident(*c)).collect::<String>())
                            .filter(|s| !s.is_empty()),
                    );
                    out.push(path);
                }
            } else {
                out.push(segments);
            }
        }
    }
    out
}

/// The module a path from `from` lands in: the longest prefix that is a module.
fn resolve(from: &Module, path: &[String], known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    if rest.first().is_some_and(|s| s == "crate") {
        rest = &rest[1..];
    } else {
        // `super` is the module's parent, whether the module is `a.rs` or `a/mod.rs`.
        base = from.clone();
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?;
            rest = &rest[1..];
        }
    }
    let mut best = None;
    let mut candidate = base;
    if known.contains_key(&candidate) {
        best = Some(candidate.clone());
    }
    for segment in rest {
        candidate.push(segment.clone());
        if known.contains_key(&candidate) {
            best = Some(candidate.clone());
        }
    }
    best
}

/// Module → the modules it imports (itself and the crate root left out).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules();
    let mut edges = BTreeMap::new();
    for (module, path) in &known {
        let mut to = BTreeSet::new();
        for line in code(path) {
            for p in paths(&line) {
                if let Some(target) = resolve(module, &p, &known)
                    && target != *module
                    && !target.is_empty()
                {
                    to.insert(target);
                }
            }
        }
        edges.insert(module.clone(), to);
    }
    edges
}

#[test]
fn no_part_imports_a_part_above_it_and_the_roles_never_import_each_other() {
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for (from, targets) in graph() {
        let Some(part) = from.first() else { continue };
        seen.insert(part.clone());
        let forbidden = FORBIDDEN
            .iter()
            .find(|(p, _)| p == part)
            .map_or(&[][..], |(_, f)| *f);
        for target in targets {
            if forbidden.contains(&target[0].as_str()) {
                bad.push(format!("{} imports {}", from.join("::"), target.join("::")));
            }
        }
    }
    for (part, _) in FORBIDDEN {
        assert!(
            seen.contains(*part),
            "no module of part {part}: is the table stale?"
        );
    }
    assert!(
        bad.is_empty(),
        "imports that run back up:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = graph();
    let mut circles = Vec::new();
    for (a, targets) in &graph {
        for b in targets {
            // A parent module declares its children; a child using its parent is no circle.
            if a < b && !b.starts_with(a) && !a.starts_with(b) && graph[b].contains(a) {
                circles.push(format!("{} <-> {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_graph_sees_imports() {
    // The checks above are only as good as the graph: it must see known edges.
    let graph = graph();
    let edge = |a: &str, b: &str| {
        let a: Module = a.split("::").map(str::to_owned).collect();
        let b: Module = b.split("::").map(str::to_owned).collect();
        graph.get(&a).is_some_and(|t| t.contains(&b))
    };
    assert!(edge("server", "api"), "server uses the API's router");
    assert!(
        edge("api::workers", "api::views"),
        "a braced `super::` import"
    );
    assert!(edge("model::resource", "object"), "a `crate::` import");
    assert!(edge("etcd::cache::store", "etcd::cache::event"));
}

#[test]
fn no_source_file_is_over_500_lines_unit_tests_excepted() {
    let long: Vec<String> = modules()
        .values()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).expect("read");
            let lines = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "files to split:\n{}", long.join("\n"));
}
