//! Shared strings for values that repeat across many objects: a million resources name a few
//! thousand workers, so each `AssignedNode` is stored once and every resource holds a pointer.
//!
//! The table holds one reference of its own to each string; strings no object uses any more
//! are dropped when the table has doubled since the last sweep, so workers that left do not
//! accumulate.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

struct Table {
    strings: HashSet<Arc<str>>,
    /// Size after the last sweep.
    swept: usize,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        strings: HashSet::new(),
        swept: 0,
    })
});

/// The shared copy of `text`.
pub fn intern(text: &str) -> Arc<str> {
    if text.is_empty() {
        return Arc::from("");
    }
    // A panic while holding the lock leaves the set whole (inserts and retains are atomic).
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = table.strings.get(text) {
        return Arc::clone(shared);
    }
    if table.strings.len() >= 2 * table.swept.max(1024) {
        table.strings.retain(|s| Arc::strong_count(s) > 1);
        table.swept = table.strings.len();
    }
    let shared: Arc<str> = Arc::from(text);
    table.strings.insert(Arc::clone(&shared));
    shared
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
        let size = TABLE.lock().map(|t| t.strings.len()).unwrap_or(0);
        assert!(size < 5_000, "{size} strings kept");
        assert!(Arc::ptr_eq(
            &a,
            &intern("go.micro.server.worker-1|10.0.0.1:9089")
        ));
    }
}
