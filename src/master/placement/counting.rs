//! The placement's counts: each change applied once while the cache runs ahead of it, and a
//! take-over's fill that hands each worker its load once.

use std::sync::Arc;

use super::fixture::with_workers;

#[test]
fn counts_follow_what_was_applied_while_the_cache_runs_ahead() {
    let mut p = with_workers(&["a", "b"]);
    p.set_resource("r1", Some(Some("a")), 2);
    p.advance(2);
    // Moved to b in the cache; the placement has not applied it.
    p.write_ahead("r1", "b", 3);
    assert_eq!((p.load("a"), p.load("b")), (Some(1), Some(0)));
    // b leaves: what the cache shows on it waits on it.
    p.remove_worker("b", 3);
    assert_eq!(p.waits_on("r1"), Some("b"));
    p.catch_up(None);
    p.advance(3);
    assert_eq!(
        p.load("a"),
        Some(0),
        "the move is counted once, from its old value"
    );
    assert_eq!((p.held_by("a"), p.held_by("b")), (0, 1));
    assert_eq!(p.absent_holders().into_iter().collect::<Vec<_>>(), ["b"]);
    p.upsert_worker("b", "b:1", None, Arc::default());
    assert_eq!(
        (p.pending(), p.load("b")),
        (0, Some(1)),
        "back: it keeps r1"
    );
}

#[test]
fn a_fill_hands_each_worker_its_load_once_at_its_end() {
    let mut p = with_workers(&["a", "b", "c"]);
    p.begin_fill();
    for i in 0..5 {
        p.set_resource(&format!("a{i}"), Some(Some("a")), 2);
    }
    p.set_resource("b0", Some(Some("b")), 2);
    p.set_resource("gone", Some(Some("absent")), 2);
    p.set_done("a0", true);
    assert_eq!(p.load("a"), Some(0), "not handed over yet");
    p.end_fill();
    assert_eq!(
        (p.load("a"), p.load("b"), p.load("c")),
        (Some(4), Some(1), Some(0))
    );
    assert_eq!(p.held_by("absent"), 1);
    // After the fill, each change moves its worker at once again.
    p.set_done("a0", false);
    assert_eq!(p.load("a"), Some(5));
    let r = p.reserve(None).expect("room");
    assert_eq!(r.worker, "c", "the least loaded");
}
