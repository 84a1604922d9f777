//! The placement's rules, one scenario each.

use super::fixture::{Fixture, with_workers};
use super::*;

#[test]
fn loads_follow_events_and_are_idempotent() {
    let mut p = with_workers(&["a", "b"]);
    p.set_resource("r1", Some(Some("a")), 2);
    p.set_resource("r1", Some(Some("a")), 2);
    p.set_resource("r2", Some(Some("a")), 3);
    assert_eq!(p.load("a"), Some(2));
    p.set_resource("r2", Some(Some("b")), 4);
    assert_eq!((p.load("a"), p.load("b")), (Some(1), Some(1)));
    p.set_resource("r1", None, 5);
    p.set_resource("r1", None, 5);
    assert_eq!(p.load("a"), Some(0));
    assert_eq!(p.pending(), 0);
}

#[test]
fn reservations_count_until_their_revision_is_applied() {
    let mut p = with_workers(&["a", "b"]);
    p.set_resource("x", Some(Some("a")), 3);
    p.advance(3);
    let r = p.reserve(None).expect("room");
    assert_eq!(r.worker, "b");
    // A concurrent create sees b's reservation and goes to... either, both at 1.
    assert_eq!(p.load("b"), Some(1));
    p.confirm(r.token, 7);
    assert_eq!(
        p.load("b"),
        Some(1),
        "still reserved until revision 7 is applied"
    );
    p.set_resource("new", Some(Some("b")), 7);
    assert_eq!(
        p.load("b"),
        Some(2),
        "event and reservation overlap briefly"
    );
    p.advance(7);
    assert_eq!(p.load("b"), Some(1), "counted once");
    let failed = p.reserve(None).expect("room");
    p.cancel(failed.token);
    assert_eq!(p.load("a").unwrap_or(0) + p.load("b").unwrap_or(0), 2);
}

#[test]
fn confirm_after_the_event_was_applied_releases_at_once() {
    let mut p = with_workers(&["a"]);
    let r = p.reserve(None).expect("room");
    p.set_resource("n", Some(Some("a")), 9);
    p.advance(9);
    p.confirm(r.token, 9);
    assert_eq!(p.load("a"), Some(1));
}

#[test]
fn unassigned_resources_wait_for_a_worker() {
    let mut p = Fixture::new();
    p.set_resource("seed1", Some(None), 2);
    p.set_resource("seed2", Some(None), 2);
    assert_eq!(p.pending(), 2);
    assert!(p.plan(10, usize::MAX, 0, 0).is_empty(), "no worker yet");
    p.upsert_worker("w", "w:1", None, Arc::default());
    let moves = p.plan(10, usize::MAX, 0, 0);
    assert_eq!(moves.len(), 2);
    assert!(moves.iter().all(|m| m.to.worker == "w"));
}

#[test]
fn a_dead_workers_resources_move_once_the_workers_cache_caught_up() {
    let mut p = with_workers(&["a", "b", "c"]);
    for i in 0..6 {
        p.set_resource(&format!("r{i}"), Some(Some("a")), 10);
    }
    p.remove_worker("a", 20);
    assert_eq!(p.pending(), 6);
    assert!(
        p.plan(128, 128, 0, 20).is_empty(),
        "not released: in its grace"
    );
    assert_eq!(p.absent_holders().into_iter().collect::<Vec<_>>(), ["a"]);
    p.release("a");
    assert!(p.absent_holders().is_empty());
    assert!(
        p.plan(128, 128, 0, 19).is_empty(),
        "workers cache behind the removal"
    );
    let moves = p.plan(4, 128, 0, 20);
    assert!(
        moves
            .iter()
            .all(|m| m.reason == Reason::WorkerLeft && m.from.as_deref() == Some("a"))
    );
    assert_eq!(moves.len(), 4, "limited batch");
    let to_b = moves.iter().filter(|m| m.to.worker == "b").count();
    assert_eq!(to_b, 2, "spread evenly: {moves:?}");
    assert_eq!(p.pending(), 2, "planned moves are in flight, not pending");
    p.unplan(&moves[0]);
    assert_eq!(p.pending(), 3, "a failed move is pending again");
    p.set_resource(&moves[1].name, None, 21);
    p.unplan(&moves[1]);
    assert_eq!(p.pending(), 3, "a deleted resource is not");
}

#[test]
fn a_returning_worker_keeps_its_resources() {
    let mut p = with_workers(&["a"]);
    p.set_resource("r", Some(Some("a")), 3);
    p.remove_worker("a", 4);
    assert_eq!(p.pending(), 1);
    p.upsert_worker("a", "a:2", None, Arc::default());
    assert_eq!(p.pending(), 0);
    assert_eq!(p.load("a"), Some(1));
    // Even after its release, a worker that is back is not released any more.
    p.remove_worker("a", 5);
    p.release("a");
    p.upsert_worker("a", "a:2", None, Arc::default());
    assert!(!p.is_released("a"));
}

#[test]
fn the_rate_limit_counts_orphans_only() {
    let mut p = with_workers(&["a", "b"]);
    for i in 0..5 {
        p.set_resource(&format!("o{i}"), Some(Some("a")), 1);
        p.set_resource(&format!("u{i}"), Some(None), 1);
    }
    p.remove_worker("a", 2);
    p.release("a");
    let moves = p.plan(100, 2, 0, 2);
    let orphans = moves
        .iter()
        .filter(|m| m.reason == Reason::WorkerLeft)
        .count();
    let created = moves.iter().filter(|m| m.reason == Reason::Created).count();
    assert_eq!((orphans, created), (2, 5));
}

#[test]
fn a_cordoned_worker_takes_nothing_new_and_a_drain_empties_it() {
    let mut p = with_workers(&["a", "b", "c"]);
    for i in 0..10 {
        p.set_resource(&format!("r{i}"), Some(Some("a")), 1);
    }
    p.advance(1);
    p.set_cordoned("a", true);
    for _ in 0..20 {
        let r = p.reserve(None).expect("room");
        assert_ne!(r.worker, "a");
        p.cancel(r.token);
    }
    p.upsert_worker("a", "a:9", None, Arc::default());
    assert_ne!(
        p.reserve(None).map(|r| r.worker).as_deref(),
        Some("a"),
        "cordon survives re-registration"
    );
    let first = p.plan_drain("a", 4);
    assert_eq!(first.len(), 4);
    assert!(
        first
            .iter()
            .all(|m| m.reason == Reason::Drained && m.to.worker != "a")
    );
    let second = p.plan_drain("a", 100);
    assert_eq!(second.len(), 6, "in-flight moves are not planned twice");
    p.unplan(&second[0]);
    assert_eq!(
        p.plan_drain("a", 100).len(),
        1,
        "a failed move is planned again"
    );
    for (rev, m) in first.iter().chain(&second[1..]).enumerate() {
        p.set_resource(&m.name, Some(Some(&m.to.worker)), 2 + rev as i64);
    }
    p.advance(100);
    assert!(p.plan_drain("a", 100).len() <= 1);
}

#[test]
fn rebalancing_converges_to_a_spread_of_one_within_the_limit() {
    let mut p = with_workers(&["a"]);
    for i in 0..301 {
        p.set_resource(&format!("r{i:03}"), Some(Some("a")), 1);
    }
    p.advance(1);
    p.upsert_worker("b", "b:1", None, Arc::default());
    p.upsert_worker("c", "c:1", None, Arc::default());
    assert_eq!(p.spread().0, 301);
    let mut rev = 2;
    let mut rounds = 0;
    loop {
        let moves = p.plan_rebalance(25, |_| Some(0));
        assert!(moves.len() <= 25);
        if moves.is_empty() {
            break;
        }
        for m in &moves {
            assert_eq!(m.reason, Reason::Rebalanced);
            p.confirm(m.to.token, rev);
            p.set_resource(&m.name, Some(Some(&m.to.worker)), rev);
            rev += 1;
        }
        p.advance(rev);
        rounds += 1;
    }
    assert!(p.spread().0 <= 1, "spread {:?}", p.spread());
    assert_eq!(rounds, 8, "200 moves at 25 a round");
    assert_eq!(
        p.load("a").unwrap_or(0) + p.load("b").unwrap_or(0) + p.load("c").unwrap_or(0),
        301
    );
}

#[test]
fn rebalancing_skips_young_and_completed_tasks_and_cordoned_workers() {
    let mut p = with_workers(&["a", "b"]);
    for i in 0..6 {
        p.set_resource(&format!("r{i}"), Some(Some("a")), 1);
    }
    p.advance(1);
    p.set_done("r0", true);
    // Only r1 and r2 are old enough; r2 started later, so it goes first.
    let started = |n: &str| match n {
        "r1" => Some(10),
        "r2" => Some(20),
        "r0" => Some(0),
        _ => None,
    };
    let moves = p.plan_rebalance(10, started);
    let names: Vec<&str> = moves.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["r2", "r1"]);
    let mut q = with_workers(&["a", "b"]);
    for i in 0..6 {
        q.set_resource(&format!("r{i}"), Some(Some("a")), 1);
    }
    q.set_cordoned("b", true);
    assert!(q.plan_rebalance(10, |_| Some(0)).is_empty(), "no receiver");
    q.set_cordoned("b", false);
    q.set_cordoned("a", true);
    assert!(
        q.plan_rebalance(10, |_| Some(0)).is_empty(),
        "a cordoned worker keeps its tasks"
    );
}

#[test]
fn a_preview_plans_without_moving_anything() {
    let mut p = with_workers(&["a", "b", "c"]);
    for i in 0..4 {
        p.set_resource(&format!("a{i}"), Some(Some("a")), 1);
        p.set_resource(&format!("b{i}"), Some(Some("b")), 1);
    }
    p.advance(1);
    let Preview {
        moves, unplaced, ..
    } = p.preview(&["a".into()], &["b".into()]);
    assert_eq!(moves.len(), 8);
    assert!(unplaced.is_empty());
    assert!(moves.iter().all(|m| m.to.worker == "c"));
    assert_eq!(
        moves.iter().filter(|m| m.reason == Reason::Drained).count(),
        4
    );
    assert_eq!(
        (p.load("a"), p.load("b"), p.load("c")),
        (Some(4), Some(4), Some(0))
    );
    assert_eq!(
        p.plan_drain("a", 100).len(),
        4,
        "the real placement is untouched"
    );
    let empty = with_workers(&["a"]).preview(&["a".into()], &[]);
    assert!(empty.unplaced.is_empty());
    let mut lonely = with_workers(&["a"]);
    lonely.set_resource("x", Some(Some("a")), 1);
    let stuck = lonely.preview(&["a".into()], &[]).unplaced;
    assert_eq!(stuck.len(), 1, "nowhere to go");
    assert_eq!(stuck[0].1, "stays on a: the matching worker is cordoned");
}

#[test]
fn completed_tasks_free_their_workers_room_until_they_run_again() {
    let mut p = Fixture::new();
    p.upsert_worker("w1", "a1", Some(1), Arc::default());
    p.set_resource("done", Some(Some("w1")), 1);
    p.advance(1);
    assert_eq!(p.load("w1"), Some(1));
    assert!(p.reserve(None).is_none(), "full");
    p.set_done("done", true);
    assert_eq!(p.load("w1"), Some(0));
    p.set_done("done", true);
    assert_eq!(p.load("w1"), Some(0), "idempotent");
    // A worker re-registering counts only what still runs.
    p.upsert_worker("w1", "a1", Some(1), Arc::default());
    assert_eq!(p.load("w1"), Some(0));
    // Restarted: it counts again.
    p.set_done("done", false);
    assert_eq!(p.load("w1"), Some(1));
    // Moved while completed: the old worker is not charged twice.
    p.set_done("done", true);
    p.upsert_worker("w2", "a2", Some(5), Arc::default());
    p.set_resource("done", Some(Some("w2")), 2);
    assert_eq!((p.load("w1"), p.load("w2")), (Some(0), Some(1)));
    p.set_resource("done", None, 3);
    assert_eq!(p.load("w2"), Some(0));
}

#[test]
fn resources_of_an_unknown_worker_wait_for_the_workers_cache() {
    let mut p = with_workers(&["b"]);
    p.set_resource("r", Some(Some("late")), 12);
    assert!(p.plan(1, 1, 0, 11).is_empty());
    p.upsert_worker("late", "l:1", None, Arc::default());
    assert_eq!(p.pending(), 0);
    assert_eq!(p.assigned("r").as_deref(), Some("late"));
}

fn labelled(p: &mut Placement, id: &str, pairs: &[(&str, &str)]) {
    let labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    p.upsert_worker(id, &format!("{id}:1"), None, Arc::new(labels));
}

fn wants(value: serde_json::Value, labels: &[(&str, &str)]) -> Option<Arc<Wants>> {
    let c = crate::model::constraints::Constraints::parse(&value).expect("valid");
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Wants::new(c, &labels)
}

#[test]
fn preferences_win_over_load_and_spread_shares_a_group_over_a_labels_values() {
    let mut p = Fixture::new();
    labelled(&mut p, "eu-1", &[("region", "eu")]);
    labelled(&mut p, "eu-2", &[("region", "eu")]);
    labelled(&mut p, "us-1", &[("region", "us")]);
    for i in 0..5 {
        p.set_resource(&format!("busy{i}"), Some(Some("eu-1")), 1);
    }
    p.advance(1);
    // A preference for eu outweighs eu-1's load; among eu, the least loaded.
    let prefer_eu = wants(
        serde_json::json!({"preferences": [{"weight": 50, "selector": {"match_labels": {"region": "eu"}}}]}),
        &[],
    );
    let r = p.reserve(prefer_eu.as_ref()).expect("room");
    assert_eq!(r.worker, "eu-2");
    // Shards of one site alternate between regions, reservations counted.
    let shard = wants(
        serde_json::json!({"spread": {"over": "region", "by": "site"}}),
        &[("site", "example.org")],
    );
    let mut regions = Vec::new();
    for _ in 0..4 {
        let r = p.reserve(shard.as_ref()).expect("room");
        regions.push(if r.worker.starts_with("eu") {
            "eu"
        } else {
            "us"
        });
    }
    regions.sort();
    assert_eq!(regions, ["eu", "eu", "us", "us"]);
    // A different group is counted apart.
    let other = wants(
        serde_json::json!({"spread": {"over": "region", "by": "site"}}),
        &[("site", "other.org")],
    );
    let first = p.reserve(other.as_ref()).expect("room");
    assert!(
        first.worker == "us-1" || first.worker == "eu-2",
        "{}",
        first.worker
    );
}

#[test]
fn a_selector_change_on_a_waiting_task_and_a_priority_reorder_the_queue() {
    let mut p = Fixture::new();
    labelled(&mut p, "w", &[("region", "eu")]);
    p.upsert_worker(
        "w",
        "w:1",
        Some(1),
        Arc::new(Labels::from([("region".into(), "eu".into())])),
    );
    let name = |n: &str| Name::from(n);
    p.set_resource_with(&name("low"), Some(None), None, 1);
    p.set_resource_with(
        &name("high"),
        Some(None),
        wants(serde_json::json!({"priority": 5}), &[]),
        2,
    );
    p.set_resource_with(
        &name("ap"),
        Some(None),
        wants(
            serde_json::json!({"selector": {"match_labels": {"region": "ap"}}, "priority": 9}),
            &[],
        ),
        3,
    );
    p.advance(3);
    let moves = p.plan(10, 10, 0, i64::MAX);
    let names: Vec<&str> = moves.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["high"],
        "ap fits nowhere and does not block; high before low"
    );
    assert_eq!(
        p.why_waiting("ap").map(|w| w.0),
        Some(crate::model::waiting::Wait::NoMatch)
    );
    assert_eq!(
        p.why_waiting("low").map(|w| w.0),
        Some(crate::model::waiting::Wait::Full)
    );
    let counts = p.waiting();
    assert_eq!(counts.get(&crate::model::waiting::Wait::NoMatch), Some(&1));
    // Its selector changed to one that fits: it is planned (once room frees).
    p.set_resource_with(
        &name("ap"),
        Some(None),
        wants(serde_json::json!({"priority": 9}), &[]),
        4,
    );
    p.set_resource("high", None, 5);
    p.advance(5);
    for m in &moves {
        p.cancel(m.to.token);
    }
    let next = p.plan(10, 10, 0, i64::MAX);
    assert_eq!(
        next.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["ap"]
    );
}
