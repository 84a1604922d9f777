//! Every master behaves like the whole cluster: followers forward writes, reads carry
//! revisions and honour `min_revision`, versions guard updates, changes stream as SSE, and the
//! Go gateway's routes and Swagger UI work. Three masters against a real etcd.

use std::time::{Duration, Instant};

use crate::support::*;
use etcd_client::PutOptions;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    etcd: Etcd,
    masters: Vec<Running>,
    leader: usize,
}

impl Cluster {
    fn url(&self, i: usize) -> &str {
        &self.masters[i].url
    }

    fn followers(&self) -> Vec<usize> {
        (0..self.masters.len())
            .filter(|i| *i != self.leader)
            .collect()
    }
}

async fn three_masters(tune: impl Fn(&mut crawler::config::Config)) -> Cluster {
    let etcd = Etcd::start().await;
    let mut config = test_config(std::slice::from_ref(&etcd.url));
    tune(&mut config);
    let mut masters = Vec::new();
    for id in 1..=3 {
        masters.push(start_master(config.clone(), id).await);
    }
    let urls: Vec<&str> = masters.iter().map(|m| m.url.as_str()).collect();
    let leader = ready_leader(&urls, WAIT).await;
    // Every master knows the leader before the test starts.
    for url in &urls {
        wait_leader_known(url, urls[leader]).await;
    }
    Cluster {
        etcd,
        masters,
        leader,
    }
}

fn revision(headers: &HeaderMap) -> i64 {
    headers
        .get("x-etcd-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("x-etcd-revision header")
}

/// A GET with no extra headers.
async fn get(url: &str) -> (u16, HeaderMap, Value) {
    send(reqwest::Method::GET, url, None, &[]).await
}

async fn send(
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Value) {
    let answer = request(method.as_str(), url, None, headers, body.as_ref()).await;
    let body = answer.json();
    (answer.status, answer.headers, body)
}

#[tokio::test]
async fn writes_through_a_follower_are_visible_on_every_master() {
    let c = three_masters(|_| {}).await;
    let _worker = start_worker(test_config(std::slice::from_ref(&c.etcd.url)), 1, 100).await;
    wait_workers(c.url(c.leader), 1).await;
    let f = c.followers()[0];
    let leader_id = (c.leader + 1).to_string();

    // Create through a follower: the same status and body as direct, and who did what.
    let (status, headers, created) = send(
        reqwest::Method::POST,
        &format!("{}/api/v1/resources", c.url(f)),
        Some(json!({"name": "via-follower"})),
        &[("x-request-id", "trace-me-123")],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        headers["x-request-id"], "trace-me-123",
        "the id reached the leader"
    );
    assert_eq!(headers["location"], "/api/v1/resources/via-follower");
    assert_eq!(headers["x-served-by"], leader_id.as_str());
    assert_eq!(
        headers["x-crawler-proxied-by"],
        (f + 1).to_string().as_str()
    );
    assert_eq!(created["name"], "via-follower");
    let written = revision(&headers);

    // Read-your-writes on every master with min_revision.
    for i in 0..3 {
        let (status, headers, body) = get(&format!(
            "{}/api/v1/resources/via-follower?min_revision={written}",
            c.url(i)
        ))
        .await;
        assert_eq!(status, 200, "master {i}: {body}");
        // The resource is the write's; its `status` is the worker's report, which reaches
        // each master through another cache in its own time.
        let without_status = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().map(|o| o.remove("status"));
            v
        };
        assert_eq!(
            without_status(&body),
            without_status(&created),
            "master {i} shows the same resource"
        );
        assert!(body["status"]["state"].is_string());
        assert!(revision(&headers) >= written);
        assert_eq!(headers["x-served-by"], (i + 1).to_string().as_str());
        assert_eq!(headers["x-leader"], c.url(c.leader));
    }

    // Duplicate through a follower: 409, same shape.
    let (status, _, body) = send(
        reqwest::Method::POST,
        &format!("{}/api/v1/resources", c.url(f)),
        Some(json!({"name": "via-follower"})),
        &[],
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["type"], "urn:crawler:problem:conflict");

    // Update through a follower with the ETag read from another master.
    let (_, headers, _) = get(&format!(
        "{}/api/v1/resources/via-follower",
        c.url(c.leader)
    ))
    .await;
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let (status, headers, patched) = send(
        reqwest::Method::PATCH,
        &format!("{}/api/v1/resources/via-follower", c.url(f)),
        Some(json!({"labels": {"team": "news"}})),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["labels"]["team"], "news");
    assert_eq!(patched["id"], created["id"], "an update keeps the ID");
    let updated = revision(&headers);
    let other = c.followers()[1];
    let (_, _, seen) = get(&format!(
        "{}/api/v1/resources/via-follower?min_revision={updated}",
        c.url(other)
    ))
    .await;
    assert_eq!(seen["labels"]["team"], "news");

    // The old ETag is stale now: 412 for PUT, PATCH and DELETE, and nothing changes.
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let body = (method != reqwest::Method::DELETE).then(|| json!({"labels": {}}));
        let (status, _, problem) = send(
            method.clone(),
            &format!("{}/api/v1/resources/via-follower", c.url(f)),
            body,
            &[("if-match", &etag)],
        )
        .await;
        assert_eq!(status, 412, "{method}: {problem}");
        assert_eq!(problem["type"], "urn:crawler:problem:precondition-failed");
    }

    // Pin to a worker that is not registered: 409 naming the field (the request is well-formed;
    // the cluster's state is what it conflicts with).
    let (status, _, problem) = send(
        reqwest::Method::PUT,
        &format!("{}/api/v1/resources/via-follower", c.url(f)),
        Some(json!({"assigned_node": "go.micro.server.worker-404"})),
        &[],
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:crawler:problem:unknown-worker");
    assert_eq!(problem["field"], "assigned_node");

    // Delete through a follower with the current ETag: 204, then gone everywhere.
    let (_, headers, _) = get(&format!(
        "{}/api/v1/resources/via-follower?min_revision={updated}",
        c.url(f)
    ))
    .await;
    let current = headers["etag"].to_str().expect("etag").to_owned();
    let (status, headers, _) = send(
        reqwest::Method::DELETE,
        &format!("{}/api/v1/resources/via-follower", c.url(f)),
        None,
        &[("if-match", &current)],
    )
    .await;
    assert_eq!(status, 204);
    let deleted = revision(&headers);
    for i in 0..3 {
        let (status, _, _) = get(&format!(
            "{}/api/v1/resources/via-follower?min_revision={deleted}",
            c.url(i)
        ))
        .await;
        assert_eq!(status, 404, "master {i}");
    }
}

#[tokio::test]
async fn min_revision_that_does_not_exist_yet_is_a_409_and_a_malformed_one_a_400() {
    let c = three_masters(|config| config.http.min_revision_wait_ms = 300).await;
    let f = c.followers()[0];
    for (query, want) in [
        ("min_revision=999999", 409),
        ("min_revision=abc", 400),
        ("min_revision=-3", 400),
    ] {
        let (status, _, body) = get(&format!("{}/api/v1/resources?{query}", c.url(f))).await;
        assert_eq!(status, want, "{query}: {body}");
        assert_eq!(body["field"], "min_revision");
    }
}

#[tokio::test]
async fn proxied_create_overhead_against_direct() {
    let c = three_masters(|_| {}).await;
    let f = c.followers()[0];
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    let client = http();
    for i in 0..200 {
        for (target, samples, tag) in [(c.leader, &mut direct, "d"), (f, &mut proxied, "p")] {
            let start = Instant::now();
            let resp = client
                .post(format!("{}/api/v1/resources", c.url(target)))
                .json(&json!({"name": format!("{tag}{i}")}))
                .send()
                .await
                .expect("create");
            assert_eq!(resp.status(), 201);
            let _ = resp.bytes().await;
            samples.push(start.elapsed());
        }
    }
    direct.sort();
    proxied.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    println!(
        "measured: create direct p50 {:?} p99 {:?}; through a follower p50 {:?} p99 {:?} (overhead p50 {:?}, 200 each, interleaved)",
        pct(&direct, 50),
        pct(&direct, 99),
        pct(&proxied, 50),
        pct(&proxied, 99),
        pct(&proxied, 50).saturating_sub(pct(&direct, 50)),
    );
}

#[tokio::test]
async fn go_gateway_routes_swagger_and_cors() {
    let c = three_masters(|config| {
        config.http.cors_origins = vec!["http://ui.example".into()];
    })
    .await;
    let _worker = start_worker(test_config(std::slice::from_ref(&c.etcd.url)), 5, 100).await;
    // The leader places the create, so it must have seen the worker, not only master 0.
    wait_workers(c.url(c.leader), 1).await;
    let f = c.followers()[0];
    let (status, _, node) = send(
        reqwest::Method::POST,
        &format!("{}/crawler/resource", c.url(f)),
        Some(json!({"name": "from-go-script"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["id"], "go.micro.server.worker-5");
    assert!(
        node["Address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let stored = stored_resources(&c.etcd).await;
    assert!(stored.iter().any(|r| &*r.name == "from-go-script"));
    let (status, _, body) = send(
        reqwest::Method::DELETE,
        &format!("{}/crawler/resource", c.url(f)),
        Some(json!({"name": "from-go-script"})),
        &[],
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    assert!(stored_resources(&c.etcd).await.is_empty());

    // Swagger UI and the spec are served by every master, offline.
    let resp = http()
        .get(format!("{}/swagger-ui/", c.url(f)))
        .send()
        .await
        .expect("swagger");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("html").contains("swagger-ui"));
    let (status, _, spec) = get(&format!("{}/openapi.json", c.url(f))).await;
    assert_eq!(status, 200);
    assert!(spec["paths"]["/api/v1/events"].is_object());

    // CORS: a preflight from the allowed origin passes and exposes the version headers.
    let resp = http()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/resources/x", c.url(f)),
        )
        .header("origin", "http://ui.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "if-match,content-type")
        .send()
        .await
        .expect("preflight");
    assert!(resp.status().is_success());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://ui.example"
    );
    let resp = http()
        .get(format!("{}/api/v1/resources", c.url(f)))
        .header("origin", "http://ui.example")
        .send()
        .await
        .expect("get");
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .expect("exposed")
        .to_lowercase();
    for h in ["etag", "x-etcd-revision", "x-served-by", "x-leader"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    let resp = http()
        .get(format!("{}/api/v1/resources", c.url(f)))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // A write forwarded to the leader carries this master's CORS answer once, not both.
    let resp = http()
        .post(format!("{}/api/v1/resources", c.url(f)))
        .header("origin", "http://ui.example")
        .json(&json!({"name": "cors-through-a-follower"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().contains_key("x-crawler-proxied-by"));
    let vary: Vec<_> = resp.headers().get_all("vary").iter().collect();
    assert_eq!(vary.len(), 1, "vary: {vary:?}");
    assert_eq!(
        resp.headers()
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
}

/// An SSE stream being read, event by event.
struct Events {
    stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buffer: String,
}

impl Events {
    fn of(resp: reqwest::Response) -> Events {
        Events {
            stream: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next `count` events: name, id and data.
    async fn next(&mut self, count: usize) -> Vec<(String, Option<String>, Value)> {
        let mut events = Vec::new();
        let deadline = Instant::now() + WAIT;
        while events.len() < count {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !name.is_empty() {
                    events.push((name, id, serde_json::from_str(&data).unwrap_or(Value::Null)));
                }
            }
            if events.len() >= count {
                break;
            }
            let chunk = tokio::time::timeout_at(deadline.into(), self.stream.next())
                .await
                .expect("events arrive in time")
                .expect("stream open")
                .expect("chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
        events
    }
}

/// Reads SSE events (event name, id, data) until `count` have arrived.
async fn read_events(
    resp: reqwest::Response,
    count: usize,
) -> Vec<(String, Option<String>, Value)> {
    Events::of(resp).next(count).await
}

#[tokio::test]
async fn events_stream_in_order_and_resume_with_last_event_id() {
    let c = three_masters(|_| {}).await;
    let f = c.followers()[0];
    let resp = http()
        .get(format!("{}/api/v1/events?kind=resources", c.url(f)))
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let base = format!("{}/api/v1/resources", c.url(c.leader));
    // Each change is made once the stream showed the one before: a subscriber that keeps up
    // sees every change (a slow one would get the latest state of each name).
    let mut stream = Events::of(resp);
    assert_eq!(create(c.url(c.leader), "streamed").await.expect("c").0, 201);
    let mut events = stream.next(1).await;
    let (status, _, _) = send(
        reqwest::Method::PATCH,
        &format!("{base}/streamed"),
        Some(json!({"labels": {"a": "b"}})),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    events.extend(stream.next(1).await);
    let (status, _, _) = send(
        reqwest::Method::DELETE,
        &format!("{base}/streamed"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 204);
    events.extend(stream.next(1).await);
    let names: Vec<&str> = events.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["added", "modified", "deleted"]);
    assert!(
        events
            .iter()
            .all(|(_, _, d)| d["kind"] == "resources" && d["name"] == "streamed")
    );
    assert_eq!(events[1].2["object"]["labels"]["a"], "b");
    let ids: Vec<i64> = events
        .iter()
        .map(|(_, id, _)| id.as_deref().expect("id").parse().expect("revision"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Reconnect after the first event: the rest is replayed, then the stream goes on live.
    let resp = http()
        .get(format!("{}/api/v1/events", c.url(f)))
        .header("last-event-id", ids[0].to_string())
        .send()
        .await
        .expect("events");
    let replayed = read_events(resp, 2).await;
    let names: Vec<&str> = replayed.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["modified", "deleted"]);

    // A master started after those changes has no history of them: a client resuming there
    // is told to re-list.
    let late = start_master(test_config(std::slice::from_ref(&c.etcd.url)), 4).await;
    wait_ready(&late.url).await;
    let resp = http()
        .get(format!("{}/api/v1/events", late.url))
        .header("last-event-id", ids[0].to_string())
        .send()
        .await
        .expect("events");
    let told = read_events(resp, 1).await;
    assert_eq!(told[0].0, "relist");
    let (status, _, body) = get(&format!("{}/api/v1/events?kind=cats", c.url(f))).await;
    assert_eq!(status, 400, "{body}");
}

/// Puts a fake, older election key whose value is `value`, on a lease kept for the test.
async fn fake_leader(etcd: &Etcd, value: &str) {
    let mut client = etcd.client().await;
    let lease = client.lease_grant(120, None).await.expect("lease").id();
    client
        .put(
            "/crawler/election/fake",
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
}

#[tokio::test]
async fn no_leader_or_unreachable_leader_is_a_503_with_retry_after_and_no_loop() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    // An unreachable "leader" holds the election: nobody else can win.
    let dead = format!("http://127.0.0.1:{}", free_port());
    fake_leader(&etcd, &json!({"id": 99, "url": dead}).to_string()).await;
    let m = start_master(config.clone(), 1).await;
    eventually("m knows the fake leader", WAIT, || async {
        (cluster(&m.url).await?["leader"]["id"] == 99).then_some(())
    })
    .await;
    let (status, headers, body) = send(
        reqwest::Method::POST,
        &format!("{}/api/v1/resources", m.url),
        Some(json!({"name": "a"})),
        &[],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["type"], "urn:crawler:problem:unavailable");
    assert!(stored_resources(&etcd).await.is_empty());
    m.stop().await;

    // The key that holds the election names no usable master: no leader is known.
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    fake_leader(&etcd, "not a campaign value").await;
    let m = start_master(config.clone(), 1).await;
    eventually("m campaigns without winning", WAIT, || async {
        let view = cluster(&m.url).await?;
        (view["self"]["role"] == "candidate" && view["masters"].as_array()?.len() == 1)
            .then_some(())
    })
    .await;
    let (status, headers, body) = send(
        reqwest::Method::DELETE,
        &format!("{}/api/v1/resources/a", m.url),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no leader"))
    );
    m.stop().await;
}

#[tokio::test]
async fn a_forwarded_write_is_never_forwarded_again() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    // A request already forwarded once reaches a master that does not lead: it must answer
    // 503 itself rather than forward it a second time.
    let ([m2, m3], _leader, follower) = leader_and_follower(&config).await;
    let (status, headers, body) = send(
        reqwest::Method::POST,
        &format!("{follower}/api/v1/resources"),
        Some(json!({"name": "marked"})),
        &[("x-crawler-forwarded-by", "7")],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:crawler:problem:not-leader");
    assert!(headers.get("x-crawler-proxied-by").is_none());
    assert!(stored_resources(&etcd).await.is_empty());
    // With no marker, the same request is forwarded once and succeeds.
    let (status, _, _) = send(
        reqwest::Method::POST,
        &format!("{follower}/api/v1/resources"),
        Some(json!({"name": "unmarked"})),
        &[],
    )
    .await;
    assert_eq!(status, 201);
    m2.stop().await;
    m3.stop().await;
}

#[tokio::test]
async fn a_leader_change_in_the_middle_of_a_request_ends_in_201_or_503() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let ([m2, m3], leader, follower) = leader_and_follower(&config).await;
    // The leader's session is revoked behind its back while the follower still names it.
    let mut client = etcd.client().await;
    let resp = client
        .get(
            "/crawler/election/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    let oldest = resp
        .kvs()
        .iter()
        .min_by_key(|kv| kv.create_revision())
        .expect("a key")
        .lease();
    client.lease_revoke(oldest).await.expect("revoke");
    let started = Instant::now();
    let (status, _, body) = send(
        reqwest::Method::POST,
        &format!("{follower}/api/v1/resources"),
        Some(json!({"name": "mid-change"})),
        &[],
    )
    .await;
    assert!(status == 201 || status == 503, "{status} {body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The cluster settles with a leader that accepts writes through either master.
    let took = first_accepted_write(&follower, Instant::now()).await;
    println!(
        "measured: after the leader's session was revoked, writes through the other master were accepted again in {took:?}"
    );
    let took = first_accepted_write(&leader, Instant::now()).await;
    assert!(took < WAIT);
    m2.stop().await;
    m3.stop().await;
}

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_text() {
    let c = three_masters(|_| {}).await;
    let _worker = start_worker(test_config(std::slice::from_ref(&c.etcd.url)), 7, 100).await;
    wait_workers(c.url(c.leader), 1).await;
    let f = c.followers()[0];
    assert_eq!(create(c.url(f), "measured").await.expect("c").0, 201);
    let scrape = |url: String| async move {
        let resp = http()
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("application/openmetrics-text")
        );
        resp.text().await.expect("text")
    };
    let leader = scrape(c.url(c.leader).to_owned()).await;
    for needle in [
        "crawler_is_leader 1",
        "crawler_workers 1",
        "crawler_worker_load{worker=\"go.micro.server.worker-7\"} 1",
        "crawler_assignments_total 1",
        "crawler_http_requests_total{route=\"/api/v1/resources\",method=\"POST\",status=\"201\"} 1",
        "crawler_cache_objects{cache=\"resources\"} 1",
        "crawler_leader_changes_total 1",
        "crawler_etcd_write_duration_seconds_count",
        "# EOF",
    ] {
        assert!(
            leader.contains(needle),
            "leader metrics lack {needle:?}:\n{leader}"
        );
    }
    let follower = scrape(c.url(f).to_owned()).await;
    for needle in [
        "crawler_is_leader 0",
        "crawler_proxied_requests_total{outcome=\"ok\"} 1",
        "crawler_cache_revision{cache=\"resources\"}",
        "crawler_watch_events_total{cache=\"workers\"}",
    ] {
        assert!(
            follower.contains(needle),
            "follower metrics lack {needle:?}:\n{follower}"
        );
    }
}
