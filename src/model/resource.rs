//! Crawl tasks ("resources") in the JSON the Go crawler stores under `/resources/<name>`.
//!
//! Go workers read `ID`, `Name`, `AssignedNode` and `CreationTime`, so those keep their names
//! and types. Fields this codec does not know are kept so that nothing is lost on rewrite.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::etcd::cache::{DecodeError, Object};

/// A resource as stored in etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Snowflake id, as a decimal string.
    #[serde(rename = "ID")]
    pub id: String,
    /// Resource name; equal to the last segment of its key.
    #[serde(rename = "Name")]
    pub name: String,
    /// `<node-id>|<address>` of the worker it is assigned to, or empty.
    #[serde(rename = "AssignedNode", default)]
    pub assigned_node: String,
    /// Creation time in Unix nanoseconds.
    #[serde(rename = "CreationTime", default)]
    pub creation_time: i64,
    /// Fields this codec does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Where labels are kept in the stored JSON (a field the Go crawler ignores).
pub const LABELS_FIELD: &str = "Labels";
/// When the resource was last restarted through the API, Unix milliseconds (a field the Go
/// crawler ignores). Changing it changes the resource's epoch, and its worker starts the task
/// again.
pub const RESTARTED_FIELD: &str = "RestartedAt";

/// In a worker's assignment key written by a repair, the resource's version (mod revision) the
/// key stands for; absent when the key was written in the resource's own txn, whose revision
/// is the key's.
pub const EPOCH_FIELD: &str = "Epoch";

impl Resource {
    /// The assignment epoch of a worker's key whose mod revision is `mod_revision`.
    pub fn epoch(&self, mod_revision: i64) -> i64 {
        self.extra
            .get(EPOCH_FIELD)
            .and_then(Value::as_i64)
            .unwrap_or(mod_revision)
    }

    /// The labels stored in the resource; malformed ones are ignored.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.extra
            .get(LABELS_FIELD)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// The assigned worker's node id and address, if assigned.
    pub fn assignment(&self) -> Option<(&str, &str)> {
        if self.assigned_node.is_empty() {
            return None;
        }
        Some(
            self.assigned_node
                .split_once('|')
                .unwrap_or((self.assigned_node.as_str(), "")),
        )
    }

    /// The node id of the assigned worker, if assigned.
    pub fn assigned_worker(&self) -> Option<&str> {
        self.assignment().map(|(id, _)| id)
    }

    /// Encodes `node_id` and `address` the way the Go crawler does.
    pub fn assigned_node_value(node_id: &str, address: &str) -> String {
        format!("{node_id}|{address}")
    }
}

impl Object for Resource {
    fn decode(name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let r: Resource = serde_json::from_slice(value)
            .map_err(|e| DecodeError::new(format!("not a resource record: {e}")))?;
        if r.name != name {
            return Err(DecodeError::new(format!(
                "Name {:?} does not match its key {name:?}",
                r.name
            )));
        }
        Ok(r)
    }

    fn group(&self) -> Option<&str> {
        self.assigned_worker()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_go_format() {
        let text = r#"{"ID":"1395790254231478272","Name":"douban","AssignedNode":"go.micro.server.worker-2|192.168.0.107:9089","CreationTime":1621344456000000000}"#;
        let r = Resource::decode("douban", text.as_bytes()).expect("decodes");
        assert_eq!(
            r.assignment(),
            Some(("go.micro.server.worker-2", "192.168.0.107:9089"))
        );
        assert_eq!(r.creation_time, 1_621_344_456_000_000_000);
        let again: Value = serde_json::to_value(&r).expect("encodes");
        assert_eq!(again, serde_json::from_str::<Value>(text).expect("json"));
    }

    #[test]
    fn unassigned_and_mismatched() {
        let text = r#"{"ID":"1","Name":"a","AssignedNode":"","CreationTime":0}"#;
        let r = Resource::decode("a", text.as_bytes()).expect("decodes");
        assert_eq!(r.assignment(), None);
        assert!(Resource::decode("b", text.as_bytes()).is_err());
        assert!(Resource::decode("a", b"{").is_err());
    }
}
