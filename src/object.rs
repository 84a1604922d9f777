//! What a stored value is to the code that caches it: something decoded from an etcd key's
//! value, named by the key's remainder. It sits below both the cache (`etcd::cache`), which
//! decodes objects, and the stored formats (`model`), which implement it, so that neither
//! depends on the other (as kube keeps `Resource` low in its core crate).

/// An object's name (its key without the prefix), one string shared by a cache's map, its
/// index and whoever else keeps the name. A one-word pointer (arcstr keeps the length beside
/// the count, where `Arc<str>` carries it in the pointer): a million cached resources hold
/// several names each (their own, their worker's, the index's), and each takes 8 bytes, not 16.
pub type Name = arcstr::ArcStr;

/// A value that can be decoded from an etcd key-value pair.
pub trait Object: Sized + Send + Sync + 'static {
    /// Decodes the value stored under `name` (the key with the prefix removed).
    fn decode(name: &str, value: &[u8]) -> Result<Self, DecodeError>;

    /// The group the cache indexes this object under (a resource's worker, a task's state),
    /// if any: see the cache's index.
    fn group(&self) -> Option<&str> {
        None
    }

    /// The name as the object holds it, when it does: the cache then uses that one string as
    /// its key instead of a copy.
    fn key(&self) -> Option<Name> {
        None
    }
}

/// A value that could not be decoded; it is logged, counted and skipped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    /// A decode error with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}
