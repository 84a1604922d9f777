//! How much of the audit trail the leader keeps.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// The audit trail's retention.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The most entries kept; the oldest beyond it are deleted.
    pub max_entries: usize,
    /// Entries older than this are deleted.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}
