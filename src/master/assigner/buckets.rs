//! Workers with room, kept by load, so the least loaded is found in O(log W) and a change of
//! load moves one worker between two buckets, with no re-sorting.

use std::collections::BTreeMap;

use foldhash::HashMap;

use crate::object::Name;

/// Load → the workers at that load, and each worker's index in its bucket. Ids are the
/// assigner's shared strings: a worker costs each bucket two pointers, not two copies.
#[derive(Debug, Default, Clone)]
pub(super) struct Buckets {
    by_load: BTreeMap<u32, Vec<Name>>,
    positions: HashMap<Name, usize>,
}

impl Buckets {
    /// Adds worker `id` at `load`, unless it is in already.
    pub(super) fn insert(&mut self, id: &Name, load: u32) {
        if self.positions.contains_key(id) {
            return;
        }
        let bucket = self.by_load.entry(load).or_default();
        self.positions.insert(Name::clone(id), bucket.len());
        bucket.push(Name::clone(id));
    }

    /// Removes worker `id`, which was added at `load`.
    pub(super) fn remove(&mut self, id: &str, load: u32) {
        let Some(index) = self.positions.remove(id) else {
            return;
        };
        if let Some(bucket) = self.by_load.get_mut(&load) {
            bucket.swap_remove(index);
            if let Some(moved) = bucket.get(index) {
                self.positions.insert(Name::clone(moved), index);
            }
            if bucket.is_empty() {
                self.by_load.remove(&load);
            }
        }
    }

    /// The lowest load and the workers at it.
    pub(super) fn least(&self) -> Option<(u32, &[Name])> {
        self.by_load
            .iter()
            .next()
            .map(|(load, ids)| (*load, ids.as_slice()))
    }

    /// True when no worker is in.
    pub(super) fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_least_loaded_first_through_moves() {
        let mut b = Buckets::default();
        let [a, bee, c] = ["a", "b", "c"].map(Name::from);
        b.insert(&a, 3);
        b.insert(&bee, 1);
        b.insert(&c, 1);
        b.insert(&bee, 1);
        assert_eq!(b.least().map(|(l, ids)| (l, ids.len())), Some((1, 2)));
        b.remove("b", 1);
        b.remove("c", 1);
        assert_eq!(
            b.least().map(|(l, ids)| (l, ids.to_vec())),
            Some((3, vec!["a".into()]))
        );
        b.remove("a", 3);
        assert!(b.is_empty());
        assert!(b.least().is_none());
    }
}
