//! Shared copies of values that repeat across many objects: a million resources name a few
//! thousand workers, so each `AssignedNode` is stored once and every resource holds a pointer;
//! and resources that ask alike of their workers share one set of constraints.
//!
//! A table holds one reference of its own to each value; values no object uses any more are
//! dropped when the table has doubled since the last sweep, so workers that left do not
//! accumulate.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

/// Shared values of one type: each held once, by the table and by whoever uses it.
#[derive(Debug)]
pub struct Table<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// Size after the last sweep.
    swept: usize,
}

impl<T: ?Sized> Default for Table<T> {
    fn default() -> Self {
        Self {
            values: HashSet::new(),
            swept: 0,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Table<T> {
    /// The shared copy of `value`, made by `make` when there is none.
    pub fn share(&mut self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(shared) = self.values.get(value) {
            return Arc::clone(shared);
        }
        if self.values.len() >= 2 * self.swept.max(1024) {
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.swept = self.values.len();
        }
        let shared = make();
        self.values.insert(Arc::clone(&shared));
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
pub fn share<T: ?Sized + Hash + Eq>(
    table: &Mutex<Table<T>>,
    value: &T,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .share(value, make)
}

static TABLE: LazyLock<Mutex<Table<str>>> = LazyLock::new(Mutex::default);

/// The shared copy of `text`.
pub fn intern(text: &str) -> Arc<str> {
    if text.is_empty() {
        return Arc::from("");
    }
    share(&TABLE, text, || Arc::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_string_and_unused_ones_go() {
        let a = intern("go.micro.server.worker-1|10.0.0.1:9089");
        let b = intern(&String::from("go.micro.server.worker-1|10.0.0.1:9089"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*intern(""), "");
        // Many strings used once and dropped: a sweep keeps the table from growing without
        // bound, and what is still used survives it.
        for i in 0..10_000 {
            drop(intern(&format!("gone-{i}")));
        }
        let size = TABLE.lock().map(|t| t.len()).unwrap_or(0);
        assert!(size < 5_000, "{size} strings kept");
        assert!(Arc::ptr_eq(
            &a,
            &intern("go.micro.server.worker-1|10.0.0.1:9089")
        ));
    }
}
