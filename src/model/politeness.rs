//! Politeness budgets as stored in etcd, and which budget a URL falls under.
//!
//! A budget caps what the whole fleet sends one site: a rate (requests/s) and a concurrency.
//! Operators set a default and per-domain overrides; a budget applies to the registrable
//! domain (`shop.example.co.uk` → `example.co.uk`, by the public suffix list) or, with
//! `scope: host`, to each host under it. Workers report what their tasks want ([`Demand`],
//! on the worker's lease); the leader splits each budget among them ([`Shares`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::invalid::{Invalid, invalid};
use crate::object::{DecodeError, Object};

/// What a domain in a path looks like: lowercase labels of letters, digits, `-` and `_`,
/// joined by dots (an IPv4 address matches too).
pub const DOMAIN_PATTERN: &str =
    "^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$";

/// Most requests/s a budget may allow.
pub const MAX_RATE: f64 = 100_000.0;
/// Most requests in flight a budget may allow.
pub const MAX_CONCURRENCY: u32 = 100_000;

/// What a budget applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The registrable domain: every host under it shares the budget.
    #[default]
    Domain,
    /// Each host under the domain has the budget to itself.
    Host,
}

/// A politeness budget: what the whole fleet may send one domain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Requests per second, fleet-wide.
    #[schema(exclusive_minimum = 0.0, maximum = 100000.0)]
    pub rate: f64,
    /// Requests in flight at once, fleet-wide.
    #[schema(minimum = 1, maximum = 100000)]
    #[serde(deserialize_with = "whole_count")]
    pub concurrency: u32,
    /// `domain` (the default) or `host`.
    #[serde(default)]
    pub scope: Scope,
}

/// A count, also when written as a whole number with a fraction of zero (`5.0`), which JSON
/// Schema's `integer` allows.
fn whole_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = super::constraints::whole(d)?;
    u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is below 0")))
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            rate: 2.0,
            concurrency: 2,
            scope: Scope::Domain,
        }
    }
}

impl Budget {
    /// Checks the bounds, naming the field (`rate`, `concurrency`) that breaks one.
    pub fn check(&self) -> Result<(), Invalid> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(invalid(
                "rate",
                format!("must be a number of requests/s in (0, {MAX_RATE}]"),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(invalid(
                "concurrency",
                format!("must be a whole number in [1, {MAX_CONCURRENCY}]"),
            ));
        }
        Ok(())
    }
}

impl Object for Budget {
    fn decode(_name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let budget: Budget =
            serde_json::from_slice(value).map_err(|e| DecodeError::new(e.to_string()))?;
        budget
            .check()
            .map_err(|e| DecodeError::new(format!("{}: {}", e.field, e.detail)))?;
        Ok(budget)
    }
}

/// A share of a budget: what one worker may send one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    /// Requests per second.
    pub rate: f64,
    /// Requests in flight.
    pub concurrency: u32,
}

/// The leader's grants to one worker, one key per worker. A worker may use them for
/// `lease_ms` after the start of the read that last showed them current.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shares {
    /// How long a read of this keeps the grants usable.
    pub lease_ms: u64,
    /// Domain → grant.
    pub grants: BTreeMap<String, Grant>,
}

impl Object for Shares {
    fn decode(_name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(value).map_err(|e| DecodeError::new(e.to_string()))
    }
}

/// What a worker's tasks want of one domain, over the last report period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Want {
    /// Runs that asked for it.
    pub tasks: u32,
    /// Requests/s granted.
    pub used: f64,
    /// True when a request had to wait: the worker would use more.
    pub saturated: bool,
    /// Requests waiting now.
    pub waiting: u32,
    /// 429 and 503 answers tasks reported, counted since the worker started.
    #[serde(default)]
    pub throttled: u64,
    /// The longest `Crawl-delay` a task reported, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawl_delay_ms: Option<u64>,
}

/// What a worker's tasks want, one key per worker on its lease (gone with the worker).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    /// The mod revision of the newest shares this worker applied: grants it gave back before
    /// that are free for others.
    pub seen: i64,
    /// Domain → want.
    pub domains: BTreeMap<String, Want>,
}

impl Object for Demand {
    fn decode(_name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(value).map_err(|e| DecodeError::new(e.to_string()))
    }
}

/// The host a task names: the host of a URL (`http://a.example.com/x`), or a bare host or
/// domain, lowercased and without a trailing dot.
pub fn host_of(url_or_host: &str) -> Result<String, Invalid> {
    let text = url_or_host.trim();
    if text.contains("://") {
        let url = url::Url::parse(text).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| invalid("url", "the URL has no host"))?;
        return normalize(host.trim_start_matches('[').trim_end_matches(']'), "url");
    }
    normalize(text, "domain")
}

/// A host name or IP address, checked and lowercased.
fn normalize(host: &str, field: &'static str) -> Result<String, Invalid> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host);
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if host.is_empty() || host.len() > 253 || !labels_ok {
        return Err(invalid(
            field,
            format!(
                "{host:?} is not a host name (letters, digits, '-', dots; punycode for others)"
            ),
        ));
    }
    Ok(host)
}

/// A domain as operators name one in a budget: a checked host name.
pub fn check_domain(domain: &str) -> Result<String, Invalid> {
    let host = normalize(domain, "domain")?;
    if host != domain {
        return Err(invalid(
            "domain",
            format!("write it as {host:?}: lowercase, no trailing dot"),
        ));
    }
    Ok(host)
}

/// The registrable domain of `host` (the public suffix list's "domain"), or the host itself
/// for an IP address, a bare suffix or a single label.
pub fn registrable(host: &str) -> &str {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    psl::domain_str(host).unwrap_or(host)
}

/// The key a request to `host` is counted under, and its budget: a budget set for the host
/// itself; else the one set for its registrable domain, or the default, keyed by that domain
/// (scope `domain`) or by the host (scope `host`).
pub fn budget_for(
    host: &str,
    set: impl Fn(&str) -> Option<Budget>,
    default: Budget,
) -> (String, Budget) {
    if let Some(budget) = set(host) {
        return (host.to_owned(), budget);
    }
    let domain = registrable(host);
    let budget = set(domain).unwrap_or(default);
    match budget.scope {
        Scope::Domain => (domain.to_owned(), budget),
        Scope::Host => (host.to_owned(), budget),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(rate: f64, scope: Scope) -> Budget {
        Budget {
            rate,
            concurrency: 4,
            scope,
        }
    }

    #[test]
    fn hosts_come_from_urls_and_names() {
        assert_eq!(
            host_of("https://Shop.Example.CO.UK./a?b").unwrap(),
            "shop.example.co.uk"
        );
        assert_eq!(host_of("www.example.com").unwrap(), "www.example.com");
        assert_eq!(host_of("http://127.0.0.1:8080/x").unwrap(), "127.0.0.1");
        assert_eq!(host_of("http://[::1]:80/").unwrap(), "::1");
        assert_eq!(host_of("not a host").unwrap_err().field, "domain");
        assert_eq!(host_of("http://").unwrap_err().field, "url");
        assert_eq!(host_of("").unwrap_err().field, "domain");
        assert_eq!(host_of("-a.com").unwrap_err().field, "domain");
        assert!(check_domain("Example.com").is_err());
        assert!(check_domain("example.com").is_ok());
    }

    #[test]
    fn the_documented_pattern_agrees_with_the_check() {
        let pattern = regex_lite(DOMAIN_PATTERN);
        for domain in ["example.com", "a-b.c_d.org", "0", "127.0.0.1", "x"] {
            assert!(check_domain(domain).is_ok(), "{domain}");
            assert!(pattern(domain), "{domain}");
        }
        for domain in [
            "Example.com",
            "-a.com",
            "a-.com",
            "a..b",
            "a.",
            "",
            "a b",
            "é.com",
        ] {
            assert!(check_domain(domain).is_err(), "{domain}");
            assert!(!pattern(domain), "{domain}");
        }
    }

    /// The pattern as a matcher (no regex crate in the library: the tests' dev-dependency).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let re = regex::Regex::new(pattern).expect("pattern");
        move |s| re.is_match(s)
    }

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        assert_eq!(registrable("shop.example.co.uk"), "example.co.uk");
        assert_eq!(registrable("a.b.example.com"), "example.com");
        assert_eq!(registrable("10.0.0.1"), "10.0.0.1");
        assert_eq!(registrable("user.github.io"), "user.github.io");
    }

    #[test]
    fn a_budget_is_found_for_the_host_then_its_domain_then_the_default() {
        let set = |d: &str| match d {
            "example.com" => Some(b(20.0, Scope::Domain)),
            "api.example.com" => Some(b(5.0, Scope::Domain)),
            "cdn.net" => Some(b(50.0, Scope::Host)),
            _ => None,
        };
        let default = b(2.0, Scope::Domain);
        assert_eq!(budget_for("www.example.com", set, default).0, "example.com");
        assert_eq!(budget_for("api.example.com", set, default).1.rate, 5.0);
        assert_eq!(budget_for("a.cdn.net", set, default).0, "a.cdn.net");
        assert_eq!(budget_for("a.cdn.net", set, default).1.rate, 50.0);
        let (key, budget) = budget_for("x.other.org", set, default);
        assert_eq!((key.as_str(), budget.rate), ("other.org", 2.0));
    }

    #[test]
    fn budgets_out_of_bounds_name_their_field() {
        assert_eq!(b(0.0, Scope::Domain).check().unwrap_err().field, "rate");
        assert_eq!(
            b(f64::NAN, Scope::Domain).check().unwrap_err().field,
            "rate"
        );
        let none = Budget {
            concurrency: 0,
            ..Budget::default()
        };
        assert_eq!(none.check().unwrap_err().field, "concurrency");
        assert!(Budget::decode("x", br#"{"rate":1,"concurrency":1}"#).is_ok());
        assert!(Budget::decode("x", br#"{"rate":1,"concurrency":3.0}"#).is_ok());
        assert!(Budget::decode("x", br#"{"rate":1,"concurrency":-3}"#).is_err());
        assert!(Budget::decode("x", br#"{"rate":-1,"concurrency":1}"#).is_err());
    }
}
