//! What a cache holds and publishes: an entry (a value with its key's revisions), one change
//! to one object, and a batch of them. Both the store and the diff of a re-list build these.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::object::Name;

/// The objects of a cache, by name.
pub type Objects<T> = BTreeMap<Name, Entry<T>>;

/// One cached object and the etcd revisions of its key.
#[derive(Debug)]
pub struct Entry<T> {
    /// The decoded value.
    pub value: Arc<T>,
    /// Revision at which the key was created.
    pub create_revision: i64,
    /// Revision of the key's last change.
    pub mod_revision: i64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// A batch of changes, all at one revision or from one re-list.
#[derive(Debug)]
pub struct Change<T> {
    /// The revision the cache reflects after the batch.
    pub revision: i64,
    /// True when the batch was derived from a re-list rather than watch events.
    pub relisted: bool,
    /// The changes, in order.
    pub events: Vec<Event<T>>,
}

/// One change to one object.
#[derive(Debug)]
pub enum Event<T> {
    /// A new object.
    Added {
        /// Its name.
        name: Name,
        /// Its value.
        new: Entry<T>,
    },
    /// An object whose value changed.
    Modified {
        /// Its name.
        name: Name,
        /// The value before.
        old: Entry<T>,
        /// The value after.
        new: Entry<T>,
    },
    /// An object that is gone. The value before is the cache's own, so it is present even when
    /// etcd's `prev_kv` was not.
    Deleted {
        /// Its name.
        name: Name,
        /// The value before.
        old: Entry<T>,
    },
}

impl<T> Clone for Event<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Added { name, new } => Self::Added {
                name: name.clone(),
                new: new.clone(),
            },
            Self::Modified { name, old, new } => Self::Modified {
                name: name.clone(),
                old: old.clone(),
                new: new.clone(),
            },
            Self::Deleted { name, old } => Self::Deleted {
                name: name.clone(),
                old: old.clone(),
            },
        }
    }
}

impl<T> Event<T> {
    /// The name of the object.
    pub fn name(&self) -> &str {
        match self {
            Self::Added { name, .. } | Self::Modified { name, .. } | Self::Deleted { name, .. } => {
                name
            }
        }
    }
}
