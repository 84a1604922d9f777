//! A cache's secondary index: the names of the objects in each group.

use std::collections::{BTreeSet, HashMap};

use super::event::Name;

/// A secondary index: the names of the objects in each group (a resource's worker, a task's
/// state), as [`crate::object::Object::group`] says. It lives in the cache's state and changes under
/// the same lock as the objects, so a reader never sees one without the other.
#[derive(Debug, Default)]
pub struct Index {
    groups: HashMap<Name, BTreeSet<Name>>,
}

impl Index {
    /// The index of `objects`, each group's set built at once from its sorted names: full
    /// B-tree nodes, where inserting sorted names one by one leaves each node about half
    /// empty (a set's node holds 11 names; such inserts split it 6 and 5).
    pub(super) fn build<'a>(objects: impl Iterator<Item = (&'a str, &'a Name)>) -> Self {
        let mut sorted: HashMap<&str, Vec<Name>> = HashMap::new();
        for (group, name) in objects {
            sorted.entry(group).or_default().push(Name::clone(name));
        }
        let groups = sorted
            .into_iter()
            .map(|(group, names)| (Name::from(group), names.into_iter().collect()))
            .collect();
        Self { groups }
    }

    pub(super) fn add(&mut self, group: &str, name: &Name) {
        match self.groups.get_mut(group) {
            Some(names) => {
                names.insert(Name::clone(name));
            }
            None => {
                self.groups
                    .insert(Name::from(group), BTreeSet::from([Name::clone(name)]));
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
        self.groups
            .get_key_value(group)
            .map(|(g, _)| Name::clone(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_index_holds_what_adding_one_by_one_holds() {
        let names: Vec<(String, Name)> = (0..100)
            .map(|i| (format!("w{}", i % 7), Name::from(format!("r{i:03}"))))
            .collect();
        let built = Index::build(names.iter().map(|(g, n)| (g.as_str(), n)));
        let mut added = Index::default();
        for (g, n) in &names {
            added.add(g, n);
        }
        let mut groups: Vec<_> = built.groups().collect();
        groups.sort();
        let mut expected: Vec<_> = added.groups().collect();
        expected.sort();
        assert_eq!(groups, expected);
        for (g, _) in &expected {
            assert_eq!(built.names(g), added.names(g), "group {g}");
        }
        assert_eq!(built.count("w0"), 15);
        assert_eq!(built.count("nobody"), 0);
    }
}
