//! The manifests in `deploy/kubernetes/`, checked offline: `kubernetes-validate` (from PyPI,
//! strict, against Kubernetes 1.30's schemas) accepts every object and rejects a broken one;
//! the ConfigMap's config loads as a crawler config; each container's command, once its shell
//! has expanded it for a pod, follows the CLI contract on the ports its probes and Services
//! use; the probes hit routes that exist; and every object a budget or Service selects exists.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use crawler::cli::{Cli, Command as CliCommand};
use serde::Deserialize;
use serde_yaml_ng::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// The manifest files, kustomization.yaml left out.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

/// Every object of every manifest.
fn objects() -> Vec<Value> {
    let mut out = Vec::new();
    for file in manifests() {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).expect("YAML");
            if !value.is_null() {
                out.push(value);
            }
        }
    }
    out
}

fn kind_named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn validator() -> PathBuf {
    let venv = std::env::var("CRAWLER_CONTRACT_VENV")
        .unwrap_or_else(|_| format!("{}/target/contract-venv", env!("CARGO_MANIFEST_DIR")));
    let tool = Path::new(&venv).join("bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: `source scripts/setup.sh test` installs kubernetes-validate from PyPI",
        tool.display()
    );
    tool
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    support::run_tool(
        Command::new(validator())
            .args(["--strict", "-k", "1.30.0"])
            .args(files),
    )
}

#[test]
fn kubernetes_validate_accepts_every_manifest_and_rejects_a_broken_one() {
    let files = manifests();
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");
    let passed = text.matches(" passed ").count();
    assert_eq!(passed, objects().len(), "every object validated: {text}");
    println!("measured: kubernetes-validate --strict (1.30): {passed} objects passed");
    // The validator can fail: an unknown field in a container is refused.
    let broken = tempfile::tempdir().expect("dir");
    let file = broken.path().join("masters.yaml");
    let text = std::fs::read_to_string(dir().join("masters.yaml")).expect("read");
    std::fs::write(&file, text.replace("readinessProbe:", "readinesProbe:")).expect("write");
    let (ok, text) = validate(&[file]);
    assert!(!ok, "a misspelt field must fail: {text}");
    // kustomization.yaml lists every manifest.
    let kustomization: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir().join("kustomization.yaml")).expect("read"),
    )
    .expect("YAML");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, present);
}

/// The argv a container's `sh -c` command runs in a pod named `pod` with IP `ip`: the shell
/// expands it, with `exec crawler` printing its arguments instead.
fn argv(container: &Value, pod: &str, ip: &str) -> Vec<String> {
    let command = container["command"].as_sequence().expect("command");
    assert_eq!(command[0], "sh");
    let script = command[2].as_str().expect("script");
    let script = script.replacen("exec crawler", "exec printf '%s\\n' crawler", 1);
    let output = Command::new("sh")
        .args(["-c", &script])
        .env("HOSTNAME", pod)
        .env("POD_IP", ip)
        .output()
        .expect("sh");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn container(statefulset: &Value) -> &Value {
    &statefulset["spec"]["template"]["spec"]["containers"][0]
}

fn probe_path(container: &Value, probe: &str) -> String {
    container[probe]["httpGet"]["path"]
        .as_str()
        .expect("path")
        .to_owned()
}

#[test]
fn the_pods_run_crawler_as_its_cli_says_with_its_config_and_probes() {
    let objects = objects();
    let config = kind_named(&objects, "ConfigMap", "crawler-config");
    let yaml = config["data"]["config.yaml"].as_str().expect("config.yaml");
    let loaded = crawler::config::Config::from_yaml(yaml, "the ConfigMap").expect("loads");
    loaded.validate().expect("valid");
    assert_eq!(loaded.etcd.endpoints.len(), 3);
    let spec: serde_json::Value =
        serde_json::from_str(&crawler::api::openapi::spec_json()).expect("spec");

    // Masters: the id is the pod's ordinal, the advertised URL its IP.
    let masters = kind_named(&objects, "StatefulSet", "crawler-master");
    let master = container(masters);
    let cli = Cli::try_parse_from(argv(master, "crawler-master-2", "10.0.0.5")).expect("parses");
    let CliCommand::Master(args) = cli.command else {
        panic!("a master")
    };
    assert_eq!(args.id, 2);
    assert_eq!(args.http, "0.0.0.0:8080");
    assert_eq!(args.advertise.as_deref(), Some("http://10.0.0.5:8080"));
    assert_eq!(master["ports"][0]["containerPort"], 8080);
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = probe_path(master, probe);
        assert!(spec["paths"][&path]["get"].is_object(), "{path} is a route");
    }
    assert_eq!(probe_path(master, "readinessProbe"), "/readyz");

    // Workers: the id is the ordinal, the address the pod's IP on the port the probes use.
    let workers = kind_named(&objects, "StatefulSet", "crawler-worker");
    let worker = container(workers);
    let cli = Cli::try_parse_from(argv(worker, "crawler-worker-11", "10.0.0.6")).expect("parses");
    let CliCommand::Worker(args) = cli.command else {
        panic!("a worker")
    };
    assert_eq!(args.id, 11);
    assert_eq!(args.addr, "10.0.0.6:9089");
    assert_eq!(worker["ports"][0]["containerPort"], 9089);
    assert_eq!(probe_path(worker, "readinessProbe"), "/healthz");
    assert_eq!(
        worker["volumeMounts"][1]["mountPath"].as_str(),
        loaded.worker.data_dir.as_deref().and_then(Path::to_str),
        "the task dirs are on the data volume"
    );

    // etcd: three members, named as the initial cluster names them, and as the config's
    // endpoints reach them.
    let etcd = kind_named(&objects, "StatefulSet", "etcd");
    assert_eq!(etcd["spec"]["replicas"], 3);
    let script = container(etcd)["command"][2].as_str().expect("script");
    for (i, endpoint) in loaded.etcd.endpoints.iter().enumerate() {
        assert!(script.contains(&format!("etcd-{i}=http://etcd-{i}.etcd:2380")));
        assert_eq!(endpoint, &format!("http://etcd-{i}.etcd:2379"));
    }

    // Every budget, Service and policy selects pods some StatefulSet makes.
    let pod_labels: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "StatefulSet")
        .map(|o| &o["spec"]["template"]["metadata"]["labels"])
        .collect();
    let selects = |selector: &Value| {
        let wanted = selector.as_mapping().expect("a selector");
        pod_labels.iter().any(|labels| {
            wanted
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
        })
    };
    let mut checked = 0;
    for o in &objects {
        let selector = match o["kind"].as_str() {
            Some("PodDisruptionBudget") => &o["spec"]["selector"]["matchLabels"],
            Some("Service") => &o["spec"]["selector"],
            Some("NetworkPolicy") => &o["spec"]["podSelector"]["matchLabels"],
            _ => continue,
        };
        assert!(
            selects(selector),
            "{:?} selects no pod",
            o["metadata"]["name"]
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
    let budgets: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "PodDisruptionBudget")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(budgets, BTreeSet::from(["crawler-master", "etcd"]));
}
