//! The API contract, checked by tools nobody on this project wrote: `openapi-spec-validator`
//! checks that the spec is valid OpenAPI, and `schemathesis` (every check, every phase:
//! coverage, fuzzing, stateful) checks that a running cluster does what the spec says.
//!
//! schemathesis talks to the *follower* of a two-master cluster with a worker, so every write
//! crosses the proxy to the leader. Both tools come from PyPI in a virtualenv that
//! `scripts/setup.sh test` makes (`target/contract-venv`, or `$CRAWLER_CONTRACT_VENV`).
//! schemathesis's own settings are in `tests/contract/schemathesis.toml`.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("CRAWLER_CONTRACT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/contract-venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: `source scripts/setup.sh test` installs openapi-spec-validator and \
         schemathesis from PyPI into {}",
        path.display(),
        venv.display()
    );
    path
}

/// schemathesis (every check, every phase) against `url` with the committed spec and `args`;
/// whether it passed, and all it printed.
async fn schemathesis(url: &str, args: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(tool("schemathesis"));
    command
        .arg("--config-file")
        .arg(root.join("tests/contract/schemathesis.toml"))
        .args(["run", "--checks", "all"])
        .args(args)
        .args(["--url", url])
        .arg(root.join("openapi/openapi.json"))
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "");
    tokio::task::spawn_blocking(move || run_tool(&mut command))
        .await
        .expect("schemathesis")
}

#[test]
fn openapi_spec_validator_accepts_the_committed_specs() {
    for file in ["openapi/openapi.json", "openapi/agent.json"] {
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let (ok, text) = run_tool(Command::new(tool("openapi-spec-validator")).arg(&spec));
        assert!(ok, "openapi-spec-validator rejects {file}:\n{text}");
        println!("measured: openapi-spec-validator {file}: {}", text.trim());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_through_a_follower() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = fault_config(dir.path());
    let endpoints = vec![etcd.url.clone()];
    let first = support::master_process(1, &endpoints, &config, &[]);
    ready_leader(&[&first.url], Duration::from_secs(20)).await;
    let follower = support::master_process(2, &endpoints, &config, &[]);
    wait_ready(&follower.url).await;
    wait_leader_known(&follower.url, &first.url).await;
    let _worker = support::worker_process(1, &endpoints, &config);
    wait_workers(&follower.url, 1).await;

    let (ok, text) = schemathesis(&follower.url, &["--max-examples", "30"]).await;
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && l.starts_with('='))
        .unwrap_or("(no summary line)")
        .to_owned();
    let cases = text
        .lines()
        .find(|l| l.trim_start().ends_with("passed") && l.contains("generated"))
        .unwrap_or("")
        .trim()
        .to_owned();
    println!("measured: schemathesis through a follower: {cases}; {summary}");
    assert!(ok, "schemathesis found failures:\n{text}");
    // Nothing it sent left a key outside the layout.
    let mut client = etcd.client().await;
    let all = client
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .expect("range");
    let keys: Vec<String> = all
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    for key in &keys {
        // A history belongs to a resource that exists: none is left behind by a delete.
        let history_of_a_resource = key
            .strip_prefix("/crawler/history/")
            .is_some_and(|name| keys.contains(&format!("/resources/{name}")));
        // So does a worker's assignment key.
        let assignment_of_a_resource = key
            .strip_prefix("/crawler/assignments/")
            .and_then(|rest| rest.rsplit_once('/'))
            .is_some_and(|(_, name)| keys.contains(&format!("/resources/{name}")));
        // Budgets are the operators'; a worker's demand and shares belong to a registered one.
        let politeness_of_a_worker = ["/crawler/politeness/demand:", "/crawler/politeness/shares:"]
            .iter()
            .filter_map(|p| key.strip_prefix(p))
            .any(|node| {
                keys.iter()
                    .any(|k| k.starts_with("/micro/registry/") && k.ends_with(&format!("/{node}")))
            });
        assert!(
            key.starts_with("/resources/")
                || key.starts_with("/crawler/politeness/budget:")
                || politeness_of_a_worker
                || key.starts_with("/micro/registry/")
                || key.starts_with("/crawler/election/")
                || key.starts_with("/crawler/status/")
                || key.starts_with("/crawler/schedule/")
                || history_of_a_resource
                || assignment_of_a_resource
                // The audit trail records every write, refused ones too; retention bounds it.
                || key.starts_with("/crawler/audit/"),
            "stray etcd key {key:?}"
        );
    }
}

/// schemathesis with a viewer's token, on every write the spec lists (every phase): it finds
/// the contract kept, and the master's own request counts show that every write it sent was
/// refused with 403 (a body over the limit is refused with 413 before the token is read), and
/// every method a route does not take got 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_a_viewer_token_gets_only_403_on_writes() {
    const VIEWER: &str = "viewer-token-for-schemathesis-0123";
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "master:\n  session_ttl_secs: 2\nauth:\n  protect_reads: true\n  clients:\n    - {{name: team, role: viewer, token: {VIEWER}}}\nlog:\n  level: warn\n"
        ),
    )
    .expect("config");
    let master = support::master_process(1, std::slice::from_ref(&etcd.url), &config, &[]);
    wait_ready(&master.url).await;

    let header = format!("Authorization: Bearer {VIEWER}");
    let (ok, text) = schemathesis(
        &master.url,
        &[
            "--max-examples",
            "10",
            "--include-method",
            "POST",
            "--include-method",
            "PUT",
            "--include-method",
            "PATCH",
            "--include-method",
            "DELETE",
            "-H",
            &header,
        ],
    )
    .await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(ok, "schemathesis found failures:\n{text}");
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("openapi/openapi.json")).expect("spec"),
    )
    .expect("json");
    let metrics = metrics_text(&master.url).await;
    let mut refused = 0u64;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("crawler_http_requests_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
        };
        let (route, method, status) = (label("route"), label("method"), label("status"));
        if !["POST", "PUT", "PATCH", "DELETE"].contains(&method) {
            continue;
        }
        let declared = spec["paths"][route][method.to_lowercase()].is_object();
        let count: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if declared {
            // Refused for the role, or for a body over the limit before the token is read.
            assert!(
                status == "403" || status == "413",
                "a viewer's write got something else than 403: {line}"
            );
            refused += u64::from(status == "403") * count;
        } else {
            assert!(
                status == "405" || status == "404",
                "an undeclared method: {line}"
            );
        }
    }
    assert!(refused >= 50, "only {refused} writes were sent");
    println!("measured: schemathesis with a viewer token: {refused} writes, every one 403");
}
