//! What changed between two states of a cache: a re-list has no watch events, so its
//! change batch is derived here.

use std::collections::BTreeMap;

use super::event::{Entry, Event, Name};

/// The events that turn `old` into `new`, in name order. Two entries are the same object
/// version when their mod revisions are equal.
pub fn diff<T>(old: &BTreeMap<Name, Entry<T>>, new: &BTreeMap<Name, Entry<T>>) -> Vec<Event<T>> {
    let mut events = Vec::new();
    let mut old_iter = old.iter().peekable();
    let mut new_iter = new.iter().peekable();
    loop {
        match (old_iter.peek(), new_iter.peek()) {
            (None, None) => break,
            (Some((name, entry)), None) => {
                events.push(Event::Deleted {
                    name: (*name).clone(),
                    old: (*entry).clone(),
                });
                old_iter.next();
            }
            (None, Some((name, entry))) => {
                events.push(Event::Added {
                    name: (*name).clone(),
                    new: (*entry).clone(),
                });
                new_iter.next();
            }
            (Some((on, oe)), Some((nn, ne))) => match on.cmp(nn) {
                std::cmp::Ordering::Less => {
                    events.push(Event::Deleted {
                        name: (*on).clone(),
                        old: (*oe).clone(),
                    });
                    old_iter.next();
                }
                std::cmp::Ordering::Greater => {
                    events.push(Event::Added {
                        name: (*nn).clone(),
                        new: (*ne).clone(),
                    });
                    new_iter.next();
                }
                std::cmp::Ordering::Equal => {
                    if oe.mod_revision != ne.mod_revision {
                        events.push(Event::Modified {
                            name: (*nn).clone(),
                            old: (*oe).clone(),
                            new: (*ne).clone(),
                        });
                    }
                    old_iter.next();
                    new_iter.next();
                }
            },
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entry(v: u32, rev: i64) -> Entry<u32> {
        Entry {
            value: Arc::new(v),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    fn map(items: &[(&str, u32, i64)]) -> BTreeMap<Name, Entry<u32>> {
        items
            .iter()
            .map(|(k, v, r)| (Name::from(*k), entry(*v, *r)))
            .collect()
    }

    fn render(events: &[Event<u32>]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Added { name, new } => format!("+{name}={}", new.value),
                Event::Modified { name, old, new } => {
                    format!("~{name}={}->{}", old.value, new.value)
                }
                Event::Deleted { name, old } => format!("-{name}={}", old.value),
            })
            .collect()
    }

    #[test]
    fn finds_added_modified_and_deleted_in_name_order() {
        let old = map(&[("a", 1, 1), ("b", 2, 2), ("c", 3, 3), ("e", 5, 5)]);
        let new = map(&[("b", 2, 2), ("c", 30, 9), ("d", 4, 8), ("f", 6, 10)]);
        assert_eq!(
            render(&diff(&old, &new)),
            ["-a=1", "~c=3->30", "+d=4", "-e=5", "+f=6"]
        );
    }

    #[test]
    fn identical_and_empty_states() {
        let m = map(&[("a", 1, 1)]);
        assert!(diff(&m, &m).is_empty());
        assert_eq!(render(&diff(&BTreeMap::new(), &m)), ["+a=1"]);
        assert_eq!(render(&diff(&m, &BTreeMap::new())), ["-a=1"]);
    }
}
