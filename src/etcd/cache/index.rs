//! A cache's secondary index: the names of the objects in each group.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::event::Name;

/// A secondary index: the names of the objects in each group (a resource's worker, a task's
/// state), as [`crate::object::Object::group`] says. It lives in the cache's state and changes under
/// the same lock as the objects, so a reader never sees one without the other.
#[derive(Debug, Default)]
pub struct Index {
    groups: HashMap<Name, BTreeSet<Name>>,
}

impl Index {
    pub(super) fn add(&mut self, group: &str, name: &Name) {
        match self.groups.get_mut(group) {
            Some(names) => {
                names.insert(Arc::clone(name));
            }
            None => {
                self.groups
                    .insert(Name::from(group), BTreeSet::from([Arc::clone(name)]));
            }
        }
    }

    pub(super) fn remove(&mut self, group: &str, name: &str) {
        if let Some(names) = self.groups.get_mut(group) {
            names.remove(name);
            if names.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// The names in `group`, sorted; `None` when it has none.
    pub fn names(&self, group: &str) -> Option<&BTreeSet<Name>> {
        self.groups.get(group)
    }

    /// How many objects are in `group`.
    pub fn count(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, BTreeSet::len)
    }

    /// Every group with its size, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = (&str, usize)> {
        self.groups.iter().map(|(g, names)| (&**g, names.len()))
    }

    /// The shared copy of a group's name, so that holders of many references to one worker
    /// keep one string (interning).
    pub fn intern(&self, group: &str) -> Option<Name> {
        self.groups.get_key_value(group).map(|(g, _)| Arc::clone(g))
    }
}
