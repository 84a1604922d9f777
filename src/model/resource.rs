//! Crawl tasks ("resources") in the JSON the Go crawler stores under `/resources/<name>`.
//!
//! Go workers read `ID`, `Name`, `AssignedNode` and `CreationTime`, so those keep their names
//! and types. Fields this codec does not know are kept so that nothing is lost on rewrite.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::model::constraints::{self, Constraints, PLACEMENT_FIELD};
use crate::model::intern::intern;
use crate::model::recurrence::Recurrence;
use crate::object::{DecodeError, Name, Object};

/// A resource's ID: a snowflake, kept as a number (8 bytes, no allocation); any other text a
/// foreign writer stored is kept as it was, so that a rewrite loses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceId {
    /// A decimal u64 written without leading zeros (what every snowflake is).
    Snowflake(u64),
    /// Anything else, verbatim.
    Text(Box<str>),
}

impl ResourceId {
    /// The ID stored as `text`.
    pub fn parse(text: &str) -> Self {
        match text.parse::<u64>() {
            Ok(n) if n.to_string() == text => Self::Snowflake(n),
            _ => Self::Text(text.into()),
        }
    }

    /// The snowflake, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Snowflake(n) => Some(*n),
            Self::Text(_) => None,
        }
    }
}

impl From<u64> for ResourceId {
    fn from(n: u64) -> Self {
        Self::Snowflake(n)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Snowflake(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl PartialEq<str> for ResourceId {
    fn eq(&self, other: &str) -> bool {
        match self {
            Self::Snowflake(_) => *self == Self::parse(other),
            Self::Text(t) => &**t == other,
        }
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A string, as Go writes it; a bare number is read too.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ResourceId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ID string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ResourceId, E> {
                Ok(ResourceId::parse(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ResourceId, E> {
                Ok(ResourceId::Snowflake(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ResourceId, E> {
                Ok(ResourceId::parse(&v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ResourceId, E> {
                Ok(ResourceId::parse(&v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
    /// Interned without an owned copy first.
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Name;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
            Ok(intern(v))
        }
    }
    d.deserialize_str(Visitor)
}

/// A resource as stored in etcd. Kept small, as a million of them are cached on every master:
/// the ID is a number, the name is shared with the cache's key, and the assigned node is one
/// string per worker shared by all its resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Snowflake id, stored as a decimal string.
    #[serde(rename = "ID")]
    pub id: ResourceId,
    /// Resource name; equal to the last segment of its key.
    #[serde(rename = "Name")]
    pub name: Name,
    /// `<node-id>|<address>` of the worker it is assigned to, or empty.
    #[serde(rename = "AssignedNode", default, deserialize_with = "interned")]
    pub assigned_node: Name,
    /// Creation time in Unix nanoseconds.
    #[serde(rename = "CreationTime", default)]
    pub creation_time: i64,
    /// Fields this codec does not know, kept for the round trip, and the few it knows that
    /// the Go crawler does not write (a schedule, constraints).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The fields of a stored resource that the Go crawler does not write: those this codec does
/// not know (labels, a restart time, an assignment key's epoch, anything a newer writer added),
/// kept for the round trip, and its schedule and constraints, read once. A Go resource has
/// none; boxed, they cost it one pointer, and a cached resource in its `Arc` fits jemalloc's
/// 64-byte size class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra(Option<Box<Fields>>);

#[derive(Debug, Clone, Default, PartialEq)]
struct Fields {
    other: BTreeMap<String, Value>,
    /// The `Schedule` field, when the resource recurs (one that cannot be read stays in
    /// `other`).
    schedule: Option<Box<Recurrence>>,
    /// The `Placement` field, when it asks something (one that cannot be read stays in
    /// `other`).
    placement: Option<Arc<Constraints>>,
}

impl Extra {
    /// The value of field `key` (constraints that ask something are read with
    /// [`Extra::placement`]).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.as_ref()?.other.get(key)
    }

    /// Sets field `key`; returns its previous value.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        self.0.get_or_insert_default().other.insert(key, value)
    }

    /// Removes field `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let old = self.0.as_mut()?.other.remove(key);
        self.shrink();
        old
    }

    /// The constraints, when they ask something.
    pub fn placement(&self) -> Option<&Arc<Constraints>> {
        self.0.as_ref()?.placement.as_ref()
    }

    /// Sets the constraints (`None`: asking nothing), replacing any that could not be read.
    pub fn set_placement(&mut self, c: Option<Arc<Constraints>>) {
        self.set_read(PLACEMENT_FIELD, |f| f.placement = c);
    }

    /// The schedule, when the resource recurs.
    pub fn schedule(&self) -> Option<&Recurrence> {
        self.0.as_ref()?.schedule.as_deref()
    }

    /// The schedule, to change in place.
    pub fn schedule_mut(&mut self) -> Option<&mut Recurrence> {
        self.0.as_mut()?.schedule.as_deref_mut()
    }

    /// Sets the schedule (`None`: it does not recur), replacing any that could not be read.
    pub fn set_schedule(&mut self, s: Option<Box<Recurrence>>) {
        self.set_read(SCHEDULE_FIELD, |f| f.schedule = s);
    }

    /// Sets a field this codec reads with `set`, dropping a stored one it could not read.
    fn set_read(&mut self, field: &str, set: impl FnOnce(&mut Fields)) {
        let fields = self.0.get_or_insert_default();
        fields.other.remove(field);
        set(fields);
        self.shrink();
    }

    fn shrink(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|f| f.other.is_empty() && f.schedule.is_none() && f.placement.is_none())
        {
            self.0 = None;
        }
    }

    /// True when there is no such field.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if let Some(fields) = &self.0 {
            if let Some(schedule) = &fields.schedule {
                map.serialize_entry(SCHEDULE_FIELD, &**schedule)?;
            }
            for (k, v) in &fields.other {
                map.serialize_entry(k, v)?;
            }
            if let Some(c) = &fields.placement {
                map.serialize_entry(PLACEMENT_FIELD, &**c)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut other = BTreeMap::<String, Value>::deserialize(d)?;
        let placement = take_read(&mut other, PLACEMENT_FIELD, constraints::stored);
        let schedule = take_read(&mut other, SCHEDULE_FIELD, |v| {
            Recurrence::deserialize(v).ok().map(Box::new)
        });
        let mut extra = Self(Some(Box::new(Fields {
            other,
            schedule,
            placement,
        })));
        extra.shrink();
        Ok(extra)
    }
}

/// Field `field` of `other`, taken out when `read` reads it; one it cannot read stays, to be
/// written back as it was.
fn take_read<T>(
    other: &mut BTreeMap<String, Value>,
    field: &str,
    read: impl FnOnce(&Value) -> Option<T>,
) -> Option<T> {
    let value = other.get(field).and_then(read);
    if value.is_some() {
        other.remove(field);
    }
    value
}

/// Where a recurring resource's schedule is kept in the stored JSON (a field the Go crawler
/// ignores).
pub const SCHEDULE_FIELD: &str = "Schedule";
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

    /// Its schedule, when it recurs.
    pub fn schedule(&self) -> Option<&Recurrence> {
        self.extra.schedule()
    }

    /// The labels stored in the resource; malformed ones are ignored.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.extra
            .get(LABELS_FIELD)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// One stored label, without reading the others.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.extra.get(LABELS_FIELD)?.get(key)?.as_str()
    }

    /// Where the task may run, as stored; constraints that cannot be read ask nothing.
    pub fn constraints(&self) -> Option<&Constraints> {
        self.extra.placement().map(|c| &**c)
    }

    /// The same, shared with the resources that ask alike.
    pub fn shared_constraints(&self) -> Option<&Arc<Constraints>> {
        self.extra.placement()
    }

    /// Stores `c` (asking nothing: no field).
    pub fn set_constraints(&mut self, c: &Constraints) {
        self.extra
            .set_placement((!c.is_empty()).then(|| constraints::shared(c.clone())));
    }

    /// The assigned worker's node id and address, if assigned.
    pub fn assignment(&self) -> Option<(&str, &str)> {
        if self.assigned_node.is_empty() {
            return None;
        }
        Some(
            self.assigned_node
                .split_once('|')
                .unwrap_or((&*self.assigned_node, "")),
        )
    }

    /// The node id of the assigned worker, if assigned.
    pub fn assigned_worker(&self) -> Option<&str> {
        self.assignment().map(|(id, _)| id)
    }

    /// Encodes `node_id` and `address` the way the Go crawler does (one shared string per
    /// worker).
    pub fn assigned_node_value(node_id: &str, address: &str) -> Name {
        intern(&format!("{node_id}|{address}"))
    }
}

impl Object for Resource {
    fn decode(name: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let r: Resource = serde_json::from_slice(value)
            .map_err(|e| DecodeError::new(format!("not a resource record: {e}")))?;
        if &*r.name != name {
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

    fn key(&self) -> Option<Name> {
        Some(Name::clone(&self.name))
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
    fn ids_are_numbers_unless_the_text_says_otherwise() {
        assert_eq!(
            ResourceId::parse("1395790254231478272").as_u64(),
            Some(1_395_790_254_231_478_272)
        );
        // Text that a number would not write back the same is kept verbatim.
        for text in ["007", "abc", "", "18446744073709551616", "-1"] {
            let id = ResourceId::parse(text);
            assert_eq!(id.as_u64(), None, "{text}");
            assert_eq!(id.to_string(), text);
        }
        let r = Resource::decode("a", br#"{"ID":"007","Name":"a"}"#).expect("decodes");
        let again: Value = serde_json::to_value(&r).expect("encodes");
        assert_eq!(again["ID"], "007");
        assert!(ResourceId::parse("42") == *"42");
        assert!(ResourceId::parse("42") != *"042");
        // Resources of one worker share its node string, and the name is the cache's key.
        let text = br#"{"ID":"1","Name":"a","AssignedNode":"w-1|h:1","CreationTime":0}"#;
        let (a, b) = (
            Resource::decode("a", text).expect("a"),
            Resource::decode("a", text).expect("b"),
        );
        assert!(Name::ptr_eq(&a.assigned_node, &b.assigned_node));
        assert!(a.key().is_some_and(|k| Name::ptr_eq(&k, &a.name)));
    }

    #[test]
    fn constraints_are_read_once_shared_and_written_back_as_stored() {
        let text = |name: &str, placement: &str| {
            format!(
                r#"{{"ID":"1","Name":"{name}","AssignedNode":"","CreationTime":0,"Placement":{placement}}}"#
            )
        };
        let eu = r#"{"selector":{"match_labels":{"region":"eu"}},"priority":5}"#;
        let a = Resource::decode("a", text("a", eu).as_bytes()).expect("a");
        let b = Resource::decode("b", text("b", eu).as_bytes()).expect("b");
        let (ca, cb) = (a.shared_constraints(), b.shared_constraints());
        assert!(
            ca.zip(cb).is_some_and(|(x, y)| Arc::ptr_eq(x, y)),
            "one copy for both"
        );
        assert_eq!(a.constraints().map(|c| c.priority), Some(5));
        let again: Value = serde_json::to_value(&a).expect("encodes");
        assert_eq!(
            again,
            serde_json::from_str::<Value>(&text("a", eu)).expect("json")
        );
        // What cannot be read asks nothing, and is written back as it was.
        for odd in [r#"{"selector":7}"#, "{}", "null"] {
            let r = Resource::decode("a", text("a", odd).as_bytes()).expect("decodes");
            assert!(r.constraints().is_none(), "{odd}");
            let again: Value = serde_json::to_value(&r).expect("encodes");
            assert_eq!(
                again,
                serde_json::from_str::<Value>(&text("a", odd)).expect("json")
            );
        }
        let mut r = Resource::decode("a", text("a", r#"{"selector":7}"#).as_bytes()).expect("r");
        r.set_constraints(&Constraints::default());
        assert!(
            r.extra.is_empty(),
            "asking nothing replaces what could not be read"
        );
        r.set_constraints(a.constraints().expect("constraints"));
        assert!(
            r.shared_constraints()
                .zip(ca)
                .is_some_and(|(x, y)| Arc::ptr_eq(x, y))
        );
    }

    #[test]
    fn unknown_fields_round_trip_and_none_costs_a_pointer() {
        let text = r#"{"ID":"1","Name":"a","AssignedNode":"","CreationTime":0,"Labels":{"x":"y"},"Later":[1]}"#;
        let mut r = Resource::decode("a", text.as_bytes()).expect("decodes");
        assert_eq!(r.labels().get("x").map(String::as_str), Some("y"));
        let again: Value = serde_json::to_value(&r).expect("encodes");
        assert_eq!(again, serde_json::from_str::<Value>(text).expect("json"));
        r.extra.remove(LABELS_FIELD);
        r.extra.remove("Later");
        assert!(r.extra.is_empty());
        let plain: Value = serde_json::to_value(&r).expect("encodes");
        assert_eq!(plain.as_object().map(|o| o.len()), Some(4));
        // A million of these are cached on every master, each in an `Arc` (16 bytes more):
        // 64 bytes is a jemalloc size class, the next is 80.
        assert!(std::mem::size_of::<Resource>() <= 48);
    }

    #[test]
    fn a_schedule_that_cannot_be_read_is_no_schedule_and_is_kept() {
        let stored =
            r#"{"ID":"1","Name":"a","AssignedNode":"","CreationTime":0,"Schedule":{"rule":7}}"#;
        let r = Resource::decode("a", stored.as_bytes())
            .expect("a resource whose schedule cannot be read still decodes");
        assert!(r.schedule().is_none());
        assert_eq!(
            serde_json::to_string(&r).expect("encodes"),
            stored,
            "and its schedule is kept as it was"
        );
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
