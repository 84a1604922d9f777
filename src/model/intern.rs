//! Shared copies of values that repeat across many objects: a million resources name a few
//! thousand workers, so each `AssignedNode` is stored once and every resource holds a pointer;
//! and resources that ask alike of their workers share one set of constraints.
//!
//! A table holds one reference of its own to each value; values no object uses any more are
//! dropped when the table has doubled since the last sweep, so workers that left do not
//! accumulate.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

use crate::object::Name;

/// A shared handle a table can hold: cloned for each user, and able to say how many hold it.
pub trait Shared: Clone + Hash + Eq {
    /// How many handles to the value exist, the table's own included.
    fn holders(&self) -> usize;
}

impl<T: ?Sized + Hash + Eq> Shared for Arc<T> {
    fn holders(&self) -> usize {
        Arc::strong_count(self)
    }
}

impl Shared for Name {
    fn holders(&self) -> usize {
        // A static string (none is interned) is never dropped: count it as used.
        Name::strong_count(self).unwrap_or(usize::MAX)
    }
}

/// Shared values of one type: each held once, by the table and by whoever uses it.
#[derive(Debug)]
pub struct Table<S> {
    values: HashSet<S>,
    /// Size after the last sweep.
    swept: usize,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self {
            values: HashSet::new(),
            swept: 0,
        }
    }
}

impl<S: Shared> Table<S> {
    /// The shared copy of `value`, made by `make` when there is none.
    pub fn share<Q>(&mut self, value: &Q, make: impl FnOnce() -> S) -> S
    where
        Q: ?Sized + Hash + Eq,
        S: Borrow<Q>,
    {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        if self.values.len() >= 2 * self.swept.max(1024) {
            self.values.retain(|v| v.holders() > 1);
            self.swept = self.values.len();
        }
        let shared = make();
        self.values.insert(shared.clone());
        shared
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The shared copy of `value` in `table` (whose lock a panic cannot leave half-changed:
/// inserts and retains are atomic).
pub fn share<S, Q>(table: &Mutex<Table<S>>, value: &Q, make: impl FnOnce() -> S) -> S
where
    S: Shared + Borrow<Q>,
    Q: ?Sized + Hash + Eq,
{
    table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .share(value, make)
}

static TABLE: LazyLock<Mutex<Table<Name>>> = LazyLock::new(Mutex::default);

/// The shared copy of `text`.
pub fn intern(text: &str) -> Name {
    if text.is_empty() {
        return Name::new();
    }
    share(&TABLE, text, || Name::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_string_and_unused_ones_go() {
        let a = intern("go.micro.server.worker-1|10.0.0.1:9089");
        let b = intern(&String::from("go.micro.server.worker-1|10.0.0.1:9089"));
        assert!(Name::ptr_eq(&a, &b));
        assert_eq!(&*intern(""), "");
        // Many strings used once and dropped: a sweep keeps the table from growing without
        // bound, and what is still used survives it.
        for i in 0..10_000 {
            drop(intern(&format!("gone-{i}")));
        }
        let size = TABLE.lock().map(|t| t.len()).unwrap_or(0);
        assert!(size < 5_000, "{size} strings kept");
        assert!(Name::ptr_eq(
            &a,
            &intern("go.micro.server.worker-1|10.0.0.1:9089")
        ));
    }
}
