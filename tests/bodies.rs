//! Bodies over the limit, over real TCP, the way clients send them: every master answers 413
//! problem+json, and the client reads that answer before the connection closes (no reset, no
//! 503 from a follower). Router tests with `oneshot` cannot see any of this.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const TRIES: usize = 50;
const BIG: usize = 5_000_000;

/// What one raw exchange gave.
#[derive(Debug)]
enum Outcome {
    /// A response: status and body.
    Answered(u16, Value),
    /// The connection failed (reset, broken pipe) before a whole response was read.
    Failed(#[expect(dead_code, reason = "shown through Debug when a try fails")] String),
}

/// A JSON create body of `name`, padded with white space to exactly `size` bytes.
fn body_of(name: &str, size: usize) -> Vec<u8> {
    let mut body = format!("{{\"name\":\"{name}\"").into_bytes();
    body.resize(size - 1, b' ');
    body.push(b'}');
    body
}

/// A chunked message body decoded (the answer of a follower is streamed from the leader).
fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

fn parse(raw: &[u8]) -> Outcome {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Outcome::Failed(format!("no response head in {} bytes", raw.len()));
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    if !lower.contains("content-type: application/problem+json") && status >= 400 {
        return Outcome::Failed(format!("not problem+json: {head}"));
    }
    let payload = if lower.contains("transfer-encoding: chunked") {
        unchunk(&raw[end + 4..])
    } else {
        raw[end + 4..].to_vec()
    };
    let body = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Outcome::Answered(status, body)
}

/// Sends a POST with `head_extra` headers and `body` (already framed), then reads the whole
/// answer; `Connection: close` so the answer ends with EOF.
async fn exchange(addr: &str, head_extra: &str, body: &[u8], send_body: bool) -> Outcome {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    let head = format!(
        "POST /api/v1/resources HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Connection: close\r\n{head_extra}\r\n"
    );
    if let Err(e) = stream.write_all(head.as_bytes()).await {
        return Outcome::Failed(format!("write head: {e}"));
    }
    if send_body {
        for chunk in body.chunks(64 * 1024) {
            if let Err(e) = stream.write_all(chunk).await {
                return Outcome::Failed(format!("write body: {e}"));
            }
        }
    }
    let mut raw = Vec::new();
    match tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => parse(&raw),
        Ok(Err(e)) => Outcome::Failed(format!("read: {e} after {} bytes", raw.len())),
        Err(_) => Outcome::Failed("no answer in 30 s".into()),
    }
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(32 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Runs `TRIES` exchanges and counts the answers that are a 413 problem document.
async fn count_413(target: &str, head_extra: &str, body: &[u8], send_body: bool) -> usize {
    let mut ok = 0;
    for i in 0..TRIES {
        match exchange(target, head_extra, body, send_body).await {
            Outcome::Answered(413, problem)
                if problem["type"] == "urn:crawler:problem:payload-too-large" =>
            {
                ok += 1
            }
            other => panic!("try {i} against {target}: {other:?}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_its_413_from_every_master_every_time() {
    let etcd = Etcd::start().await;
    let config = test_config(std::slice::from_ref(&etcd.url));
    let ([m2, m3], leader, follower) = leader_and_follower(&config).await;
    let big = body_of("big", BIG);
    let length = format!("Content-Length: {}\r\n", big.len());
    let grown = chunked(&body_of("grown", 2 * config.http.max_body_bytes));
    for (role, url) in [("leader", &leader), ("follower", &follower)] {
        let target = addr(url);
        let started = std::time::Instant::now();
        let by_length = count_413(&target, &length, &big, true).await;
        let by_growth = count_413(&target, "Transfer-Encoding: chunked\r\n", &grown, true).await;
        let expecting = count_413(
            &target,
            &format!("{length}Expect: 100-continue\r\n"),
            &[],
            false,
        )
        .await;
        println!(
            "measured: {role}: 413 problem+json for {by_length}/{TRIES} bodies of 5 MB with \
             Content-Length, {by_growth}/{TRIES} chunked bodies past the limit, \
             {expecting}/{TRIES} with Expect: 100-continue (no body sent); {:?} in all",
            started.elapsed()
        );
        assert_eq!((by_length, by_growth, expecting), (TRIES, TRIES, TRIES));
    }
    // Nothing was written, and bodies within the limit still work on both.
    assert!(stored_resources(&etcd).await.is_empty());
    for (i, url) in [&leader, &follower].into_iter().enumerate() {
        let small = body_of(&format!("small-{i}"), 1_000);
        let length = format!("Content-Length: {}\r\n", small.len());
        match exchange(&addr(url), &length, &small, true).await {
            Outcome::Answered(201, _) => {}
            other => panic!("{url}: {other:?}"),
        }
        match exchange(&addr(url), &length, &small, true).await {
            Outcome::Answered(409, _) => {}
            other => panic!("{url}: a second create of the name: {other:?}"),
        }
    }
    m2.stop().await;
    m3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_passes_on_the_413_of_a_leader_with_a_smaller_limit() {
    let etcd = Etcd::start().await;
    let mut strict = test_config(std::slice::from_ref(&etcd.url));
    strict.http.max_body_bytes = 1_000;
    let leader = start_master(strict, 1).await;
    ready_leader(&[&leader.url], Duration::from_secs(20)).await;
    let roomy = test_config(std::slice::from_ref(&etcd.url));
    let follower = start_master(roomy, 2).await;
    wait_ready(&follower.url).await;
    wait_leader_known(&follower.url, &leader.url).await;
    // Within the follower's limit, over the leader's: forwarded, refused by the leader, and
    // that answer reaches the client.
    let body = body_of("roomy", 50_000);
    let length = format!("Content-Length: {}\r\n", body.len());
    for i in 0..TRIES {
        match exchange(&addr(&follower.url), &length, &body, true).await {
            Outcome::Answered(413, problem) => {
                assert_eq!(problem["type"], "urn:crawler:problem:payload-too-large");
            }
            other => panic!("try {i}: {other:?}"),
        }
    }
    assert!(stored_resources(&etcd).await.is_empty());
    follower.stop().await;
    leader.stop().await;
}
