//! Who may use the API: named tokens, each with a role, given in plain text or as a SHA-256
//! digest, and whether reads need one.

use serde::Deserialize;

use super::ConfigError;
use crate::model::role::Role;

/// Who may use the API.
#[derive(Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens with the `admin` role, named `token-1`, `token-2`, ... The environment
    /// variable `CRAWLER_API_TOKENS` (comma-separated) adds more, named `env-1`, ... With no
    /// token here, in `clients` or in the environment, the API is open.
    pub tokens: Vec<String>,
    /// Named tokens, each with a role.
    pub clients: Vec<ClientConfig>,
    /// Require a token for reads too (writes always need one when tokens are set).
    pub protect_reads: bool,
}

/// One named token and its role.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Who this is, as logs, metrics and the audit trail name it (`[a-z0-9._-]`, ≤ 64).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The token in plain text (at least 16 characters)...
    #[serde(default)]
    pub token: Option<String>,
    /// ...or its SHA-256 digest, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    // Tokens are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("clients", &self.clients)
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The shortest plain token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A SHA-256 digest from 64 hex digits (either case).
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl AuthConfig {
    /// Checks every token and client, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.tokens.iter().any(|t| t.trim().len() < MIN_TOKEN_LEN) {
            return invalid(format!(
                "auth.tokens: every token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let at = format!("auth.clients[{i}]");
            if !valid_name(&client.name) {
                return invalid(format!(
                    "{at}.name: {:?} must be 1 to 64 of a-z, 0-9, '.', '_' and '-'",
                    client.name
                ));
            }
            if !names.insert(client.name.as_str()) {
                return invalid(format!("{at}.name: {:?} is given twice", client.name));
            }
            match (&client.token, &client.sha256) {
                (Some(token), None) if token.trim().len() >= MIN_TOKEN_LEN => {}
                (Some(_), None) => {
                    return invalid(format!(
                        "{at}.token: must be at least {MIN_TOKEN_LEN} characters"
                    ));
                }
                (None, Some(hex)) if parse_digest(hex).is_some() => {}
                (None, Some(_)) => {
                    return invalid(format!("{at}.sha256: must be 64 hex digits"));
                }
                _ => return invalid(format!("{at}: give exactly one of token and sha256")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, token: Option<&str>, sha256: Option<&str>) -> AuthConfig {
        AuthConfig {
            clients: vec![ClientConfig {
                name: name.into(),
                role: Role::Viewer,
                token: token.map(str::to_owned),
                sha256: sha256.map(str::to_owned),
            }],
            ..AuthConfig::default()
        }
    }

    #[test]
    fn each_mistake_is_named() {
        let digest = "a".repeat(64);
        assert!(
            client("ci", Some("0123456789abcdef"), None)
                .validate()
                .is_ok()
        );
        assert!(client("ci", None, Some(&digest)).validate().is_ok());
        for (config, says) in [
            (client("ci", Some("short"), None), "auth.clients[0].token"),
            (client("ci", None, Some("abc")), "auth.clients[0].sha256"),
            (client("ci", None, Some(&"g".repeat(64))), "sha256"),
            (client("ci", None, None), "exactly one"),
            (
                client("ci", Some("0123456789abcdef"), Some(&digest)),
                "exactly one",
            ),
            (client("CI", Some("0123456789abcdef"), None), ".name"),
            (client("", Some("0123456789abcdef"), None), ".name"),
        ] {
            let error = config.validate().expect_err("refused").to_string();
            assert!(error.contains(says), "{error} should name {says}");
        }
        let mut twice = client("ci", Some("0123456789abcdef"), None);
        twice.clients.push(twice.clients[0].clone());
        assert!(
            twice
                .validate()
                .expect_err("twice")
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn digests_parse_from_hex_and_secrets_are_never_printed() {
        let digest = parse_digest(&"0f".repeat(32)).expect("hex");
        assert_eq!(digest, [0x0f; 32]);
        assert_eq!(parse_digest(&"0F".repeat(32)), Some([0x0f; 32]));
        assert_eq!(parse_digest("0f"), None);
        let config = AuthConfig {
            tokens: vec!["a-secret-token-1234".into()],
            ..client("ci", Some("another-secret-5678"), None)
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("ci"), "{shown}");
    }
}
