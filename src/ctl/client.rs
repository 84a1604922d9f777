//! The masters as `crawler ctl` reaches them: several addresses tried in turn, a bearer token,
//! and the API's problem documents turned into errors with exit codes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

/// Why a command failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line asks for something impossible (exit 2).
    #[error("{0}")]
    Usage(String),
    /// What the command names does not exist (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// The API refused (exit 1).
    #[error("{0}")]
    Failed(String),
    /// No master answered, or the one that did could not serve now (a 5xx, a 408 or 429):
    /// worth trying again later (exit 1).
    #[error("{0}")]
    Unavailable(String),
}

impl CtlError {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::Failed(_) | Self::Unavailable(_) => 1,
        }
    }
}

/// What the client trusts and presents over HTTPS.
#[derive(Debug, Default, Clone)]
pub struct Trust {
    /// PEM CA certificates for the masters' certificates (None: the system's trust store).
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate and its key, for masters that ask for one.
    pub cert: Option<std::path::PathBuf>,
    /// The key of `cert`.
    pub key: Option<std::path::PathBuf>,
}

/// How long one request (not a stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The masters, tried in turn from the one that answered last.
pub struct Client {
    http: reqwest::Client,
    servers: Vec<String>,
    token: Option<String>,
    current: AtomicUsize,
}

impl Client {
    /// A client of `servers` (`http://host:port`, `https://host:port`, or just `host:port`),
    /// trusting the CA in `tls` when it names one.
    pub fn new(servers: &[String], token: Option<String>, tls: &Trust) -> Result<Self, CtlError> {
        let servers: Vec<String> = servers
            .iter()
            .map(|s| s.trim().trim_end_matches('/'))
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.contains("://") {
                    s.to_owned()
                } else {
                    format!("http://{s}")
                }
            })
            .collect();
        if servers.is_empty() {
            return Err(CtlError::Usage("--server names no master".into()));
        }
        let mut http = crate::tls::client::builder();
        if let Some(ca) = &tls.ca {
            let identity = match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => Some(
                    crate::tls::client::identity(cert, key)
                        .map_err(|e| CtlError::Usage(e.to_string()))?,
                ),
                _ => None,
            };
            let config = crate::tls::client::trusting(ca, identity)
                .map_err(|e| CtlError::Usage(e.to_string()))?;
            http = http.tls_backend_preconfigured(config);
        }
        let http = http
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| CtlError::Failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            http,
            servers,
            token,
            current: AtomicUsize::new(0),
        })
    }

    /// The master the next request goes to first.
    pub fn server(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Moves on to the next master (after a stream from this one broke).
    pub fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a request, trying each master in turn while none can be reached; `stream` leaves
    /// the response without a deadline. A master that answers is kept for the next requests.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
        stream: bool,
    ) -> Result<Response, CtlError> {
        let mut last_error = String::new();
        for _ in 0..self.servers.len() {
            let base = self.server().to_owned();
            let mut request = self.http.request(method.clone(), format!("{base}{path}"));
            if !stream {
                request = request.timeout(REQUEST_TIMEOUT);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => return Ok(response),
                Err(error) => {
                    last_error = format!("{base}: {}", crate::tls::client::cause(&error));
                    self.rotate();
                }
            }
        }
        Err(CtlError::Unavailable(format!(
            "no master answered (last: {last_error}); set --server or CRAWLER_SERVER"
        )))
    }

    /// A request whose answer is JSON: the document, or the API's problem as an error.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        let response = self.send(method, path, body, &[], false).await?;
        let response = checked(response).await?;
        response
            .json()
            .await
            .map_err(|e| CtlError::Failed(format!("the answer is not JSON: {e}")))
    }

    /// GET of a JSON document.
    pub async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.json(Method::GET, path, None).await
    }

    /// GET of a JSON document with its `X-Etcd-Revision` and `ETag`.
    pub async fn get_versioned(&self, path: &str) -> Result<(Value, i64, String), CtlError> {
        let response = checked(self.send(Method::GET, path, None, &[], false).await?).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let revision = header("x-etcd-revision").parse().unwrap_or(0);
        let etag = header("etag");
        let value = response
            .json()
            .await
            .map_err(|e| CtlError::Failed(format!("the answer is not JSON: {e}")))?;
        Ok((value, revision, etag))
    }
}

/// The response when it is a success, else the API's problem as an error: a 404 is
/// [`CtlError::NotFound`].
pub async fn checked(response: Response) -> Result<Response, CtlError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = problem_text(status, &text);
    Err(match status {
        StatusCode::NOT_FOUND => CtlError::NotFound(message),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            CtlError::Unavailable(message)
        }
        s if s.is_server_error() => CtlError::Unavailable(message),
        _ => CtlError::Failed(message),
    })
}

/// What a problem document says: `title: detail (field x)`, or the status and body.
fn problem_text(status: StatusCode, body: &str) -> String {
    let Ok(problem) = serde_json::from_str::<Value>(body) else {
        return format!("{status}: {}", body.trim());
    };
    let title = problem["title"].as_str().unwrap_or("");
    let detail = problem["detail"].as_str().unwrap_or("");
    let mut text = match (title.is_empty(), detail.is_empty()) {
        (false, false) => format!("{title}: {detail}"),
        (false, true) => title.to_owned(),
        (true, false) => detail.to_owned(),
        (true, true) => format!("{status}: {}", body.trim()),
    };
    if let Some(field) = problem["field"].as_str() {
        text.push_str(&format!(" (field {field})"));
    }
    text
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` as one path segment.
pub fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_title_detail_and_field() {
        let body = r#"{"type":"urn:crawler:problem:conflict","title":"Already exists","status":409,"detail":"resource \"a\" already exists"}"#;
        assert_eq!(
            problem_text(StatusCode::CONFLICT, body),
            "Already exists: resource \"a\" already exists"
        );
        let body = r#"{"title":"Bad request","detail":"at most 1000 workers","field":"drain"}"#;
        assert_eq!(
            problem_text(StatusCode::BAD_REQUEST, body),
            "Bad request: at most 1000 workers (field drain)"
        );
        assert_eq!(
            problem_text(StatusCode::BAD_GATEWAY, "upstream down\n"),
            "502 Bad Gateway: upstream down"
        );
    }

    #[test]
    fn names_are_escaped_as_one_segment_and_servers_get_a_scheme() {
        assert_eq!(segment("a.b_c-d"), "a.b_c-d");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        let client = Client::new(
            &["127.0.0.1:1/".into(), " ".into()],
            None,
            &Trust::default(),
        )
        .expect("client");
        assert_eq!(client.server(), "http://127.0.0.1:1");
        assert!(matches!(
            Client::new(&[String::new()], None, &Trust::default()),
            Err(CtlError::Usage(_))
        ));
    }
}
