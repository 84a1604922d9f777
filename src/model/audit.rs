//! One entry of the audit trail: who made a write through the API, what it was, when, from
//! where, and how it ended. Stored as JSON under `<audit_prefix><ms>-<request id>`; never a
//! token, only its name.

use serde::{Deserialize, Serialize};

/// One write through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// When the leader took the request, Unix ms.
    pub at_ms: i64,
    /// The caller: its token's name, or `anonymous`.
    pub caller: String,
    /// The HTTP method.
    pub method: String,
    /// The route, as the spec names it (`/api/v1/resources/{name}`).
    pub route: String,
    /// What it named: the resource, worker or domain in the path, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The address the request came from (a follower's, for a forwarded write).
    pub peer: String,
    /// `X-Forwarded-For` as the request gave it (a follower adds its client's address), as
    /// claimed: not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
    /// The request id (`X-Request-Id`).
    pub request_id: String,
    /// `applied` (stored in the same txn as the change it records), `answered` (a success
    /// that wrote in no txn of its own, or in several independent ones), or `refused`.
    pub outcome: String,
    /// The answer's status, when the entry was stored after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl Entry {
    /// The entry as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored entry, or `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_leave_out_what_is_absent() {
        let entry = Entry {
            at_ms: 1,
            caller: "ci".into(),
            method: "POST".into(),
            route: "/api/v1/resources".into(),
            target: None,
            peer: "127.0.0.1".into(),
            forwarded_for: None,
            request_id: "abc".into(),
            outcome: "applied".into(),
            status: None,
        };
        let bytes = entry.encode();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("target") && !text.contains("status"),
            "{text}"
        );
        assert_eq!(Entry::decode(&bytes), Some(entry));
        assert_eq!(Entry::decode(b"{"), None);
    }
}
