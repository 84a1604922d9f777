//! Politeness budgets: what the whole fleet may send each site, and how the leader's shares of
//! them are leased to workers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use crate::model::politeness::{Budget, check_domain};

/// Politeness settings. Durations are written like `5s` or `500ms`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolitenessConfig {
    /// The budget of every domain that has none of its own.
    pub default: Budget,
    /// Budgets by domain (or host); the API's `PUT /api/v1/domains/{domain}` overrides them.
    pub domains: BTreeMap<String, Budget>,
    /// How long a worker may use its shares after the read that last showed them current;
    /// a new leader grants nothing beyond the shares it found for this long.
    #[serde(deserialize_with = "duration")]
    pub share_lease: Duration,
    /// How often a worker confirms its shares and reports what its tasks want, and how often
    /// the leader splits the budgets again.
    #[serde(deserialize_with = "duration")]
    pub renew_interval: Duration,
    /// Once its lease has run out unconfirmed (etcd unreachable), a worker paces each domain at
    /// this fraction of the domain's budget, one request at a time, and never above its last
    /// share: the safe share.
    pub safe_fraction: f64,
    /// Longest a request may hold a concurrency slot without a release.
    #[serde(deserialize_with = "duration")]
    pub hold_limit: Duration,
}

impl Default for PolitenessConfig {
    fn default() -> Self {
        Self {
            default: Budget::default(),
            domains: BTreeMap::new(),
            share_lease: Duration::from_secs(5),
            renew_interval: Duration::from_secs(1),
            safe_fraction: 0.1,
            hold_limit: Duration::from_secs(60),
        }
    }
}

impl PolitenessConfig {
    /// Checks every budget and that the renewal is well inside the lease.
    pub fn validate(&self) -> Result<(), String> {
        self.default
            .check()
            .map_err(|e| format!("politeness.default.{}: {}", e.field, e.detail))?;
        for (domain, budget) in &self.domains {
            check_domain(domain).map_err(|e| format!("politeness.domains: {}", e.detail))?;
            budget
                .check()
                .map_err(|e| format!("politeness.domains.{domain}.{}: {}", e.field, e.detail))?;
        }
        if self.renew_interval.is_zero() || self.renew_interval * 2 > self.share_lease {
            return Err(
                "politeness.renew_interval must be positive and at most half of share_lease".into(),
            );
        }
        if !(self.safe_fraction > 0.0 && self.safe_fraction <= 1.0) {
            return Err("politeness.safe_fraction must be in (0, 1]".into());
        }
        if self.hold_limit.is_zero() {
            return Err("politeness.hold_limit must be positive".into());
        }
        Ok(())
    }

    /// The budget configured for `domain`, if any.
    pub fn configured(&self, domain: &str) -> Option<Budget> {
        self.domains.get(domain).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_budgets_are_named() {
        assert!(PolitenessConfig::default().validate().is_ok());
        let bad: PolitenessConfig =
            serde_yaml_ng::from_str("domains:\n  example.com: {rate: 0, concurrency: 1}\n")
                .expect("parse");
        let error = bad.validate().unwrap_err();
        assert!(
            error.contains("politeness.domains.example.com.rate"),
            "{error}"
        );
        let slow: PolitenessConfig =
            serde_yaml_ng::from_str("share_lease: 1s\nrenew_interval: 1s\n").expect("parse");
        assert!(slow.validate().is_err());
    }
}
