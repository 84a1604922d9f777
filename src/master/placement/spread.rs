//! Spread groups, counted as the choice needs them: for each group of resources that spread
//! over a worker label, how many of its members (assigned, or reserved by a write in flight)
//! each worker holds, and each value of that label. Choosing a worker for a member then costs
//! one lookup per label value, not a walk over the group; a worker that changes its labels or
//! leaves moves its own counts.

use std::sync::Arc;

use foldhash::{HashMap, HashSet};

use super::Wants;
use crate::etcd::cache::Name;
use crate::model::constraints::Labels;

/// One group's counts.
#[derive(Debug, Default, Clone)]
struct Group {
    /// The worker label its members spread over.
    over: String,
    /// Worker → members it holds.
    workers: HashMap<Name, u32>,
    /// Value of `over` (empty: a worker without it, or absent) → members its workers hold.
    values: HashMap<String, u32>,
}

/// The counts of every group, and the groups each worker holds members of.
#[derive(Debug, Default, Clone)]
pub(super) struct Spreads {
    groups: HashMap<Arc<str>, Group>,
    by_worker: HashMap<Name, HashSet<Arc<str>>>,
}

fn value<'a>(labels: Option<&'a Labels>, over: &str) -> &'a str {
    labels.and_then(|l| l.get(over)).map_or("", String::as_str)
}

/// Adds `delta` to `map[key]`, dropping a count that reaches 0.
fn add(map: &mut HashMap<String, u32>, key: &str, delta: i64) {
    let n = match map.get_mut(key) {
        Some(n) => n,
        None if delta > 0 => map.entry(key.to_owned()).or_default(),
        None => return,
    };
    *n = (i64::from(*n) + delta).clamp(0, i64::from(u32::MAX)) as u32;
    if *n == 0 {
        map.remove(key);
    }
}

impl Spreads {
    /// Counts a resource asking `wants` `delta` times on `worker`, whose labels are `labels`,
    /// if it spreads.
    pub(super) fn count_wants(
        &mut self,
        wants: Option<&Wants>,
        worker: &str,
        labels: Option<&Labels>,
        delta: i32,
    ) {
        let Some(w) = wants else {
            return;
        };
        if let (Some(group), Some(spread)) = (&w.group, &w.constraints.spread) {
            self.count(group, &spread.over, worker, labels, delta);
        }
    }

    /// Counts `delta` members of `group`, which spreads over `over`, on `worker`, whose
    /// labels are `labels` (`None`: absent).
    pub(super) fn count(
        &mut self,
        group: &Arc<str>,
        over: &str,
        worker: &str,
        labels: Option<&Labels>,
        delta: i32,
    ) {
        if !self.groups.contains_key(group) {
            if delta <= 0 {
                return;
            }
            let g = Group {
                over: over.to_owned(),
                ..Group::default()
            };
            self.groups.insert(Arc::clone(group), g);
        }
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let before = g.workers.get(worker).copied().unwrap_or(0);
        let after = before.saturating_add_signed(delta);
        if after == before {
            return;
        }
        if after == 0 {
            g.workers.remove(worker);
        } else if let Some(n) = g.workers.get_mut(worker) {
            *n = after;
        } else {
            g.workers.insert(Name::from(worker), after);
        }
        add(
            &mut g.values,
            value(labels, &g.over),
            i64::from(after) - i64::from(before),
        );
        let empty = g.workers.is_empty();
        if empty {
            self.groups.remove(group);
        }
        if after > 0 && before == 0 {
            match self.by_worker.get_mut(worker) {
                Some(set) => {
                    set.insert(Arc::clone(group));
                }
                None => {
                    let set = HashSet::from_iter([Arc::clone(group)]);
                    self.by_worker.insert(Name::from(worker), set);
                }
            }
        } else if after == 0
            && let Some(set) = self.by_worker.get_mut(worker)
        {
            set.remove(group);
            if set.is_empty() {
                self.by_worker.remove(worker);
            }
        }
    }

    /// Worker `worker`'s labels change from `old` to `new` (`None`: absent): what it holds
    /// counts under its new values.
    pub(super) fn relabel(&mut self, worker: &str, old: Option<&Labels>, new: Option<&Labels>) {
        for group in self.by_worker.get(worker).into_iter().flatten() {
            let Some(g) = self.groups.get_mut(group) else {
                continue;
            };
            let (from, to) = (value(old, &g.over), value(new, &g.over));
            let n = g.workers.get(worker).copied().unwrap_or(0);
            if from != to && n > 0 {
                add(&mut g.values, from, -i64::from(n));
                add(&mut g.values, to, i64::from(n));
            }
        }
    }

    /// How many members of `group` each value of its spread label holds.
    pub(super) fn values(&self, group: &str) -> HashMap<String, u32> {
        self.groups
            .get(group)
            .map(|g| g.values.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::super::{Wants, WantsMemo};
    use super::*;

    fn labels(region: &str) -> Labels {
        Labels::from([("region".to_owned(), region.to_owned())])
    }

    #[test]
    fn counts_follow_members_and_their_workers_labels() {
        let mut s = Spreads::default();
        let g: Arc<str> = Arc::from("site=a over region");
        let (eu, us) = (labels("eu"), labels("us"));
        s.count(&g, "region", "w1", Some(&eu), 1);
        s.count(&g, "region", "w1", Some(&eu), 1);
        s.count(&g, "region", "w2", Some(&us), 1);
        assert_eq!(s.values(&g).get("eu"), Some(&2));
        s.relabel("w1", Some(&eu), Some(&us));
        assert_eq!(s.values(&g).get("us"), Some(&3));
        assert_eq!(s.values(&g).get("eu"), None);
        s.relabel("w2", Some(&us), None);
        assert_eq!(s.values(&g).get(""), Some(&1), "an absent worker's members");
        s.count(&g, "region", "w2", None, -1);
        s.count(&g, "region", "w1", Some(&us), -2);
        assert!(s.values(&g).is_empty());
        assert!(
            s.groups.is_empty() && s.by_worker.is_empty(),
            "nothing kept for nothing"
        );
    }

    #[test]
    fn resources_that_ask_alike_share_what_they_ask_and_spread_groups_count_per_value() {
        use crate::model::resource::Resource;
        use crate::object::Object;
        let stored = |name: &str, labels: &str| {
            let text = format!(
                r#"{{"ID":"1","Name":"{name}","AssignedNode":"","CreationTime":0,
                "Placement":{{"spread":{{"over":"region","by":"site"}}}},"Labels":{labels}}}"#
            );
            Resource::decode(name, text.as_bytes()).expect("decodes")
        };
        let mut memo = WantsMemo::default();
        let a = memo.of(&stored("a", r#"{"site":"x"}"#)).expect("a");
        let b = memo.of(&stored("b", r#"{"site":"x"}"#)).expect("b");
        let empty = memo.of(&stored("c", r#"{"site":""}"#)).expect("c");
        let none = memo.of(&stored("d", "{}")).expect("d");
        assert!(Arc::ptr_eq(&a, &b), "one group, one copy");
        assert!(
            !Arc::ptr_eq(&empty, &none),
            "an empty label is not a missing one"
        );
        assert!(none.group.is_none() && empty.group.is_some());
        assert_eq!(
            Wants::of(&stored("e", r#"{"site":"x"}"#)).as_ref(),
            Some(&a)
        );
        // Two workers in eu, one in us: the group's members count per region, and a worker
        // that changes its region takes its members' count along.
        let mut p = Fixture::new();
        let region = |r: &str| Arc::new(Labels::from([("region".to_owned(), r.to_owned())]));
        p.upsert_worker("e1", "h", None, region("eu"));
        p.upsert_worker("e2", "h", None, region("eu"));
        p.upsert_worker("u1", "h", None, region("us"));
        for (i, w) in ["e1", "e2", "e2"].iter().enumerate() {
            p.set_resource_with(
                &Name::from(format!("r{i}")),
                Some(Some(w)),
                Some(Arc::clone(&a)),
                1,
            );
        }
        let penalty = p.spread_penalty(&a);
        assert_eq!((penalty(&region("eu")), penalty(&region("us"))), (3, 0));
        p.upsert_worker("e2", "h", None, region("us"));
        let penalty = p.spread_penalty(&a);
        assert_eq!((penalty(&region("eu")), penalty(&region("us"))), (1, 2));
        let r = p.reserve(Some(&a)).expect("room");
        assert_eq!(r.worker, "e1", "the region holding fewest");
        assert_eq!(
            p.spread_penalty(&a)(&region("eu")),
            2,
            "a reservation counts"
        );
        p.cancel(r.token);
        assert_eq!(p.spread_penalty(&a)(&region("eu")), 1);
    }
}
