//! The audit trail, end to end, with real master processes and etcd: every kind of write, made
//! through a follower or the leader, applied or refused, is recorded with who, what, when,
//! from where and its request id; an applied write's entry is stored in the same txn as the
//! change (same revision); histories name the actor; only an admin reads the trail; old
//! entries are trimmed; and no token appears in etcd, in a log or in an answer.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;
use crawler::tools::procs::{self, Launch, MOVE_AT_ONCE, Proc, Role};
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-token-0123456789";
const OPERATOR: &str = "operator-secret-token-0123456789";
const VIEWER: &str = "viewer-secret-token-0123456789";
const WRONG: &str = "wrong-secret-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "etcd:\n  request_timeout_ms: 1000\n\
             master:\n  session_ttl_secs: 2\n\
             worker:\n  lease_ttl_secs: 3\n{MOVE_AT_ONCE}\
             auth:\n  clients:\n\
             \x20   - {{name: ci, role: admin, token: {ADMIN}}}\n\
             \x20   - {{name: oncall, role: operator, token: {OPERATOR}}}\n\
             \x20   - {{name: team, role: viewer, token: {VIEWER}}}\n\
             audit:\n  max_entries: 8\n  max_age: 1h\n\
             log:\n  level: debug\n"
        ),
    )
    .expect("write config");
    file
}

fn master(id: u32, etcd: &str, config: &Path, log: &Path) -> Proc {
    procs::launch(Launch {
        binary: Path::new(env!("CARGO_BIN_EXE_crawler")),
        role: Role::Master,
        id,
        port: free_port(),
        etcd,
        config,
        output: Stdio::from(std::fs::File::create(log).expect("log")),
        env: &[],
        args: &[],
    })
    .expect("spawn")
}

async fn send(
    method: &str,
    url: &str,
    token: &str,
    id: &str,
    body: Option<Value>,
) -> (u16, String) {
    let answer = request(
        method,
        url,
        Some(token),
        &[("x-request-id", id)],
        body.as_ref(),
    )
    .await;
    (answer.status, answer.text)
}

async fn trail(master: &str, query: &str) -> Vec<Value> {
    let (status, text) = send(
        "GET",
        &format!("{master}/api/v1/audit?{query}"),
        ADMIN,
        "read",
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let page: Value = serde_json::from_str(&text).expect("json");
    page["entries"].as_array().cloned().unwrap_or_default()
}

fn by_id<'a>(entries: &'a [Value], id: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["request_id"] == id)
        .unwrap_or_else(|| panic!("no entry for {id}: {entries:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_recorded_with_its_caller_and_no_token_leaks() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config(dir.path());
    let logs = [dir.path().join("m1.log"), dir.path().join("m2.log")];
    let first = master(1, &etcd.url, &config, &logs[0]);
    ready_leader(&[&first.url], WAIT).await;
    let second = master(2, &etcd.url, &config, &logs[1]);
    ready_leader(&[&first.url, &second.url], WAIT).await;
    let (leader, follower) = (first.url.clone(), second.url.clone());
    let mut answers = String::new();

    // Through the follower: a create, then the same name again (409).
    for (id, want) in [("create-1", 201), ("create-again", 409)] {
        let (status, text) = send(
            "POST",
            &format!("{follower}/api/v1/resources"),
            ADMIN,
            id,
            Some(json!({"name": "a-1"})),
        )
        .await;
        assert_eq!(status, want, "{text}");
        answers.push_str(&text);
    }
    // An operator restarts it; a viewer may not delete it; a wrong token may not either.
    let at = format!("{leader}/api/v1/resources/a-1");
    for (method, url, token, id, want) in [
        ("POST", format!("{at}/restart"), OPERATOR, "restart-1", 200),
        ("DELETE", at.clone(), VIEWER, "delete-viewer", 403),
        ("DELETE", at.clone(), WRONG, "delete-wrong", 401),
        (
            "PUT",
            format!("{leader}/api/v1/domains/example.org/budget"),
            ADMIN,
            "budget-1",
            200,
        ),
    ] {
        let body = (method == "PUT").then(|| json!({"rate": 5, "concurrency": 2}));
        let (status, text) = send(method, &url, token, id, body).await;
        assert_eq!(status, want, "{method} {url}: {text}");
        answers.push_str(&text);
    }

    let entries = eventually("the refusals' entries", WAIT, || async {
        let entries = trail(&follower, "limit=100").await;
        (entries.len() >= 6).then_some(entries)
    })
    .await;
    let create = by_id(&entries, "create-1");
    assert_eq!(create["caller"], "ci");
    assert_eq!(create["method"], "POST");
    assert_eq!(create["route"], "/api/v1/resources");
    assert_eq!(create["outcome"], "applied");
    assert_eq!(create["peer"], "127.0.0.1");
    assert_eq!(
        create["forwarded_for"], "127.0.0.1",
        "a follower forwarded it"
    );
    let again = by_id(&entries, "create-again");
    assert_eq!(
        (again["outcome"].as_str(), again["status"].as_u64()),
        (Some("refused"), Some(409))
    );
    let restart = by_id(&entries, "restart-1");
    assert_eq!(
        (restart["caller"].as_str(), restart["target"].as_str()),
        (Some("oncall"), Some("a-1"))
    );
    assert_eq!(restart["outcome"], "applied");
    let viewer = by_id(&entries, "delete-viewer");
    assert_eq!(
        (viewer["caller"].as_str(), viewer["status"].as_u64()),
        (Some("team"), Some(403))
    );
    let wrong = by_id(&entries, "delete-wrong");
    assert_eq!(
        (wrong["caller"].as_str(), wrong["status"].as_u64()),
        (Some("anonymous"), Some(401))
    );
    assert_eq!(by_id(&entries, "budget-1")["target"], "example.org");
    // Filters, newest first.
    let restarts = trail(&leader, "caller=oncall").await;
    assert_eq!(restarts.len(), 1);
    let refused = trail(&leader, "outcome=refused").await;
    assert_eq!(refused.len(), 3);
    let (status, _) = send(
        "GET",
        &format!("{leader}/api/v1/audit"),
        OPERATOR,
        "read-op",
        None,
    )
    .await;
    assert_eq!(status, 403, "only an admin reads the trail");
    let (status, _) = send(
        "GET",
        &format!("{leader}/api/v1/audit?limit=0"),
        ADMIN,
        "read-bad",
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Clients choose request ids and may repeat one: 30 creates at once under one id (many
    // of them in the same millisecond, batched in the same txns) are 30 entries.
    let create_url = format!("{leader}/api/v1/resources");
    let creates = (0..30).map(|i| {
        send(
            "POST",
            &create_url,
            ADMIN,
            "same-id",
            Some(json!({"name": format!("dup-{i}")})),
        )
    });
    for (status, text) in futures_util::future::join_all(creates).await {
        assert_eq!(status, 201, "{text}");
    }
    let same = trail(&leader, "limit=1000").await;
    let same = same.iter().filter(|e| e["request_id"] == "same-id").count();
    assert_eq!(same, 30, "an entry per write, whatever its request id");

    // The applied create's entry went in with the change: the same revision.
    let client = etcd.client().await;
    let keys = crawler::keys::KeyLayout::default();
    let resource = client
        .clone()
        .get(keys.resource_key("a-1"), None)
        .await
        .expect("get");
    let created_at = resource.kvs()[0].create_revision();
    let audit = client
        .clone()
        .get(
            keys.audit_prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    let entry_kv = audit
        .kvs()
        .iter()
        .find(|kv| kv.key_str().is_ok_and(|k| k.ends_with("-create-1")))
        .expect("the create's entry");
    assert_eq!(
        entry_kv.mod_revision(),
        created_at,
        "one txn for the change and its record"
    );

    // Histories name the actor.
    let (status, text) = send(
        "GET",
        &format!("{leader}/api/v1/resources/a-1/history"),
        VIEWER,
        "h",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let history: Value = serde_json::from_str(&text).expect("json");
    let actors: Vec<(&str, &str)> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["reason"].as_str().unwrap_or(""),
                i["actor"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actors,
        [("created", "ci"), ("restarted", "oncall")],
        "{history}"
    );

    // Retention: at most 8 entries are kept; the oldest go first.
    for i in 0..6 {
        let (status, _) = send(
            "DELETE",
            &format!("{leader}/api/v1/resources/none-{i}"),
            ADMIN,
            &format!("del-{i}"),
            None,
        )
        .await;
        assert_eq!(status, 404);
    }
    let kept = eventually(
        "the trail trimmed to 8",
        Duration::from_secs(30),
        || async {
            let entries = trail(&leader, "").await;
            (entries.len() == 8).then_some(entries)
        },
    )
    .await;
    assert!(
        kept.iter().any(|e| e["request_id"] == "del-5"),
        "the newest stays"
    );
    assert!(
        !kept.iter().any(|e| e["request_id"] == "create-1"),
        "the oldest goes"
    );

    // No token anywhere: not in etcd, not in either master's log, not in an answer.
    let everything = client
        .clone()
        .get("", Some(etcd_client::GetOptions::new().with_from_key()))
        .await
        .expect("get all");
    let mut stored = String::new();
    for kv in everything.kvs() {
        stored.push_str(&String::from_utf8_lossy(kv.key()));
        stored.push_str(&String::from_utf8_lossy(kv.value()));
    }
    drop((first, second));
    let logged: String = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .collect();
    assert!(logged.contains("ci"), "the logs name callers");
    for token in [ADMIN, OPERATOR, VIEWER, WRONG] {
        for (what, text) in [
            ("etcd", &stored),
            ("a log", &logged),
            ("an answer", &answers),
        ] {
            assert!(!text.contains(token), "a token in {what}");
            assert!(!text.contains(&token[..12]), "part of a token in {what}");
        }
    }
    println!(
        "measured: {} audit entries before the trim; {} bytes of logs and {} of etcd searched for tokens",
        entries.len(),
        logged.len(),
        stored.len()
    );
}
