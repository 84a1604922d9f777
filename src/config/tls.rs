//! TLS on the API: the master's certificate and key, the CA its clients must present
//! certificates from (when it asks for them), and the CA it trusts when it forwards a write to
//! the leader. The files are read again while the master runs, so a renewed certificate takes
//! effect without a restart.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `http.tls`: when present, the master serves HTTPS only.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the master's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client must present a certificate issued by one
    /// of them, masters forwarding to the leader included (they present their own `cert`,
    /// which then needs the clientAuth extended key usage as well as serverAuth).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// PEM CA certificates a follower trusts for the leader's certificate when it forwards a
    /// write (read at start); unset: the system's trust store.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How often the files are checked for a change.
    #[serde(default = "reload_interval", deserialize_with = "duration")]
    pub reload_interval: Duration,
    /// Longest a client may take over its handshake before its connection is closed.
    #[serde(default = "handshake_timeout", deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

fn reload_interval() -> Duration {
    Duration::from_secs(1)
}

fn handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    /// Checks the intervals, and that a master asked for client certificates can present one.
    pub fn validate(&self) -> Result<(), String> {
        if self.reload_interval.is_zero() || self.handshake_timeout.is_zero() {
            return Err("http.tls.reload_interval and handshake_timeout must be positive".into());
        }
        if self.client_ca.is_some() && self.ca.is_none() {
            return Err(
                "http.tls.client_ca needs http.tls.ca: masters forward writes to the leader with \
                 their own certificate, and must know which CA the leader's comes from"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn tls_parses_with_defaults_and_client_certificates_need_a_ca_for_the_leader() {
        let config =
            Config::from_yaml("http:\n  tls: {cert: c.pem, key: k.pem}\n", "t").expect("parses");
        let tls = config.http.tls.expect("tls");
        assert_eq!(tls.reload_interval.as_secs(), 1);
        assert_eq!(tls.handshake_timeout.as_secs(), 10);
        let refused = Config::from_yaml(
            "http:\n  tls: {cert: c.pem, key: k.pem, client_ca: ca.pem}\n",
            "t",
        )
        .expect_err("client_ca alone");
        assert!(
            refused.to_string().contains("needs http.tls.ca"),
            "{refused}"
        );
        Config::from_yaml(
            "http:\n  tls: {cert: c.pem, key: k.pem, client_ca: ca.pem, ca: ca.pem}\n",
            "t",
        )
        .expect("both");
        let zero = Config::from_yaml(
            "http:\n  tls: {cert: c, key: k, reload_interval: 0s}\n",
            "t",
        );
        assert!(zero.is_err());
    }
}
