//! Roles, end to end, generated from the committed spec: every operation the spec lists ×
//! every role (and none), through the leader and through a follower, against real etcd. A
//! role below the one the spec names gets 403 naming it; the role named, or a higher one, is
//! never refused for its role. A follower checks, then forwards the caller's token, and the
//! leader checks it again: a token only the follower knows gains nothing there.

use std::time::Duration;

use crate::support::*;
use crawler::config::{AuthConfig, ClientConfig};
use crawler::model::role::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const FOLLOWER_ONLY: &str = "follower-only-token-0123456789";

fn sha256_hex(text: &str) -> String {
    let output = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

fn client(name: &str, role: Role, token: &str) -> ClientConfig {
    ClientConfig {
        name: name.into(),
        role,
        token: Some(token.into()),
        sha256: None,
    }
}

fn auth() -> AuthConfig {
    AuthConfig {
        tokens: vec![ADMIN.into()],
        clients: vec![
            // The viewer's token is configured by its digest alone, as `sha256sum` prints it.
            ClientConfig {
                name: "team".into(),
                role: Role::Viewer,
                token: None,
                sha256: Some(sha256_hex(VIEWER)),
            },
            client("oncall", Role::Operator, OPERATOR),
        ],
        protect_reads: true,
    }
}

async fn send(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let answer = request(method, url, token, &[], body).await;
    (answer.status, answer.json())
}

/// The leader's URL as `master` shows it, asked with a token (reads are protected).
async fn leader_of(master: &str) -> Option<String> {
    let (status, body) = send(
        "GET",
        &format!("{master}/api/v1/cluster"),
        Some(VIEWER),
        None,
    )
    .await;
    (status == 200).then(|| body["leader"]["url"].as_str().map(str::to_owned))?
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "nobody")
        .replace("{name}", "no-such-task")
        .replace("{domain}", "example.org")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_needs_the_role_the_spec_names_through_either_master() {
    let etcd = Etcd::start().await;
    let mut config = test_config(std::slice::from_ref(&etcd.url));
    config.auth = auth();
    // Master 2 leads; master 3, started once it does, follows and knows one more admin token.
    let leader = start_master(config.clone(), 2).await;
    eventually("master 2 leads", WAIT, || async {
        (leader_of(&leader.url).await.as_deref() == Some(leader.url.as_str())).then_some(())
    })
    .await;
    wait_ready(&leader.url).await;
    let mut follower_config = config.clone();
    follower_config
        .auth
        .clients
        .push(client("follower-only", Role::Admin, FOLLOWER_ONLY));
    let follower = start_master(follower_config, 3).await;
    wait_ready(&follower.url).await;
    eventually("the follower knows the leader", WAIT, || async {
        (leader_of(&follower.url).await.as_deref() == Some(leader.url.as_str())).then_some(())
    })
    .await;

    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("the committed spec"),
    )
    .expect("JSON");
    let tokens = [
        (Some(VIEWER), Role::Viewer),
        (Some(OPERATOR), Role::Operator),
        (Some(ADMIN), Role::Admin),
    ];
    let mut checked = 0;
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let Some(needed) = op.get("x-crawler-role") else {
                assert!(
                    !path.starts_with("/api/") && !path.starts_with("/crawler/"),
                    "{method} {path} names no role"
                );
                continue;
            };
            let needed: Role = serde_json::from_value(needed.clone()).expect("a role");
            // Every write needs more than a viewer: a write left out of the roles' table
            // would show `viewer` here.
            assert!(
                method == "get" || needed > Role::Viewer,
                "{method} {path} needs only {needed}"
            );
            operations += 1;
            let method = method.to_uppercase();
            // A PATCH that suspends alone is an operator's; the others send an empty object.
            let body = op.get("requestBody").map(|_| {
                if method == "PATCH" {
                    json!({"schedule": {"suspend": true}})
                } else {
                    json!({})
                }
            });
            let url = concrete(path);
            for master in [&leader.url, &follower.url] {
                let (status, _) =
                    send(&method, &format!("{master}{url}"), None, body.as_ref()).await;
                assert_eq!(status, 401, "{method} {url} with no token");
                for (token, role) in tokens {
                    let (status, problem) =
                        send(&method, &format!("{master}{url}"), token, body.as_ref()).await;
                    if role.allows(needed) {
                        assert!(
                            status != 401 && status != 403 && status < 500,
                            "{role} on {method} {url} via {master}: {status} {problem}"
                        );
                    } else {
                        assert_eq!(status, 403, "{role} on {method} {url}: {problem}");
                        assert_eq!(problem["role"], needed.as_str(), "{problem}");
                        assert_eq!(problem["type"], "urn:crawler:problem:forbidden");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(operations >= 25, "only {operations} operations in the spec");
    println!("measured: {operations} operations x 3 roles x 2 masters: {checked} checks");

    // A real task: an admin creates it through the follower; an operator may suspend its
    // schedule and restart it, not change its labels or delete it; a viewer may read it.
    let f = &follower.url;
    let task = json!({"name": "roles-1", "schedule": {"every": "1h"}});
    let (status, created) = send(
        "POST",
        &format!("{f}/api/v1/resources"),
        Some(ADMIN),
        Some(&task),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let at = format!("{f}/api/v1/resources/roles-1");
    let (status, body) = send(
        "PATCH",
        &at,
        Some(OPERATOR),
        Some(&json!({"schedule": {"suspend": true}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schedule"]["suspend"], true, "{body}");
    for change in [
        json!({"labels": {"team": "x"}}),
        json!({"schedule": {"every": "1m"}}),
        json!({"schedule": {"suspend": true, "every": "1m"}}),
    ] {
        let (status, problem) = send("PATCH", &at, Some(OPERATOR), Some(&change)).await;
        assert_eq!(status, 403, "{change}: {problem}");
        assert_eq!(problem["role"], "admin");
    }
    let (status, _) = send("DELETE", &at, Some(OPERATOR), None).await;
    assert_eq!(status, 403);
    let (status, body) = send("GET", &at, Some(VIEWER), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["schedule"]["suspend"], true,
        "the refused patches changed nothing"
    );
    assert!(body["labels"].get("team").is_none(), "{body}");

    // The follower accepts its own token and forwards it; the leader does not know it.
    let (status, problem) = send(
        "POST",
        &format!("{f}/api/v1/resources"),
        Some(FOLLOWER_ONLY),
        Some(&json!({"name": "roles-2"})),
    )
    .await;
    assert_eq!(status, 401, "the leader checks again: {problem}");
    let (status, _) = send(
        "GET",
        &format!("{f}/api/v1/resources/roles-2"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing was created");
    let (status, _) = send("DELETE", &at, Some(ADMIN), None).await;
    assert_eq!(status, 204);
}
