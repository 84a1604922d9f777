//! Fair use, over real sockets against a real master and etcd: a caller over its rate gets 429
//! with Retry-After and is admitted again once it waits that long; a caller holding its most
//! open streams gets 429 for another, until one closes; neither holds another caller back.

use std::time::Duration;

use crate::support::*;
use crawler::config::{AuthConfig, ClientConfig, QuotasConfig};
use crawler::model::role::Role;

const A: &str = "caller-a-token-0123456789";
const B: &str = "caller-b-token-0123456789";

fn client(name: &str, token: &str) -> ClientConfig {
    ClientConfig {
        name: name.into(),
        role: Role::Admin,
        token: Some(token.into()),
        sha256: None,
    }
}

async fn get(url: &str, token: &str) -> reqwest::Response {
    http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_or_its_streams_gets_429_and_holds_no_one_else_back() {
    let etcd = Etcd::start().await;
    let mut config = test_config(std::slice::from_ref(&etcd.url));
    config.auth = AuthConfig {
        tokens: Vec::new(),
        clients: vec![client("a", A), client("b", B)],
        protect_reads: true,
    };
    config.quotas = QuotasConfig {
        rate: 5,
        burst: 5,
        max_wait: Duration::ZERO,
        streams: 2,
    };
    let master = start_master(config, 1).await;
    let m = master.url.clone();
    wait_ready(&m).await;
    let list = format!("{m}/api/v1/resources");

    // The rate: 5 at once, then 5 a second.
    let mut limited = None;
    let mut refused = 0;
    for _ in 0..20 {
        let resp = get(&list, A).await;
        if resp.status() == 429 {
            refused += 1;
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("Retry-After in seconds");
            let problem: serde_json::Value = resp.json().await.expect("problem");
            assert_eq!(problem["type"], "urn:crawler:problem:too-many-requests");
            limited.get_or_insert(retry);
        } else {
            assert_eq!(resp.status(), 200);
        }
    }
    let retry = limited.expect("a caller over its rate is refused");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(refused >= 10, "{refused} of 20 refused");
    assert_eq!(get(&list, B).await.status(), 200, "b is not held back");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(get(&list, A).await.status(), 200, "a waited as told");
    let metrics = metrics_text(&m).await;
    assert!(
        metrics.contains(&format!(
            "crawler_caller_requests_total{{caller=\"a\",outcome=\"limited\"}} {refused}"
        )),
        "{metrics}"
    );
    println!(
        "measured: 20 requests at once at 5/s with a burst of 5: {refused} refused, Retry-After {retry} s"
    );

    // Streams: two open, a third refused; another caller is not; one closed frees its slot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = format!("{m}/api/v1/events");
    let first = get(&events, A).await;
    let second = get(&events, A).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = get(&events, A).await;
    assert_eq!(third.status(), 429);
    let b_stream = get(&events, B).await;
    assert_eq!(b_stream.status(), 200);
    drop(first);
    // A change writes an event to every stream: the closed one's write fails, and its slot
    // is freed without waiting for a keep-alive.
    let (status, _) = http()
        .post(format!("{m}/api/v1/resources"))
        .bearer_auth(B)
        .json(&serde_json::json!({"name": "wakes-the-streams"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("create");
    assert_eq!(status, 201);
    let reopened = eventually(
        "a's closed stream frees its slot",
        Duration::from_secs(5),
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let resp = get(&events, A).await;
            (resp.status() == 200).then_some(resp)
        },
    )
    .await;
    drop((second, reopened, b_stream));
}
