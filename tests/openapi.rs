//! The committed OpenAPI document is what the code generates, and describes every route.

use std::path::Path;

/// The committed `file` is `generated`; else it says to run `command`.
fn assert_in_sync(file: &str, generated: &str, command: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let committed = std::fs::read_to_string(&path).expect("the spec is committed");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "{file} is stale: run `{command} > {file}`"
    );
}

#[test]
fn committed_spec_is_in_sync() {
    assert_in_sync(
        "openapi/openapi.json",
        &crawler::api::openapi::spec_json(),
        "cargo run -- openapi",
    );
}

#[test]
fn committed_agent_spec_is_in_sync() {
    let generated = crawler::worker::agent::spec_json();
    assert_in_sync(
        "openapi/agent.json",
        &generated,
        "cargo run -- openapi --agent",
    );
    let spec: serde_json::Value = serde_json::from_str(&generated).expect("json");
    for (path, method) in [("/agent/v1/checkpoint", "put"), ("/agent/v1/run", "get")] {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} lacks 401"
        );
    }
}

#[test]
fn every_route_and_shared_parameter_is_described() {
    let spec: serde_json::Value =
        serde_json::from_str(&crawler::api::openapi::spec_json()).expect("json");
    let paths = spec["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/api/v1/workers", &["get"][..]),
        ("/api/v1/workers/{id}", &["get"]),
        ("/api/v1/workers/{id}/cordon", &["post"]),
        ("/api/v1/workers/{id}/uncordon", &["post"]),
        ("/api/v1/workers/{id}/drain", &["post"]),
        ("/api/v1/cluster/thaw", &["post"]),
        ("/api/v1/placement/preview", &["post"]),
        ("/api/v1/resources/{name}/history", &["get"]),
        ("/api/v1/resources", &["get", "post"]),
        (
            "/api/v1/resources/{name}",
            &["get", "put", "patch", "delete"],
        ),
        ("/api/v1/resources/{name}/checkpoint", &["get", "delete"]),
        ("/api/v1/cluster", &["get"]),
        ("/api/v1/events", &["get"]),
        ("/crawler/resource", &["post", "delete"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ] {
        for method in methods {
            let op = &paths[path][*method];
            assert!(op.is_object(), "{method} {path} is not described");
            for (status, response) in op["responses"].as_object().expect("responses") {
                assert!(
                    response["headers"]["x-served-by"].is_object(),
                    "{method} {path} {status} lacks X-Served-By"
                );
            }
            if *method == "get" {
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params.iter().any(|p| p["name"] == "min_revision"),
                    "GET {path} lacks min_revision"
                );
            }
        }
    }
}
