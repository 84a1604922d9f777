//! Bearer tokens, each naming a caller with a role.
//!
//! Tokens come from the config file (plain, or as a SHA-256 digest) and the
//! `CRAWLER_API_TOKENS` environment variable, never from the command line (where other users
//! could read them). When any is set, every write needs one, and reads too with
//! `auth.protect_reads`; the caller's role must allow the operation ([`super::roles`]). Only
//! digests are kept in memory and compared, in constant time, and tokens are never logged. A
//! follower checks the caller, then forwards its `Authorization` header untouched, and the
//! leader checks it again: going through a follower never adds a right.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::roles::{self, Role};
use super::{ApiError, AppState};
use crate::config::{AuthConfig, parse_digest};

/// The environment variable holding more tokens (admin), comma-separated.
pub const TOKENS_ENV: &str = "CRAWLER_API_TOKENS";

/// Who made a request, as the token showed; handlers take it as an extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `anonymous`.
    pub name: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// True when a token named it (false: `anonymous`, told apart by address in quotas).
    pub named: bool,
}

impl Caller {
    fn anonymous(role: Role) -> Self {
        Self {
            name: Arc::from("anonymous"),
            role,
            named: false,
        }
    }

    /// Refuses with 403, naming the role needed, unless this caller has it.
    pub fn require(&self, needed: Role, what: &str) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            return Ok(());
        }
        Err(ApiError::Forbidden {
            needed,
            detail: format!(
                "{what} needs the role {needed}; the token {:?} has the role {}",
                self.name, self.role
            ),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    /// The caller the pipeline identified; a request it did not see has the least role.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller::anonymous(Role::Viewer)))
    }
}

struct Client {
    name: Arc<str>,
    role: Role,
    digest: [u8; 32],
}

/// Who may use the API. Cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    clients: Arc<Vec<Client>>,
    protect_reads: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.clients.iter().map(|c| &*c.name).collect();
        f.debug_struct("Auth")
            .field("clients", &names)
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

impl Auth {
    /// Tokens from `config` and the environment.
    pub fn from_config(config: &AuthConfig) -> Self {
        let from_env = std::env::var(TOKENS_ENV).unwrap_or_default();
        let plain = |prefix: &str, tokens: Vec<&str>| -> Vec<Client> {
            tokens
                .into_iter()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .enumerate()
                .map(|(i, t)| Client {
                    name: Arc::from(format!("{prefix}-{}", i + 1)),
                    role: Role::Admin,
                    digest: digest(t.as_bytes()),
                })
                .collect()
        };
        let mut clients = plain("token", config.tokens.iter().map(String::as_str).collect());
        clients.extend(plain("env", from_env.split(',').collect()));
        clients.extend(config.clients.iter().filter_map(|c| {
            let digest = match (&c.token, &c.sha256) {
                (Some(token), _) => digest(token.trim().as_bytes()),
                (None, Some(hex)) => parse_digest(hex)?,
                (None, None) => return None,
            };
            Some(Client {
                name: Arc::from(c.name.as_str()),
                role: c.role,
                digest,
            })
        }));
        Self {
            clients: Arc::new(clients),
            protect_reads: config.protect_reads,
        }
    }

    /// An authenticator accepting `tokens`, each with the admin role.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>, protect_reads: bool) -> Self {
        Self::from_config(&AuthConfig {
            tokens: tokens.into_iter().map(str::to_owned).collect(),
            clients: Vec::new(),
            protect_reads,
        })
    }

    /// True when no token is configured.
    pub fn is_open(&self) -> bool {
        self.clients.is_empty()
    }

    /// The caller `presented` names, if it is a token. Every digest is compared, each in
    /// constant time, so the answer's timing says nothing about which bytes matched.
    pub fn identify(&self, presented: &[u8]) -> Option<Caller> {
        let presented = digest(presented);
        let mut found = None;
        for client in self.clients.iter() {
            if bool::from(client.digest.ct_eq(&presented)) && found.is_none() {
                found = Some(Caller {
                    name: client.name.clone(),
                    role: client.role,
                    named: true,
                });
            }
        }
        found
    }
}

/// The name of the token `req` presents, when it is one (a refused request's caller, for the
/// audit trail).
pub fn named(state: &AppState, req: &Request) -> Option<Arc<str>> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)?
        .as_bytes()
        .strip_prefix(b"Bearer ")?
        .trim_ascii();
    state.auth.identify(presented).map(|c| c.name)
}

/// The caller of `req`, or the refusal: 401 (with `WWW-Authenticate`) for a request that needs
/// a token and presents none or a wrong one, 403 naming the role needed for a token whose role
/// is too low.
pub fn check(state: &AppState, req: &Request) -> Result<Caller, ApiError> {
    let auth = &state.auth;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(req.uri().path(), |p| p.as_str());
    let Some(needed) = roles::required(req.method(), route) else {
        return Ok(Caller::anonymous(if auth.is_open() {
            Role::Admin
        } else {
            Role::Viewer
        }));
    };
    if auth.is_open() {
        return Ok(Caller::anonymous(Role::Admin));
    }
    if needed == Role::Viewer && !auth.protect_reads {
        return Ok(Caller::anonymous(Role::Viewer));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    let caller = match presented {
        Some(token) => auth.identify(token).ok_or_else(|| ApiError::Unauthorized {
            detail: "the bearer token is not valid".into(),
        })?,
        None => {
            return Err(ApiError::Unauthorized {
                detail: "this request needs `Authorization: Bearer <token>`".into(),
            });
        }
    };
    caller.require(needed, &format!("{} {route}", req.method()))?;
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;

    #[test]
    fn tokens_name_their_caller_and_role() {
        let hashed = "viewer-token-0123456789";
        let hex: String = digest(hashed.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let auth = Auth::from_config(&AuthConfig {
            tokens: vec!["a-long-enough-token-1".into()],
            clients: vec![
                ClientConfig {
                    name: "oncall".into(),
                    role: Role::Operator,
                    token: Some("operator-token-0123".into()),
                    sha256: None,
                },
                ClientConfig {
                    name: "team".into(),
                    role: Role::Viewer,
                    token: None,
                    sha256: Some(hex),
                },
            ],
            protect_reads: false,
        });
        let who = |t: &str| {
            auth.identify(t.as_bytes())
                .map(|c| (c.name.to_string(), c.role))
        };
        assert_eq!(
            who("a-long-enough-token-1"),
            Some(("token-1".into(), Role::Admin))
        );
        assert_eq!(
            who("operator-token-0123"),
            Some(("oncall".into(), Role::Operator))
        );
        assert_eq!(who(hashed), Some(("team".into(), Role::Viewer)));
        assert_eq!(who("a-long-enough-token-"), None);
        assert_eq!(who(""), None);
        assert!(Auth::default().identify(b"x").is_none());
        assert!(Auth::default().is_open());
        let shown = format!("{auth:?}");
        assert!(!shown.contains("token-0123"), "never printed: {shown}");
    }

    #[test]
    fn a_role_too_low_is_refused_naming_the_role_needed() {
        let caller = Caller {
            name: Arc::from("team"),
            role: Role::Viewer,
            named: true,
        };
        assert!(caller.require(Role::Viewer, "GET").is_ok());
        match caller.require(Role::Operator, "POST /api/v1/cluster/thaw") {
            Err(ApiError::Forbidden { needed, detail }) => {
                assert_eq!(needed, Role::Operator);
                assert!(
                    detail.contains("operator") && detail.contains("team"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
