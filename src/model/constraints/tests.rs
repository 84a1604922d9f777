//! The rules of constraints: matching, scoring, and what the API refuses.

use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parsed(value: Value) -> Constraints {
    Constraints::parse(&value).expect("valid")
}

#[test]
fn set_based_operators_follow_kubernetes() {
    let c = parsed(json!({"selector": {"match_expressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "zone", "operator": "NotIn", "values": ["z1"]},
        {"key": "browser", "operator": "Exists"},
        {"key": "spot", "operator": "DoesNotExist"},
    ]}}));
    assert!(c.admits(&labels(&[("tier", "a"), ("browser", "")])));
    // NotIn matches a worker without the key at all.
    assert!(c.admits(&labels(&[("tier", "b"), ("browser", "y"), ("zone", "z2")])));
    assert!(!c.admits(&labels(&[("tier", "c"), ("browser", "y")])));
    assert!(!c.admits(&labels(&[("tier", "a"), ("browser", "y"), ("zone", "z1")])));
    assert!(!c.admits(&labels(&[("tier", "a")])));
    assert!(!c.admits(&labels(&[("tier", "a"), ("browser", "y"), ("spot", "1")])));
    assert_eq!(
        c.selector.describe(),
        "tier in (a,b),zone notin (z1),browser,!spot"
    );
}

#[test]
fn dedicated_workers_take_only_tolerating_tasks() {
    let acme = labels(&[("dedicated", "acme"), ("region", "eu")]);
    let plain = Constraints::default();
    assert!(plain.admits(&labels(&[("region", "eu")])));
    assert!(!plain.admits(&acme));
    let tolerant = parsed(json!({"tolerations": ["acme"]}));
    assert!(tolerant.admits(&acme));
    assert!(
        tolerant.admits(&labels(&[])),
        "a toleration is not a requirement"
    );
    assert!(!parsed(json!({"tolerations": ["other"]})).admits(&acme));
}

#[test]
fn preferences_sum_their_weights() {
    let c = parsed(json!({"preferences": [
        {"weight": 50, "selector": {"match_labels": {"region": "eu"}}},
        {"weight": -30, "selector": {"match_expressions": [{"key": "spot", "operator": "Exists"}]}},
    ]}));
    assert_eq!(c.score(&labels(&[("region", "eu")])), 50);
    assert_eq!(c.score(&labels(&[("region", "eu"), ("spot", "1")])), 20);
    assert_eq!(c.score(&labels(&[("spot", "1")])), -30);
    assert!(!c.restricts());
}

#[test]
fn bad_constraints_name_their_field() {
    let cases = [
        (json!({"priority": -1}), "placement.priority"),
        (json!({"priority": 1001}), "placement.priority"),
        (json!({"priority": "high"}), "placement"),
        (json!({"selectr": {}}), "placement"),
        (
            json!({"selector": {"match_expressions": [{"key": "a", "operator": "In"}]}}),
            "placement.selector",
        ),
        (
            json!({"selector": {"match_expressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}),
            "placement.selector",
        ),
        (
            json!({"selector": {"match_expressions": [{"key": "a", "operator": "Near"}]}}),
            "placement",
        ),
        (
            json!({"selector": {"match_labels": {"": "x"}}}),
            "placement.selector",
        ),
        (
            json!({"preferences": [{"weight": 0, "selector": {}}]}),
            "placement.preferences",
        ),
        (
            json!({"preferences": [{"weight": 101, "selector": {}}]}),
            "placement.preferences",
        ),
        (json!({"tolerations": [""]}), "placement.tolerations"),
        (
            json!({"spread": {"over": "", "by": "site"}}),
            "placement.spread",
        ),
        (json!([]), "placement"),
    ];
    for (value, field) in cases {
        let e = Constraints::parse(&value).expect_err(&value.to_string());
        assert_eq!(e.field, field, "{value}: {}", e.detail);
    }
}

#[test]
fn whole_numbers_may_be_written_with_a_zero_fraction() {
    let c = parsed(json!({"priority": 126.0, "preferences": [{"weight": -26.0, "selector": {}}]}));
    assert_eq!((c.priority, c.preferences[0].weight), (126, -26));
    for value in [json!({"priority": 1.5}), json!({"priority": 1e12})] {
        assert_eq!(
            Constraints::parse(&value).expect_err("not whole").field,
            "placement"
        );
    }
}

#[test]
fn stored_form_round_trips_and_omits_defaults() {
    let c = parsed(json!({"selector": {"match_labels": {"region": "eu"}}, "priority": 5}));
    let stored = serde_json::to_value(&c).expect("encodes");
    assert_eq!(
        stored,
        json!({"selector": {"match_labels": {"region": "eu"}}, "priority": 5})
    );
    assert_eq!(parsed(stored), c);
    assert!(parsed(json!({})).is_empty());
    assert_eq!(
        serde_json::to_value(Constraints::default()).ok(),
        Some(json!({}))
    );
}

#[test]
fn arrays_are_refused_where_the_schema_has_objects() {
    for (placement, field) in [
        (json!({"selector": []}), "placement.selector"),
        (
            json!({"selector": {"match_expressions": [[]]}}),
            "placement.selector",
        ),
        (json!({"preferences": [[]]}), "placement.preferences"),
        (
            json!({"preferences": [{"weight": 1, "selector": []}]}),
            "placement.preferences",
        ),
        (json!({"spread": []}), "placement.spread"),
    ] {
        let refused = Constraints::parse(&placement).expect_err("refused");
        assert_eq!(refused.field, field, "{placement}");
    }
    assert!(Constraints::parse(&json!({"selector": {}})).is_ok());
}
