//! Configuration: built-in defaults, overridden by `config.yaml`, overridden by flags.
//!
//! Every key is optional. Unknown keys are rejected so that a typo in an operator's file is
//! reported at start-up instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::keys::KeyLayout;

mod audit;
mod auth;
mod politeness;
mod quotas;
mod runners;
mod scheduling;
mod tls;
pub use audit::AuditConfig;
pub use auth::{AuthConfig, ClientConfig, parse_digest};
pub use politeness::PolitenessConfig;
pub use quotas::QuotasConfig;
pub use runners::{Missing, RunnerRule, Runners};
pub use scheduling::SchedulingConfig;
pub use tls::TlsConfig;

/// The whole configuration of a master or a worker.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// Where things live in etcd.
    pub keys: KeyLayout,
    /// Worker registration settings.
    pub worker: WorkerConfig,
    /// Master settings.
    pub master: MasterConfig,
    /// The leader's scheduling policy: grace, storm guard, rate and rebalancing.
    pub scheduling: SchedulingConfig,
    /// Politeness budgets per domain, and the leases of their shares.
    pub politeness: PolitenessConfig,
    /// The master's HTTP API.
    pub http: HttpConfig,
    /// Who may use the API.
    pub auth: AuthConfig,
    /// What one caller may take of one master.
    pub quotas: QuotasConfig,
    /// How much of the audit trail the leader keeps.
    pub audit: AuditConfig,
    /// Seed crawl tasks the leader creates when they are missing.
    pub tasks: Vec<SeedTask>,
    /// Logging.
    pub log: LogConfig,
}

/// Connection settings for etcd.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// Time allowed to open a connection, in milliseconds.
    pub dial_timeout_ms: u64,
    /// Interval of HTTP/2 keep-alive pings, in milliseconds.
    pub keep_alive_interval_ms: u64,
    /// Time to wait for a keep-alive ping's answer before the connection is declared dead.
    pub keep_alive_timeout_ms: u64,
    /// Deadline for a single unary etcd request, in milliseconds.
    pub request_timeout_ms: u64,
    /// etcd user, when etcd has authentication enabled.
    pub username: Option<String>,
    /// Its password; the environment variable `CRAWLER_ETCD_PASSWORD` overrides it, so the
    /// file need not hold it.
    pub password: Option<String>,
    /// TLS to etcd (https endpoints).
    pub tls: Option<EtcdTls>,
}

/// TLS settings for etcd.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's server certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for etcd's `--client-cert-auth`.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM key of the client certificate.
    pub key_file: Option<std::path::PathBuf>,
    /// Name to check etcd's certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            dial_timeout_ms: 2_000,
            keep_alive_interval_ms: 1_000,
            keep_alive_timeout_ms: 2_000,
            request_timeout_ms: 3_000,
            username: None,
            password: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for EtcdConfig {
    // The password is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// Deadline for a single unary etcd request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Worker registration settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// go-micro service name workers register under.
    pub service: String,
    /// TTL of a worker's registration lease, in seconds.
    pub lease_ttl_secs: i64,
    /// Most resources one worker takes, unless `--capacity` says otherwise.
    pub capacity: u32,
    /// What runs a task: command templates chosen by the worker's operator, never by an API
    /// caller.
    pub runners: Runners,
    /// Where tasks get their working directories and logs (`<data_dir>/tasks/<name>/`);
    /// default: a directory under the system's temp dir named after the node id.
    pub data_dir: Option<std::path::PathBuf>,
    /// Time a stopped task's process group gets between SIGTERM and SIGKILL, in milliseconds.
    pub stop_grace_ms: u64,
    /// Most bytes of output kept per task.
    pub log_bytes: u64,
    /// First delay before a failed task is started again, in milliseconds (doubling, with
    /// jitter).
    pub restart_backoff_ms: u64,
    /// Longest delay before a failed task is started again, in milliseconds.
    pub restart_backoff_max_ms: u64,
    /// Failures within `failure_window_secs` after which a task is `failed` and left alone.
    pub max_failures: u32,
    /// The window, in seconds, in which failures are counted.
    pub failure_window_secs: u64,
    /// Tasks stop this long (ms) before an unrenewed lease could expire: a worker cut off
    /// from etcd stops them before another worker can be given them.
    pub lease_margin_ms: u64,
    /// Labels published in the registration's metadata, which tasks' selectors match
    /// (`region: eu`; `dedicated: <x>` reserves the worker for tasks tolerating `<x>`);
    /// `--label key=value` adds or overrides one.
    pub labels: BTreeMap<String, String>,
    /// Most bytes of one task's checkpoint (`PUT $CRAWLER_AGENT_URL/checkpoint`); at most
    /// 1 MiB, well under etcd's request limit.
    pub checkpoint_bytes: usize,
    /// Least time between two etcd writes of one task's checkpoint: writes in between are
    /// coalesced, the last one wins (`1s`, `500ms`).
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            service: "go.micro.server.worker".to_owned(),
            lease_ttl_secs: 10,
            capacity: 1_000,
            runners: Runners::default(),
            data_dir: None,
            stop_grace_ms: 10_000,
            log_bytes: 1024 * 1024,
            restart_backoff_ms: 1_000,
            restart_backoff_max_ms: 60_000,
            max_failures: 5,
            failure_window_secs: 600,
            lease_margin_ms: 2_000,
            labels: BTreeMap::new(),
            checkpoint_bytes: 64 * 1024,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Master settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// TTL of the election session lease, in seconds.
    pub session_ttl_secs: i64,
    /// Seconds between compactions of etcd's history, and the history kept; 0: never.
    pub compaction_interval_secs: u64,
    /// Milliseconds between two samples of the dashboard's trends (360 are kept).
    pub trends_sample_ms: u64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 5,
            compaction_interval_secs: 300,
            trends_sample_ms: 10_000,
        }
    }
}

/// A duration written for humans (`90s`, `2m`, `1h 30m`, `0s`).
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(serde::de::Error::custom)
}

/// The master's HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most bytes of tasks' views kept rendered as JSON for reads.
    pub rendered_cache_bytes: usize,
    /// Longest a read with `?min_revision=` waits for the cache, in milliseconds.
    pub min_revision_wait_ms: u64,
    /// Time allowed to connect to the leader when forwarding a write, in milliseconds.
    pub proxy_connect_timeout_ms: u64,
    /// Time allowed for a whole forwarded write, in milliseconds.
    pub proxy_timeout_ms: u64,
    /// Browser origins allowed by CORS (exact matches, e.g. `http://localhost:3000`); empty
    /// allows none.
    pub cors_origins: Vec<String>,
    /// Longest one request may take before it is answered 503, in milliseconds (event
    /// streams are exempt once they started).
    pub request_timeout_ms: u64,
    /// Longest the master waits for in-flight requests on shutdown, in milliseconds.
    pub drain_timeout_ms: u64,
    /// HTTPS instead of HTTP.
    pub tls: Option<TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            rendered_cache_bytes: 32 * 1024 * 1024,
            min_revision_wait_ms: 3_000,
            proxy_connect_timeout_ms: 1_000,
            proxy_timeout_ms: 10_000,
            cors_origins: Vec::new(),
            request_timeout_ms: 15_000,
            drain_timeout_ms: 5_000,
            tls: None,
        }
    }
}

/// One seed crawl task.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SeedTask {
    /// Resource name.
    pub name: String,
    /// Its schedule, when it recurs.
    #[serde(default)]
    pub schedule: Option<crate::model::recurrence::Rule>,
    /// Where it may run.
    #[serde(default)]
    pub placement: crate::model::constraints::Constraints,
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `crawler=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: serde_yaml_ng::Error,
    },
    /// A value is out of its range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a YAML document. An empty document gives the defaults.
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads a file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&text, &shown)
    }

    /// Checks ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.etcd.endpoints.is_empty() {
            return Err(ConfigError::Invalid("etcd.endpoints is empty".into()));
        }
        if self.worker.lease_ttl_secs < 2 {
            return Err(ConfigError::Invalid(
                "worker.lease_ttl_secs must be at least 2".into(),
            ));
        }
        if self.master.session_ttl_secs < 2 {
            return Err(ConfigError::Invalid(
                "master.session_ttl_secs must be at least 2".into(),
            ));
        }
        self.keys.validate().map_err(ConfigError::Invalid)?;
        if !(1..=1024 * 1024).contains(&self.worker.checkpoint_bytes) {
            return Err(ConfigError::Invalid(
                "worker.checkpoint_bytes must be between 1 and 1048576".into(),
            ));
        }
        self.politeness.validate().map_err(ConfigError::Invalid)?;
        self.quotas.validate().map_err(ConfigError::Invalid)?;
        if let Some(tls) = &self.http.tls {
            tls.validate().map_err(ConfigError::Invalid)?;
        }
        let s = &self.scheduling;
        if !(s.storm_fraction > 0.0 && s.storm_fraction <= 1.0) {
            return Err(ConfigError::Invalid(
                "scheduling.storm_fraction must be in (0, 1]".into(),
            ));
        }
        if !(s.reassign_rate.is_finite() && s.reassign_rate > 0.0) {
            return Err(ConfigError::Invalid(
                "scheduling.reassign_rate must be positive".into(),
            ));
        }
        if !(s.rebalance_threshold.is_finite() && s.rebalance_threshold >= 0.0) {
            return Err(ConfigError::Invalid(
                "scheduling.rebalance_threshold must be at least 0".into(),
            ));
        }
        if s.preemption_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "scheduling.preemption_interval must be positive".into(),
            ));
        }
        for (key, value) in &self.worker.labels {
            crate::model::registry::check_label(key, value)
                .map_err(|e| ConfigError::Invalid(format!("worker.labels: {e}")))?;
        }
        for seed in &self.tasks {
            seed.placement.check().map_err(|e| {
                ConfigError::Invalid(format!("tasks: {}: {}: {}", seed.name, e.field, e.detail))
            })?;
        }
        if s.rebalance_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "scheduling.rebalance_interval must be positive".into(),
            ));
        }
        let runners = &self.worker.runners;
        let commands = runners
            .default
            .iter()
            .map(|c| ("worker.runners.default", c))
            .chain(
                runners
                    .rules
                    .iter()
                    .map(|r| ("worker.runners.rules", &r.command)),
            );
        for (key, command) in commands {
            if command
                .first()
                .is_none_or(|program| program.trim().is_empty())
            {
                return Err(ConfigError::Invalid(format!(
                    "{key}: a command names a program first"
                )));
            }
        }
        if self.worker.lease_margin_ms >= (self.worker.lease_ttl_secs as u64) * 1_000 {
            return Err(ConfigError::Invalid(
                "worker.lease_margin_ms must be shorter than worker.lease_ttl_secs".into(),
            ));
        }
        if self.worker.max_failures == 0 {
            return Err(ConfigError::Invalid(
                "worker.max_failures must be at least 1".into(),
            ));
        }
        if let Some(tls) = &self.etcd.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(ConfigError::Invalid(
                "etcd.tls: cert_file and key_file go together".into(),
            ));
        }
        self.auth.validate()?;
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "http.max_body_bytes must be positive".into(),
            ));
        }
        for origin in &self.http.cors_origins {
            if axum::http::HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
                return Err(ConfigError::Invalid(format!(
                    "http.cors_origins: {origin:?} is not an origin like http://host:port"
                )));
            }
        }
        for task in &self.tasks {
            crate::model::name::validate(&task.name)
                .map_err(|e| ConfigError::Invalid(format!("tasks: {:?}: {e}", task.name)))?;
            if let Some(rule) = &task.schedule {
                rule.compile(crate::model::status::now_ms()).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "tasks: {:?}: {}: {}",
                        task.name, e.field, e.detail
                    ))
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_defaults_where_uncustomised() {
        let text = include_str!("../../config.yaml");
        let config = Config::from_yaml(text, "config.yaml").expect("shipped config parses");
        let defaults = Config::default();
        assert_eq!(config.etcd.endpoints, defaults.etcd.endpoints);
        assert_eq!(config.keys, defaults.keys);
        assert_eq!(config.worker.service, "go.micro.server.worker");
        assert_eq!(config.worker.lease_ttl_secs, 10);
        assert_eq!(config.master.session_ttl_secs, 5);
        assert_eq!(config.scheduling, defaults.scheduling);
    }

    #[test]
    fn empty_document_is_defaults() {
        let config = Config::from_yaml("", "x").expect("empty is fine");
        assert_eq!(config.keys.resources_prefix, "/resources/");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(Config::from_yaml("etcd:\n  endpoint: x\n", "x").is_err());
        assert!(Config::from_yaml("master:\n  session_ttl_secs: 1\n", "x").is_err());
        assert!(Config::from_yaml("tasks:\n  - name: 'a/b'\n", "x").is_err());
        assert!(Config::from_yaml("log:\n  format: xml\n", "x").is_err());
        assert!(Config::from_yaml("scheduling:\n  reassign_after: soon\n", "x").is_err());
        assert!(Config::from_yaml("scheduling:\n  storm_fraction: 1.5\n", "x").is_err());
        let ok = Config::from_yaml("scheduling:\n  reassign_after: 1m 30s\n", "x").expect("ok");
        assert_eq!(ok.scheduling.reassign_after, Duration::from_secs(90));
    }
}
