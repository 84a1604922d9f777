//! go-micro's etcd registry format, so that Go workers and ours share one cluster.
//!
//! go-micro stores one key per node, `/micro/registry/<service>/<node-id>`, whose value is a
//! whole `Service` document holding that node. Unknown fields are kept in `extra` so that a
//! record written by a newer go-micro survives a round trip through this codec.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::constraints::Labels;
use super::intern::{Table, share};
use crate::object::{DecodeError, Object};

/// go-micro's `registry.Service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Service name, e.g. `go.micro.server.worker`.
    pub name: String,
    /// Service version.
    #[serde(default)]
    pub version: String,
    /// Free-form metadata; go-micro writes `null` when there is none.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Endpoint descriptions, kept as they are.
    #[serde(default)]
    pub endpoints: Option<Vec<Value>>,
    /// The nodes; one per key in the etcd registry.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Fields this codec does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// go-micro's `registry.Node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Node id, `<service>-<id>`.
    pub id: String,
    /// `host:port` the node serves on.
    pub address: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Fields this codec does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A worker as the master sees it: one node of the worker service.
///
/// Masters cache thousands of these, so the record is kept compact: the fields the API shows,
/// strings that do not grow, and metadata shared. Masters never write a worker's record, so
/// the record as stored is not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    /// Node id, e.g. `go.micro.server.worker-2`.
    pub id: String,
    /// Address the worker advertises.
    pub address: Box<str>,
    /// Node metadata merged over service metadata. Workers with the same metadata share one
    /// copy: a fleet has few label sets, and a copy per worker was half its cached record.
    pub metadata: Arc<Labels>,
    /// Service version.
    pub version: Box<str>,
}

/// Metadata key for the most resources a worker takes.
pub const CAPACITY_KEY: &str = "capacity";
/// Metadata keys this crawler's worker writes itself; an operator's labels may not use them.
pub const RESERVED_KEYS: [&str; 4] = [CAPACITY_KEY, "version", "registry", "server"];

/// Checks one label a worker's operator gives (`--label key=value`, `worker.labels`): 1 to 256
/// characters of key, at most 256 of value, no control characters, and not a key the worker
/// writes itself.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let ok = |s: &str, min: usize| {
        (min..=256).contains(&s.chars().count()) && !s.chars().any(char::is_control)
    };
    if !ok(key, 1) || !ok(value, 0) {
        return Err(format!(
            "label {key:?}: a key is 1 to 256 characters and a value at most 256, with no \
             control characters"
        ));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(format!("label {key:?}: the worker sets this key itself"));
    }
    Ok(())
}

impl Worker {
    /// The worker's capacity, from metadata; `None` means unbounded (e.g. Go workers).
    pub fn capacity(&self) -> Option<u32> {
        self.meta(CAPACITY_KEY).and_then(|c| c.trim().parse().ok())
    }

    /// One metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Its labels: the metadata, which a go-micro worker of any language publishes, in the
    /// copy it shares with every worker labelled alike.
    pub fn labels(&self) -> Arc<Labels> {
        Arc::clone(&self.metadata)
    }

    /// The metadata as a map of its own.
    pub fn metadata_map(&self) -> BTreeMap<String, String> {
        (*self.metadata).clone()
    }
}

/// The shared copy of `labels`, one per label set.
fn shared_labels(labels: Labels) -> Arc<Labels> {
    static LABEL_SETS: LazyLock<Mutex<Table<Arc<Labels>>>> = LazyLock::new(Default::default);
    share(&LABEL_SETS, &labels, || Arc::new(labels.clone()))
}

/// Node id of worker `id` of `service`: `<service>-<id>`.
pub fn node_id(service: &str, id: u32) -> String {
    format!("{service}-{id}")
}

/// Builds the registration document a worker puts under its lease.
pub fn registration(
    service: &str,
    node_id: &str,
    address: &str,
    metadata: BTreeMap<String, String>,
) -> Service {
    Service {
        name: service.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        metadata: None,
        endpoints: Some(Vec::new()),
        nodes: vec![Node {
            id: node_id.to_owned(),
            address: address.to_owned(),
            metadata: Some(metadata),
            extra: BTreeMap::new(),
        }],
        extra: BTreeMap::new(),
    }
}

impl Object for Worker {
    fn decode(name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let service: Service = serde_json::from_slice(value)
            .map_err(|e| DecodeError::new(format!("not a go-micro service record: {e}")))?;
        // The key names the node; prefer that node, fall back to the only one.
        let node = service
            .nodes
            .iter()
            .find(|n| n.id == name)
            .or_else(|| (service.nodes.len() == 1).then(|| &service.nodes[0]))
            .ok_or_else(|| DecodeError::new(format!("record has no node {name:?}")))?;
        if node.id.is_empty() || node.address.is_empty() {
            return Err(DecodeError::new("node id or address is empty"));
        }
        let mut metadata = service.metadata.clone().unwrap_or_default();
        metadata.extend(node.metadata.clone().unwrap_or_default());
        Ok(Worker {
            id: node.id.clone(),
            address: node.address.as_str().into(),
            metadata: shared_labels(metadata),
            version: service.version.as_str().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_RECORD: &str = r#"{"name":"go.micro.server.worker","version":"latest","metadata":null,"endpoints":[],"nodes":[{"id":"go.micro.server.worker-2","address":"192.168.0.107:9089","metadata":{"registry":"etcd","server":"grpc"}}]}"#;

    #[test]
    fn reads_a_go_worker_record_without_loss() {
        let w = Worker::decode("go.micro.server.worker-2", GO_RECORD.as_bytes()).expect("decodes");
        assert_eq!(w.id, "go.micro.server.worker-2");
        assert_eq!(&*w.address, "192.168.0.107:9089");
        assert_eq!(&*w.version, "latest");
        assert_eq!(w.meta("server"), Some("grpc"));
        assert_eq!(w.meta("registry"), Some("etcd"));
        assert_eq!(w.meta("nope"), None);
        assert_eq!(w.capacity(), None);
        // Round trip through the codec gives back the same JSON value.
        let service: Service = serde_json::from_str(GO_RECORD).expect("decodes");
        let again = serde_json::to_value(&service).expect("encodes");
        let original: Value = serde_json::from_str(GO_RECORD).expect("json");
        assert_eq!(again, original);
    }

    #[test]
    fn workers_with_the_same_labels_share_one_copy() {
        let a = Worker::decode("go.micro.server.worker-2", GO_RECORD.as_bytes()).expect("a");
        let other = GO_RECORD.replace("worker-2", "worker-3");
        let b = Worker::decode("go.micro.server.worker-3", other.as_bytes()).expect("b");
        assert!(std::sync::Arc::ptr_eq(&a.labels(), &b.labels()));
        let relabelled = GO_RECORD.replace("grpc", "http");
        let c = Worker::decode("go.micro.server.worker-2", relabelled.as_bytes()).expect("c");
        assert!(!std::sync::Arc::ptr_eq(&a.labels(), &c.labels()));
        assert_eq!(c.labels().get("server").map(String::as_str), Some("http"));
    }

    #[test]
    fn unknown_fields_survive() {
        let text = r#"{"name":"s","version":"1","nodes":[{"id":"s-1","address":"h:1","weight":3}],"ttl":9}"#;
        assert!(Worker::decode("s-1", text.as_bytes()).is_ok());
        let service: Service = serde_json::from_str(text).expect("decodes");
        let again = serde_json::to_value(&service).expect("encodes");
        assert_eq!(again["ttl"], 9);
        assert_eq!(again["nodes"][0]["weight"], 3);
    }

    #[test]
    fn our_registration_decodes_with_capacity() {
        let mut md = BTreeMap::new();
        md.insert(CAPACITY_KEY.to_owned(), "7".to_owned());
        let id = node_id("go.micro.server.worker", 3);
        let svc = registration("go.micro.server.worker", &id, "127.0.0.1:1", md);
        let bytes = serde_json::to_vec(&svc).expect("encodes");
        let w = Worker::decode(&id, &bytes).expect("decodes");
        assert_eq!(w.id, "go.micro.server.worker-3");
        assert_eq!(w.capacity(), Some(7));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"name\":\"s\",\"nodes\":[]}",
            b"{\"name\":\"s\",\"nodes\":[{\"id\":\"\",\"address\":\"\"}]}",
            b"\xff\xfe",
            b"[]",
        ] {
            assert!(Worker::decode("x", bad).is_err());
        }
    }
}
