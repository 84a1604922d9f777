//! Properties of the placement over random fleets and tasks: it never breaks a selector or a
//! dedication, never exceeds a capacity, places higher priorities first, preempts only lower
//! priorities and within its bound, and a preview is what applying it does.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde_json::json;

use super::fixture::Fixture;
use super::*;
use crate::model::constraints::Constraints;

/// One worker: region (none, eu, us, ap), dedicated to `acme`, capacity, cordoned.
#[derive(Debug, Clone)]
struct W {
    region: Option<usize>,
    dedicated: bool,
    browser: bool,
    capacity: u32,
    cordoned: bool,
}

/// One task: selector kind, tolerates `acme`, priority, the worker it runs on (if any).
#[derive(Debug, Clone)]
struct T {
    selector: usize,
    tolerates: bool,
    priority: i32,
    running_on: Option<usize>,
}

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn worker() -> impl Strategy<Value = W> {
    (
        proptest::option::of(0..3usize),
        proptest::bool::weighted(0.2),
        any::<bool>(),
        1..4u32,
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(region, dedicated, browser, capacity, cordoned)| W {
            region,
            dedicated,
            browser,
            capacity,
            cordoned,
        })
}

fn task(workers: usize) -> impl Strategy<Value = T> {
    (
        0..6usize,
        proptest::bool::weighted(0.3),
        0..4i32,
        proptest::option::weighted(0.4, 0..workers),
    )
        .prop_map(|(selector, tolerates, priority, running_on)| T {
            selector,
            tolerates,
            priority,
            running_on,
        })
}

fn scenario() -> impl Strategy<Value = (Vec<W>, Vec<T>)> {
    proptest::collection::vec(worker(), 1..7).prop_flat_map(|ws| {
        let n = ws.len();
        (Just(ws), proptest::collection::vec(task(n), 0..40))
    })
}

fn labels(w: &W) -> Labels {
    let mut l = Labels::new();
    if let Some(r) = w.region {
        l.insert("region".into(), REGIONS[r].into());
    }
    if w.dedicated {
        l.insert("dedicated".into(), "acme".into());
    }
    if w.browser {
        l.insert("browser".into(), "chromium".into());
    }
    l
}

fn constraints(t: &T) -> Constraints {
    let selector = match t.selector {
        1 => json!({"match_labels": {"region": "eu"}}),
        2 => {
            json!({"match_expressions": [{"key": "region", "operator": "In", "values": ["eu", "us"]}]})
        }
        3 => {
            json!({"match_expressions": [{"key": "region", "operator": "NotIn", "values": ["eu"]}]})
        }
        4 => json!({"match_expressions": [{"key": "browser", "operator": "Exists"}]}),
        5 => json!({"match_expressions": [{"key": "region", "operator": "DoesNotExist"}]}),
        _ => json!({}),
    };
    let tolerations: Vec<&str> = if t.tolerates { vec!["acme"] } else { vec![] };
    Constraints::parse(&json!({
        "selector": selector,
        "tolerations": tolerations,
        "priority": t.priority,
    }))
    .unwrap_or_default()
}

fn id(i: usize) -> String {
    format!("w{i}")
}

/// The placement of a scenario: workers present, running tasks on their workers (the task's
/// constraints aside: they may predate them), the rest unassigned.
fn build(ws: &[W], ts: &[T]) -> Fixture {
    let mut p = Fixture::new();
    for (i, w) in ws.iter().enumerate() {
        p.upsert_worker(
            &id(i),
            &format!("h:{i}"),
            Some(w.capacity),
            Arc::new(labels(w)),
        );
        p.set_cordoned(&id(i), w.cordoned);
    }
    for (i, t) in ts.iter().enumerate() {
        let wants = Wants::new(constraints(t), &BTreeMap::new());
        let worker = t.running_on.map(id);
        p.set_resource_with(
            &Name::from(format!("t{i}")),
            Some(worker.as_deref()),
            wants,
            1 + i as i64,
        );
    }
    p.advance(ts.len() as i64 + 1);
    p
}

fn admits(p: &Placement, name: &str, worker: &str) -> bool {
    let labels = p.assigner.labels(worker).cloned().unwrap_or_default();
    match p.wants(name) {
        Some(w) => w.constraints.admits(&labels),
        None => !labels.contains_key("dedicated"),
    }
}

fn priority(ts: &[T], name: &str) -> i32 {
    let i: usize = name[1..].parse().unwrap_or(0);
    ts[i].priority
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn placement_keeps_selectors_capacity_and_priority_order((ws, ts) in scenario()) {
        let mut p = build(&ws, &ts);
        let before: HashMap<String, u32> = (0..ws.len()).map(|i| (id(i), p.load(&id(i)).unwrap_or(0))).collect();
        let moves = p.plan(usize::MAX, usize::MAX, 0, i64::MAX);
        let mut added: HashMap<String, u32> = HashMap::new();
        for m in &moves {
            prop_assert!(m.evicts.is_none(), "no preemption without a budget");
            prop_assert!(admits(&p, &m.name, &m.to.worker), "{} on {}", m.name, m.to.worker);
            let w: usize = m.to.worker[1..].parse().unwrap_or(0);
            prop_assert!(!ws[w].cordoned, "{} on cordoned {}", m.name, m.to.worker);
            *added.entry(m.to.worker.clone()).or_default() += 1;
        }
        for (i, w) in ws.iter().enumerate() {
            let new = added.get(&id(i)).copied().unwrap_or(0);
            if new > 0 {
                prop_assert!(before[&id(i)] + new <= w.capacity, "{} over capacity", id(i));
            }
        }
        // A waiting task never fits a worker that a task of lower priority was given.
        let placed: HashMap<&str, &str> = moves.iter().map(|m| (m.name.as_str(), m.to.worker.as_str())).collect();
        for (i, t) in ts.iter().enumerate() {
            let name = format!("t{i}");
            if t.running_on.is_some() || placed.contains_key(name.as_str()) {
                continue;
            }
            for (other, worker) in &placed {
                if priority(&ts, other) < t.priority {
                    prop_assert!(!admits(&p, &name, worker), "{name} (p{}) waits while {other} (p{}) took {worker}", t.priority, priority(&ts, other));
                }
            }
        }
    }

    #[test]
    fn preemption_displaces_only_lower_priorities_within_its_bound((ws, ts) in scenario(), budget in 0..4usize) {
        let mut p = build(&ws, &ts);
        let moves = p.plan(usize::MAX, usize::MAX, budget, i64::MAX);
        let evictions: Vec<&Move> = moves.iter().filter(|m| m.evicts.is_some()).collect();
        prop_assert!(evictions.len() <= budget);
        let mut victims = std::collections::HashSet::new();
        for m in evictions {
            let victim = m.evicts.as_deref().unwrap_or_default();
            prop_assert!(victims.insert(victim.to_owned()), "{victim} evicted twice");
            prop_assert!(priority(&ts, victim) < priority(&ts, &m.name));
            prop_assert_eq!(p.assigned(victim), Some(m.to.worker.clone()), "the victim is on the worker taken");
            prop_assert!(admits(&p, &m.name, &m.to.worker));
        }
        let moves = p.plan(usize::MAX, usize::MAX, 0, i64::MAX);
        prop_assert!(moves.iter().all(|m| m.evicts.is_none()));
    }

    #[test]
    fn a_preview_is_what_applying_it_does((ws, ts) in scenario(), drain in 0..7usize) {
        let p = build(&ws, &ts);
        let drained: Vec<String> = (drain < ws.len()).then(|| id(drain)).into_iter().collect();
        let preview = p.preview(&drained, &[]);
        // Apply the previewed moves as their writes would: each resource at its new worker.
        let mut applied = p;
        for d in &drained {
            applied.set_cordoned(d, true);
        }
        let mut revision = ts.len() as i64 + 2;
        for m in &preview.moves {
            prop_assert!(admits(&applied, &m.name, &m.to.worker), "{} previewed on {}", m.name, m.to.worker);
            let wants = applied.wants(&m.name).cloned();
            applied.set_resource_with(&Name::from(m.name.as_str()), Some(Some(&m.to.worker)), wants, revision);
            revision += 1;
        }
        applied.advance(revision);
        for (i, w) in ws.iter().enumerate() {
            if preview.moves.iter().any(|m| m.to.worker == id(i)) {
                prop_assert!(applied.load(&id(i)).unwrap_or(0) <= w.capacity);
            }
        }
        // Nothing more can be placed, and what waits is what the preview said would.
        let more = applied.plan(usize::MAX, usize::MAX, 0, i64::MAX);
        prop_assert!(more.is_empty(), "the preview left placeable tasks: {:?}", more.iter().map(|m| &m.name).collect::<Vec<_>>());
        let mut left: Vec<String> = drained
            .iter()
            .flat_map(|d| applied.plan_drain(d, usize::MAX))
            .map(|m| m.name)
            .collect();
        left.sort();
        prop_assert!(left.is_empty(), "the preview left movable tasks on the drained worker: {left:?}");
        prop_assert_eq!(preview.why.len(), preview.moves.len());
    }
}
