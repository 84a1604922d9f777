//! The source tree's layering: each part imports only the parts below it, so that the worker
//! and the master share `etcd` and `model` without depending on each other, and nothing in the
//! product depends on the tools.

use std::path::Path;

/// Every `crate::<part>` path used by the Rust files under `dir`, with the file it is in.
fn imports(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                    for (i, _) in line.match_indices("crate::") {
                        let part: String = line[i + 7..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        out.push((path.display().to_string(), part));
                    }
                }
            }
        }
    }
    out
}

fn assert_no_imports(part: &str, forbidden: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(part);
    let found = imports(&dir);
    assert!(!found.is_empty(), "{part} has no crate imports at all?");
    let bad: Vec<_> = found
        .iter()
        .filter(|(_, p)| forbidden.contains(&p.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "src/{part} imports a part above it: {bad:?}"
    );
}

#[test]
fn the_etcd_layer_depends_on_no_role_and_no_model() {
    assert_no_imports("etcd", &["master", "worker", "api", "tools", "model"]);
}

#[test]
fn the_model_depends_on_no_role() {
    assert_no_imports("model", &["master", "worker", "api", "tools"]);
}

#[test]
fn the_worker_does_not_depend_on_the_master() {
    assert_no_imports("worker", &["master", "api", "tools"]);
}

#[test]
fn the_master_and_the_api_do_not_depend_on_the_worker_or_the_tools() {
    assert_no_imports("master", &["worker", "tools"]);
    assert_no_imports("api", &["worker", "tools"]);
}
