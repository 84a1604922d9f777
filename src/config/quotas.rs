//! What one caller may take of one master: a request rate and a number of open streams, so
//! that one token hammering the API cannot starve the others.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Per-caller quotas, each counted on each master.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Requests per second one caller (a token's name; an anonymous caller by its address)
    /// may make to one master; 0 leaves the rate unlimited. Beyond it: 429 with Retry-After.
    pub rate: u32,
    /// Requests a caller may make at once above its rate after a quiet spell (at least 1).
    pub burst: u32,
    /// A request over its caller's rate waits its turn, in order, for up to this long before
    /// it is refused (`0s`: refused at once). Waiting costs the master nothing, so a client
    /// that ignores Retry-After slows itself down instead of spinning on refusals.
    #[serde(deserialize_with = "duration")]
    pub max_wait: Duration,
    /// Event streams and followed logs one caller may hold open on one master at once; 0 for
    /// no limit.
    pub streams: u32,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            rate: 0,
            burst: 100,
            max_wait: Duration::from_secs(1),
            streams: 64,
        }
    }
}

impl QuotasConfig {
    /// Checks the burst.
    pub fn validate(&self) -> Result<(), String> {
        if self.burst == 0 {
            return Err("quotas.burst must be at least 1".into());
        }
        Ok(())
    }
}
