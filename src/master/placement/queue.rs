//! The resources that need a worker, in the order they are placed: higher priority first, and
//! first come first served within a priority (by the revision since which each waits). Each
//! remembers the absent worker it waits on, if any, so that worker's return takes back exactly
//! its own.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use foldhash::{HashMap, HashSet};

use crate::etcd::cache::Name;

/// One waiting resource: its priority, since when it waits, and the absent worker it is
/// assigned to (`None`: unassigned).
#[derive(Debug, Clone)]
struct Waiting {
    priority: i32,
    since: i64,
    from: Option<Name>,
}

/// Waiting resources, ordered by (priority descending, since, name).
#[derive(Debug, Default, Clone)]
pub struct Queue {
    order: BTreeSet<(Reverse<i32>, i64, Name)>,
    index: HashMap<Name, Waiting>,
    /// Absent worker → the waiting resources assigned to it.
    by_worker: HashMap<Name, HashSet<Name>>,
}

impl Queue {
    /// Queues `name` at `priority`, waiting since `since` on absent worker `from` (`None`:
    /// unassigned); a queued one keeps its place unless `replace` (then it waits since `since`).
    /// A changed priority moves it either way.
    pub fn insert(
        &mut self,
        name: &Name,
        since: i64,
        priority: i32,
        replace: bool,
        from: Option<&Name>,
    ) {
        let since = match self.take(name) {
            Some(w) if !replace => w.since,
            _ => since,
        };
        self.order
            .insert((Reverse(priority), since, Name::clone(name)));
        if let Some(worker) = from {
            self.by_worker
                .entry(Name::clone(worker))
                .or_default()
                .insert(Name::clone(name));
        }
        self.index.insert(
            Name::clone(name),
            Waiting {
                priority,
                since,
                from: from.cloned(),
            },
        );
    }

    fn take(&mut self, name: &str) -> Option<Waiting> {
        let (name, w) = self.index.remove_entry(name)?;
        if let Some(worker) = &w.from
            && let Some(names) = self.by_worker.get_mut(&**worker)
        {
            names.remove(&*name);
            if names.is_empty() {
                self.by_worker.remove(&**worker);
            }
        }
        self.order.remove(&(Reverse(w.priority), w.since, name));
        Some(w)
    }

    /// Takes `name` out; true when it was queued.
    pub fn remove(&mut self, name: &str) -> bool {
        self.take(name).is_some()
    }

    /// Takes out every resource that waits on absent worker `worker` (it is back).
    pub fn remove_worker(&mut self, worker: &str) {
        for name in self.by_worker.remove(worker).unwrap_or_default() {
            if let Some(w) = self.index.remove(&name) {
                self.order.remove(&(Reverse(w.priority), w.since, name));
            }
        }
    }

    /// True when `name` is queued.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The absent worker queued `name` is assigned to, if any.
    pub fn from(&self, name: &str) -> Option<&Name> {
        self.index.get(name)?.from.as_ref()
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The queued names with their priority, since and absent worker, in placement order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, i32, i64, Option<&Name>)> {
        self.order.iter().map(|(p, s, n)| {
            let from = self.index.get(n).and_then(|w| w.from.as_ref());
            (n, p.0, *s, from)
        })
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
        q.insert(&n("late-low"), 9, 0, false, None);
        q.insert(&n("early-low"), 1, 0, false, None);
        q.insert(&n("late-high"), 7, 5, false, None);
        q.insert(&n("early-low"), 8, 0, false, None);
        let order: Vec<&str> = q.iter().map(|(n, ..)| &**n).collect();
        assert_eq!(order, ["late-high", "early-low", "late-low"]);
        q.insert(&n("late-low"), 99, 10, false, None);
        assert_eq!(
            q.iter().next().map(|(n, p, s, _)| (&**n, p, s)),
            Some(("late-low", 10, 9))
        );
        q.insert(&n("early-low"), 20, 0, true, None);
        assert_eq!(
            q.iter().last().map(|(n, _, s, _)| (&**n, s)),
            Some(("early-low", 20))
        );
        assert!(q.remove("late-high"));
        assert!(!q.remove("late-high"));
        assert_eq!(q.len(), 2);
        assert!(q.contains("late-low"));
    }

    #[test]
    fn a_returning_worker_takes_back_only_what_waits_on_it() {
        let mut q = Queue::default();
        let (a, b) = (n("a"), n("b"));
        q.insert(&n("r1"), 1, 0, false, Some(&a));
        q.insert(&n("r2"), 2, 0, false, Some(&b));
        q.insert(&n("r3"), 3, 0, false, None);
        q.insert(&n("r4"), 4, 0, false, Some(&a));
        // Moved, while it waits, to another absent worker.
        q.insert(&n("r4"), 5, 0, false, Some(&b));
        assert_eq!(q.from("r4").map(|w| &**w), Some("b"));
        q.remove_worker("a");
        let left: Vec<&str> = q.iter().map(|(n, ..)| &**n).collect();
        assert_eq!(left, ["r2", "r3", "r4"]);
        q.remove_worker("b");
        assert_eq!(q.len(), 1);
        assert!(q.contains("r3") && q.from("r3").is_none());
        assert!(q.by_worker.is_empty());
    }
}
