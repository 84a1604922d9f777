//! Followers forward writes to the leader, so that every master behaves like the whole cluster.
//!
//! A write (POST, PUT, PATCH, DELETE under `/api/v1` and the Go gateway's `/crawler/…`) that
//! reaches a master which is not the leader is sent to the leader's advertised URL with
//! its method, path, query, body and end-to-end headers (hop-by-hop ones are dropped), plus
//! `X-Forwarded-For/Host/Proto`. The forwarded request is marked, and a marked request is never
//! forwarded again: a master that receives one and does not lead answers 503, so a leader change
//! in the middle of a request cannot make two masters bounce it between them.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::{ApiError, AppState};
use crate::master::leadership::Term;

/// Marks a forwarded request; its value is the forwarding master's id.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-crawler-forwarded-by");
/// On a proxied response: the follower that forwarded it.
pub const PROXIED_BY: HeaderName = HeaderName::from_static("x-crawler-proxied-by");

/// Pooled HTTP clients: to the leader (forwarded writes), and to workers (task logs).
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    /// No whole-request timeout: a followed log stays open as long as its reader.
    streams: reqwest::Client,
}

impl Forwarder {
    /// Clients with the given connect and whole-request timeouts, and `tls` for the leader's
    /// HTTPS (None: the system's trust store).
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, reqwest::Error> {
        let mut client = crate::tls::client::builder();
        if let Some(tls) = tls {
            client = client.tls_backend_preconfigured(tls);
        }
        let client = client
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let streams = crate::tls::client::builder()
            .connect_timeout(connect_timeout)
            .tcp_keepalive(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { client, streams })
    }

    /// A GET whose body may stream for a long time.
    pub async fn get_stream(&self, url: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.streams.get(url).send().await
    }
}

/// True for the methods that change state.
pub fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/v1/") || path.starts_with("/crawler/")
}

/// Forwards a write to the leader when this master does not lead: the leader's answer (or why
/// there is none), or the request back to be served here.
pub async fn forward_writes(state: &AppState, req: Request) -> Result<Request, Response> {
    if !is_write(req.method()) || !is_api(req.uri().path()) {
        return Ok(req);
    }
    if !matches!(state.leader.leadership().term(), Term::None) {
        return Ok(req);
    }
    if req.headers().contains_key(FORWARDED_BY) {
        // Forwarded to us, but we do not lead (any more): never a second hop.
        return Err(ApiError::NotLeader { leader: None }.into_response());
    }
    let Some(leader) = state.leader_url().filter(|url| *url != state.me.url) else {
        return Err(ApiError::unavailable("no leader is elected; retry shortly").into_response());
    };
    Err(match forward(state, &leader, req).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    })
}

/// Headers that describe one connection, not the request (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The leader's CORS answer (and the `Vary` its CORS layer appends) is dropped: this master's
/// own CORS layer answers the browser that asked it, so the headers appear once.
fn strip_cors(headers: &mut HeaderMap) {
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    headers.remove(header::VARY);
}

async fn forward(state: &AppState, leader: &str, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let target = format!("{}{path}", leader.trim_end_matches('/'));
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let host = headers.remove(header::HOST);
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(before) => format!("{before}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    let proto = if state.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    headers.insert(FORWARDED_BY, HeaderValue::from(state.me.id));
    // The body was read whole, within the limit, by `body::read_whole`: it goes on with its
    // length, never as an open-ended stream the leader could refuse half-way.
    let body = axum::body::to_bytes(body, state.http.max_body_bytes)
        .await
        .map_err(|e| ApiError::BadRequest {
            detail: format!("the request body could not be read: {e}"),
            field: None,
        })?;
    let sent = state
        .forwarder
        .client
        .request(parts.method, &target)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let outcome = if sent.is_ok() { "ok" } else { "error" };
    state
        .metrics
        .proxied
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
    let upstream = sent.map_err(|error| {
        let cause = crate::tls::client::cause(&error);
        warn!(%leader, %error, %cause, "could not forward a write to the leader");
        ApiError::Unavailable {
            detail: "the leader could not be reached; retry shortly".into(),
            retry_after: 1,
        }
    })?;
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    strip_hop_by_hop(&mut headers);
    strip_cors(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(PROXIED_BY, HeaderValue::from(state.me.id));
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("if-match", HeaderValue::from_static("\"5\""));
        strip_hop_by_hop(&mut h);
        assert!(h.get("connection").is_none());
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["if-match"], "\"5\"");
    }

    #[test]
    fn the_leaders_cors_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("vary", HeaderValue::from_static("origin"));
        h.insert(
            "access-control-allow-origin",
            HeaderValue::from_static("http://a"),
        );
        h.insert("etag", HeaderValue::from_static("\"5\""));
        strip_cors(&mut h);
        assert!(h.get("vary").is_none());
        assert!(h.get("access-control-allow-origin").is_none());
        assert_eq!(h["etag"], "\"5\"");
    }

    #[test]
    fn writes_and_api_paths() {
        assert!(is_write(&Method::PATCH));
        assert!(!is_write(&Method::GET));
        assert!(is_api("/api/v1/resources"));
        assert!(is_api("/crawler/resource"));
        assert!(!is_api("/readyz"));
    }
}
