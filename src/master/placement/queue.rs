//! The resources that need a worker, in the order they are placed: higher priority first, and
//! first come first served within a priority (by the revision since which each waits).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::etcd::cache::Name;

/// Waiting resources, ordered by (priority descending, since, name).
#[derive(Debug, Default, Clone)]
pub struct Queue {
    order: BTreeSet<(Reverse<i32>, i64, Name)>,
    index: HashMap<Name, (i32, i64)>,
}

impl Queue {
    /// Queues `name` at `priority`, waiting since `since`; a queued one keeps its place unless
    /// `replace` (then it waits since `since`). A changed priority moves it either way.
    pub fn insert(&mut self, name: &Name, since: i64, priority: i32, replace: bool) {
        let since = match self.index.get(name) {
            Some(&(p, s)) => {
                self.order.remove(&(Reverse(p), s, Name::clone(name)));
                if replace { since } else { s }
            }
            None => since,
        };
        self.order
            .insert((Reverse(priority), since, Name::clone(name)));
        self.index.insert(Name::clone(name), (priority, since));
    }

    /// Takes `name` out; true when it was queued.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.index.remove_entry(name) {
            Some((name, (p, s))) => {
                self.order.remove(&(Reverse(p), s, name));
                true
            }
            None => false,
        }
    }

    /// True when `name` is queued.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The queued names with their priority and since, in placement order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, i32, i64)> {
        self.order.iter().map(|(p, s, n)| (n, p.0, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from(s)
    }

    #[test]
    fn higher_priority_first_then_first_come() {
        let mut q = Queue::default();
        q.insert(&n("late-low"), 9, 0, false);
        q.insert(&n("early-low"), 1, 0, false);
        q.insert(&n("late-high"), 7, 5, false);
        q.insert(&n("early-low"), 8, 0, false);
        let order: Vec<&str> = q.iter().map(|(n, _, _)| &**n).collect();
        assert_eq!(order, ["late-high", "early-low", "late-low"]);
        q.insert(&n("late-low"), 99, 10, false);
        assert_eq!(
            q.iter().next().map(|(n, p, s)| (&**n, p, s)),
            Some(("late-low", 10, 9))
        );
        q.insert(&n("early-low"), 20, 0, true);
        assert_eq!(
            q.iter().last().map(|(n, _, s)| (&**n, s)),
            Some(("early-low", 20))
        );
        assert!(q.remove("late-high"));
        assert!(!q.remove("late-high"));
        assert_eq!(q.len(), 2);
        assert!(q.contains("late-low"));
    }
}
