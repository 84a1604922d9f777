//! Bearer-token authentication.
//!
//! Tokens come from the config file and the `CRAWLER_API_TOKENS` environment variable, never
//! from the command line (where other users could read them). When any is set, every write
//! needs one, and reads too with `auth.protect_reads`. Tokens are compared in constant time and
//! never logged. A follower forwards the caller's `Authorization` header untouched, and the
//! leader checks it again. Health, readiness, the spec and Swagger UI stay open.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::AuthConfig;

/// The environment variable holding more tokens, comma-separated.
pub const TOKENS_ENV: &str = "CRAWLER_API_TOKENS";

/// Who may use the API. Cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Arc<Vec<Vec<u8>>>,
    protect_reads: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

impl Auth {
    /// Tokens from `config` and the environment.
    pub fn from_config(config: &AuthConfig) -> Self {
        let from_env = std::env::var(TOKENS_ENV).unwrap_or_default();
        Self::new(
            config
                .tokens
                .iter()
                .map(String::as_str)
                .chain(from_env.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty()),
            config.protect_reads,
        )
    }

    /// An authenticator accepting `tokens`.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>, protect_reads: bool) -> Self {
        Self {
            tokens: Arc::new(tokens.into_iter().map(|t| t.as_bytes().to_vec()).collect()),
            protect_reads,
        }
    }

    /// True when no token is configured.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// True when `presented` is one of the tokens. Every token is compared, each in constant
    /// time, so the answer's timing says nothing about which bytes matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for token in self.tokens.iter() {
            found |= token.as_slice().ct_eq(presented);
        }
        found.into()
    }
}

fn is_open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path.starts_with("/swagger-ui")
        || !(path.starts_with("/api/") || path.starts_with("/crawler/"))
}

/// Refuses (401 with `WWW-Authenticate`) a request that needs a token and presents none, or a
/// wrong one.
pub fn check(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let auth = &state.auth;
    if auth.is_open() || is_open_path(req.uri().path()) {
        return Ok(());
    }
    let write = super::proxy::is_write(req.method());
    if !write && !auth.protect_reads {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    match presented {
        Some(token) if auth.accepts(token) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized {
            detail: "the bearer token is not valid".into(),
        }),
        None => Err(ApiError::Unauthorized {
            detail: "this request needs `Authorization: Bearer <token>`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let auth = Auth::new(["a-long-enough-token-1", "another-token-222"], false);
        assert!(auth.accepts(b"a-long-enough-token-1"));
        assert!(auth.accepts(b"another-token-222"));
        assert!(!auth.accepts(b"a-long-enough-token-"));
        assert!(!auth.accepts(b""));
        assert!(!Auth::default().accepts(b"x"));
        assert!(Auth::default().is_open());
        assert!(!format!("{auth:?}").contains("token-1"), "never printed");
    }

    #[test]
    fn health_and_docs_stay_open() {
        assert!(is_open_path("/healthz"));
        assert!(is_open_path("/swagger-ui/index.html"));
        assert!(!is_open_path("/api/v1/resources"));
        assert!(!is_open_path("/crawler/resource"));
    }
}
