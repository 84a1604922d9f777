//! There is no Docker engine here, so the compose file is checked instead: it parses, every
//! service's command follows the CLI contract, etcd is a pinned 3.5.x image with a healthcheck,
//! healthchecks probe routes that exist, and one port is published for the API.

use clap::Parser;
use crawler::cli::{Cli, Command};
use serde_yaml_ng::Value;

fn compose() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml");
    let mut value: Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    value.apply_merge().expect("merge keys resolve");
    value
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .expect("a list")
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => serde_yaml_ng::to_string(other)
                .expect("scalar")
                .trim()
                .to_owned(),
        })
        .collect()
}

fn port_in(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[test]
fn compose_file_follows_the_cli_contract() {
    let file = compose();
    let services = file["services"].as_mapping().expect("services");
    let spec: serde_json::Value =
        serde_json::from_str(&crawler::api::openapi::spec_json()).expect("spec");

    let etcd = &file["services"]["etcd"];
    let image = etcd["image"].as_str().expect("etcd image");
    let tag = image.rsplit(':').next().expect("a tag");
    let parts: Vec<&str> = tag.trim_start_matches('v').split('.').collect();
    assert!(
        parts.len() == 3 && parts[0] == "3" && parts[1] == "5" && parts[2].parse::<u32>().is_ok(),
        "etcd must be pinned to a 3.5.x patch release, got {image}"
    );
    assert!(etcd["healthcheck"]["test"].is_sequence());

    let (mut masters, mut workers, mut published) = (0, 0, Vec::new());
    let mut demo_site = None;
    let mut workers_crawl = Vec::new();
    for (name, service) in services {
        let name = name.as_str().expect("name");
        if name == "etcd" {
            continue;
        }
        assert!(
            service["build"].is_string(),
            "{name} is built from the Dockerfile"
        );
        let mut argv = vec!["crawler".to_owned()];
        argv.extend(strings(&service["command"]));
        let cli = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{name}: {argv:?} breaks the CLI contract: {e}"));
        if let Command::DemoSite(site) = &cli.command {
            demo_site = Some((name.to_owned(), port_in(&site.addr)));
            continue;
        }
        let depends = &service["depends_on"]["etcd"]["condition"];
        assert_eq!(
            depends.as_str(),
            Some("service_healthy"),
            "{name} waits for etcd"
        );
        let probe = strings(&service["healthcheck"]["test"]).join(" ");
        let url = probe
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("the healthcheck probes a URL");
        let path = format!("/{}", url.splitn(4, '/').nth(3).expect("a path"));
        match cli.command {
            Command::Master(m) => {
                masters += 1;
                assert!(spec["paths"][&path].is_object(), "{name}: no route {path}");
                assert_eq!(
                    port_in(url),
                    port_in(&m.http),
                    "{name}: probe hits its port"
                );
                assert!(
                    m.advertise.is_some_and(|a| a.contains(name)),
                    "{name} advertises itself"
                );
                for p in service["ports"].as_sequence().into_iter().flatten() {
                    let p = p.as_str().expect("port mapping");
                    let inside: u16 = p
                        .rsplit(':')
                        .next()
                        .and_then(|x| x.parse().ok())
                        .expect("port");
                    assert_eq!(inside, port_in(&m.http), "{name} publishes its API port");
                    published.push(p.to_owned());
                }
            }
            Command::Worker(w) => {
                workers += 1;
                workers_crawl.push(
                    service["environment"]["CRAWLER_DEMO_SITE"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
                assert_eq!(path, crawler::worker::HEALTHZ, "{name}: no route {path}");
                assert_eq!(
                    port_in(url),
                    port_in(&w.addr),
                    "{name}: probe hits its port"
                );
            }
            _ => panic!("{name} runs neither a master nor a worker"),
        }
    }
    assert_eq!((masters, workers), (3, 3));
    // Every worker's tasks find the demo site the compose file runs.
    let (site, port) = demo_site.expect("a demo-site service");
    for url in &workers_crawl {
        assert_eq!(
            url,
            &format!("http://{site}:{port}/"),
            "a worker's CRAWLER_DEMO_SITE"
        );
    }
    assert_eq!(
        published.len(),
        1,
        "one published port for the API: {published:?}"
    );
}

#[test]
fn dockerfile_builds_with_protoc_and_runs_as_non_root() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let text = std::fs::read_to_string(path).expect("Dockerfile");
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    assert!(text.contains("protobuf-compiler"));
    // protoc alone lacks google/protobuf/descriptor.proto, which etcd's protos import.
    assert!(text.contains("libprotobuf-dev"));
    // The example runner and what runs it are in the image.
    assert!(text.contains("python3"));
    assert!(text.contains("scripts/example_crawler.py"));
    // ... with the agent's helper it imports.
    assert!(text.contains("scripts/crawler_agent.py"));
    let user = text
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "USER root");
    assert!(text.contains("ENTRYPOINT [\"crawler\"]"));
}
