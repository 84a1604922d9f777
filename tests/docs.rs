//! The README stays true: its configuration table names every key of the shipped
//! `config.yaml` (and nothing that is not a key), and its two commands exist.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml_ng::Value;

fn keys(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let k = k.as_str().expect("string key");
                let path = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                if matches!(v, Value::Mapping(_)) {
                    keys(&path, v, out);
                } else {
                    out.insert(path);
                }
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

#[test]
fn readme_config_table_matches_config_yaml() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let yaml = std::fs::read_to_string(root.join("config.yaml")).expect("config.yaml");
    let parsed: Value = serde_yaml_ng::from_str(&yaml).expect("config.yaml parses");
    let mut in_file = BTreeSet::new();
    keys("", &parsed, &mut in_file);
    let table: BTreeSet<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| key | default | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    assert!(!table.is_empty(), "README has a configuration table");
    let missing: Vec<_> = in_file.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "config.yaml keys missing from the README table: {missing:?}"
    );
    // Every key the table names is one the configuration accepts (unknown keys are refused).
    for key in &table {
        let mut doc = String::new();
        let parts: Vec<&str> = key.split('.').collect();
        for (depth, part) in parts.iter().enumerate() {
            doc.push_str(&"  ".repeat(depth));
            doc.push_str(part);
            doc.push(':');
            doc.push(if depth + 1 == parts.len() { ' ' } else { '\n' });
        }
        doc.push_str("~\n");
        if let Err(error) = crawler::config::Config::from_yaml(&doc, "README") {
            assert!(
                !error.to_string().contains("unknown field"),
                "README names {key}, which the configuration does not know: {error}"
            );
        }
    }
    // The shipped file (without the commented keys) is a valid configuration.
    crawler::config::Config::from_yaml(&yaml, "config.yaml").expect("shipped config is valid");
}

#[test]
fn readme_shows_the_two_commands_and_they_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    for command in ["scripts/run", "scripts/test"] {
        assert!(readme.contains(command), "README shows {command}");
        assert!(root.join(command).is_file(), "{command} exists");
    }
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(
        ci.contains("scripts/test"),
        ".ci/run runs the README's test command"
    );
}

#[test]
fn every_source_path_the_readme_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    // A path starts the word: `deploy/prometheus/tests/x` is one path, not also `tests/x`.
    let paths = regex::Regex::new(
        r"(?:^|[^A-Za-z0-9_./-])((?:src|tests|scripts|deploy)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])",
    )
    .expect("re");
    let named: BTreeSet<&str> = paths
        .captures_iter(&readme)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .collect();
    assert!(named.len() > 20, "the README names source paths: {named:?}");
    let missing: Vec<&&str> = named.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "the README names paths that do not exist: {missing:?}"
    );
}
