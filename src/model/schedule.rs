//! The fleet's scheduling state as stored in etcd, so that a new leader continues where the old
//! one stopped: operators' cordons and drains, when each absent worker left (its grace
//! period), the storm guard's freeze, and every resource's assignment history.
//!
//! The first three live under one prefix (`/crawler/schedule/`), which every master caches:
//! [`Record`] tells them apart by the key's remainder. Histories live under a prefix of their
//! own and are read from etcd on demand, never cached.

use serde::{Deserialize, Serialize};

use crate::object::{DecodeError, Object};

use crate::keys::{
    SCHEDULE_CONTROL as CONTROL, SCHEDULE_DEPARTED as DEPARTED, SCHEDULE_STORM as STORM,
};

/// What an operator decided about a worker. Kept apart from the worker's go-micro registration,
/// which the worker owns, so it survives the worker's restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// When the worker was cordoned, Unix ms. A cordoned worker takes no new task.
    pub cordoned_at_ms: i64,
    /// The drain in progress, if any (a draining worker is also cordoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// A drain: the worker's tasks move elsewhere at the reassignment rate, all of them once the
/// deadline passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When it started, Unix ms.
    pub since_ms: i64,
    /// After this, Unix ms, the remaining tasks move regardless of the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// Who asked for it (a token's name): the histories of the tasks it moves name them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// When a worker's registration disappeared. Its tasks stay assigned to it for the grace
/// period (`scheduling.reassign_after`) from then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// When the leader saw it leave, Unix ms.
    pub at_ms: i64,
}

/// The storm guard's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storm {
    /// True while reassignment is frozen.
    pub frozen: bool,
    /// When the freeze began, Unix ms.
    pub since_ms: i64,
    /// Why, in one line.
    pub reason: String,
    /// The workers whose departure caused it.
    pub left: Vec<String>,
    /// How many workers there were (present and just departed) when it froze.
    pub of: usize,
    /// When it thawed, Unix ms; departures before this no longer count towards a storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thawed_at_ms: Option<i64>,
    /// `operator` or `workers-returned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thawed_by: Option<String>,
}

/// One record under the schedule prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Operators' state for the worker with this node id.
    Control(String, Control),
    /// The worker with this node id left.
    Departed(String, Departure),
    /// The storm guard.
    Storm(Storm),
}

impl Object for Record {
    fn decode(name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let json = |e: serde_json::Error| DecodeError::new(e.to_string());
        if let Some(id) = name.strip_prefix(CONTROL) {
            Ok(Record::Control(
                id.to_owned(),
                serde_json::from_slice(value).map_err(json)?,
            ))
        } else if let Some(id) = name.strip_prefix(DEPARTED) {
            Ok(Record::Departed(
                id.to_owned(),
                serde_json::from_slice(value).map_err(json)?,
            ))
        } else if name == STORM {
            Ok(Record::Storm(serde_json::from_slice(value).map_err(json)?))
        } else {
            Err(DecodeError::new(format!(
                "unknown schedule record {name:?}"
            )))
        }
    }
}

/// Why a resource was (re)assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// First assignment of a new resource.
    Created,
    /// Its worker left and the grace period ran out.
    WorkerLeft,
    /// Its worker was drained.
    Drained,
    /// Moved to spread the load.
    Rebalanced,
    /// A client pinned it to a worker.
    Pinned,
    /// A client restarted it.
    Restarted,
    /// A client changed where it may run, and its worker no longer fits.
    Constrained,
    /// A waiting task of higher priority took its place; it waits for a worker.
    Preempted,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 8] = [
        Reason::Created,
        Reason::WorkerLeft,
        Reason::Drained,
        Reason::Rebalanced,
        Reason::Pinned,
        Reason::Restarted,
        Reason::Constrained,
        Reason::Preempted,
    ];

    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Created => "created",
            Reason::WorkerLeft => "worker-left",
            Reason::Drained => "drained",
            Reason::Rebalanced => "rebalanced",
            Reason::Pinned => "pinned",
            Reason::Restarted => "restarted",
            Reason::Constrained => "constrained",
            Reason::Preempted => "preempted",
        }
    }

    /// True for moves that the reassignment rate limits.
    pub fn rate_limited(self) -> bool {
        matches!(
            self,
            Reason::WorkerLeft | Reason::Drained | Reason::Rebalanced | Reason::Preempted
        )
    }
}

/// One assignment in a resource's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// Why.
    #[schema(value_type = String, example = "drained")]
    pub reason: Reason,
    /// When the leader wrote it, Unix ms.
    pub at_ms: i64,
    /// The worker it left (node id), if any.
    #[serde(default)]
    pub from: Option<String>,
    /// The worker it went to (node id); null when it waits for one.
    #[serde(default)]
    pub to: Option<String>,
    /// Who asked for it through the API (a token's name, or `anonymous`); absent for what
    /// the leader decided itself (a worker left, a rebalance, a drain's moves: the drain's
    /// caller is in the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Entries kept per resource.
pub const HISTORY_LEN: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_by_key() {
        let control = br#"{"cordoned_at_ms":5,"drain":{"since_ms":6}}"#;
        assert_eq!(
            Record::decode("worker:w-1", control).expect("control"),
            Record::Control(
                "w-1".into(),
                Control {
                    cordoned_at_ms: 5,
                    drain: Some(Drain {
                        since_ms: 6,
                        deadline_ms: None,
                        by: None,
                    })
                }
            )
        );
        assert!(matches!(
            Record::decode("departed:w-2", br#"{"at_ms":7}"#),
            Ok(Record::Departed(id, Departure { at_ms: 7 })) if id == "w-2"
        ));
        let storm = br#"{"frozen":true,"since_ms":1,"reason":"r","left":["a"],"of":3}"#;
        assert!(matches!(Record::decode("storm", storm), Ok(Record::Storm(s)) if s.frozen));
        assert!(Record::decode("other", b"{}").is_err());
        assert!(Record::decode("worker:x", b"[").is_err());
    }

    #[test]
    fn reasons_use_their_api_names() {
        for reason in Reason::ALL {
            let json = serde_json::to_string(&reason).expect("json");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
