use super::*;

fn rule(json: &str) -> Rule {
    serde_json::from_str(json).expect("rule")
}

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .timestamp_millis()
}

fn check(json: &str) -> Result<Compiled, Invalid> {
    rule(json).compile(ms("2026-01-01T00:00:00Z"))
}

#[test]
fn bad_rules_name_their_field() {
    let cases = [
        (r#"{"cron":"0 * * * * *"}"#, "schedule.cron"),
        (r#"{"cron":"* * * *"}"#, "schedule.cron"),
        (r#"{"cron":"61 * * * *"}"#, "schedule.cron"),
        (r#"{"cron":"0 0 30 2 *"}"#, "schedule.cron"),
        (r#"{"cron":"@reboot"}"#, "schedule.cron"),
        (r#"{"every":"0s"}"#, "schedule.every"),
        (r#"{"every":"500ms"}"#, "schedule.every"),
        (r#"{"every":"soon"}"#, "schedule.every"),
        (
            r#"{"every":"1m","time_zone":"Mars/Olympus"}"#,
            "schedule.time_zone",
        ),
        (
            r#"{"every":"1m","starting_deadline":"0s"}"#,
            "schedule.starting_deadline",
        ),
        (r#"{"every":"1m","cron":"@hourly"}"#, "schedule"),
        (r#"{}"#, "schedule"),
    ];
    for (json, field) in cases {
        let error = check(json).expect_err(json);
        assert_eq!(error.field, field, "{json}: {}", error.detail);
    }
    for good in [
        r#"{"cron":"*/5 * * * *"}"#,
        r#"{"cron":"@hourly","time_zone":"Europe/Paris"}"#,
        r#"{"cron":"0 0 29 2 *"}"#,
        r#"{"every":"30s","overlap":"replace","starting_deadline":"10m","suspend":true}"#,
    ] {
        assert!(check(good).is_ok(), "{good}");
    }
    assert!(serde_json::from_str::<Rule>(r#"{"every":"1m","when":1}"#).is_err());
}

#[test]
fn every_counts_from_when_it_was_set() {
    let r = check(r#"{"every":"2s"}"#).expect("rule");
    assert_eq!(r.next_after(1000, 1000), Some(3000));
    assert_eq!(r.next_after(2999, 1000), Some(3000));
    assert_eq!(r.next_after(3000, 1000), Some(5000));
    assert_eq!(r.next_after(0, 1000), Some(3000));
}

#[test]
fn decisions_follow_overlap_deadline_and_outages() {
    let r = check(r#"{"every":"2s","starting_deadline":"5s"}"#).expect("rule");
    let p = Progress {
        since_ms: 0,
        ..Progress::default()
    };
    assert_eq!(decide(&r, &p, 1999, false), Decision::Wait(2000));
    let Decision::Act(a) = decide(&r, &p, 2100, false) else {
        panic!("due")
    };
    assert_eq!(
        (a.slot, a.outcome, a.missed, a.catch_up),
        (2000, Outcome::Started, 0, false)
    );
    let p = a.apply(&p);
    assert_eq!(decide(&r, &p, 2500, false), Decision::Wait(4000));
    // A run still going: skipped, with a record.
    let Decision::Act(a) = decide(&r, &p, 4000, true) else {
        panic!("due")
    };
    assert_eq!(a.outcome, Outcome::Skipped);
    let p = a.apply(&p);
    assert_eq!((p.skipped, p.cursor()), (1, 4000));
    // An outage of three slots: the latest runs once as a catch-up, the others are missed.
    let Decision::Act(a) = decide(&r, &p, 10_500, false) else {
        panic!("due")
    };
    assert_eq!(
        (a.slot, a.outcome, a.missed, a.catch_up),
        (10_000, Outcome::Started, 2, true)
    );
    let p = a.apply(&p);
    assert_eq!((p.missed, p.catch_up), (2, true));
    // Decided past the deadline: nothing runs, every due slot is missed, and the next one
    // runs on time.
    let slow = check(r#"{"every":"20s","starting_deadline":"5s"}"#).expect("rule");
    let q = Progress::default();
    let Decision::Act(a) = decide(&slow, &q, 47_000, false) else {
        panic!("due")
    };
    assert_eq!(
        (a.slot, a.outcome, a.missed, a.catch_up),
        (40_000, Outcome::Missed, 1, false)
    );
    let q = a.apply(&q);
    assert_eq!((q.missed, q.cursor()), (2, 40_000));
    assert_eq!(decide(&slow, &q, 47_000, false), Decision::Wait(60_000));
    assert!(matches!(
        decide(&slow, &q, 60_400, false),
        Decision::Act(a) if a.outcome == Outcome::Started && !a.catch_up
    ));
    // Replace stops the running one.
    let r = check(r#"{"every":"2s","overlap":"replace"}"#).expect("rule");
    assert!(
        matches!(decide(&r, &p, 32_000, true), Decision::Act(a) if a.outcome == Outcome::Replaced)
    );
    let r = check(r#"{"every":"2s","suspend":true}"#).expect("rule");
    assert_eq!(decide(&r, &p, 99_000, false), Decision::Idle);
}

#[test]
fn cron_in_a_zone_across_daylight_saving_changes() {
    // Europe/Paris springs forward at 02:00 on 29 March 2026 (to 03:00) and falls back at
    // 03:00 on 25 October 2026 (to 02:00).
    let r = check(r#"{"cron":"30 2 * * *","time_zone":"Europe/Paris"}"#).expect("rule");
    let slots = |from: &str, n: usize| {
        let mut at = ms(from);
        (0..n)
            .map(|_| {
                at = r.next_after(at, 0).expect("next");
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(at as u64),
                )
                .to_string()
            })
            .collect::<Vec<_>>()
    };
    // 02:30 does not exist on the 29th: it runs just after the gap, at 03:00 CEST (01:00Z).
    assert_eq!(
        slots("2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    // 02:30 happens twice on 25 October: it runs once, at the first.
    assert_eq!(
        slots("2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z"
        ]
    );
    // Hourly in the zone: the repeated hour fires for each pass (an interval job).
    let hourly = check(r#"{"cron":"0 * * * *","time_zone":"Europe/Paris"}"#).expect("rule");
    let mut at = ms("2026-10-24T23:30:00Z");
    let mut seen = Vec::new();
    for _ in 0..4 {
        at = hourly.next_after(at, 0).expect("next");
        seen.push(at);
    }
    let hour = 3_600_000;
    assert_eq!(
        seen.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
        [hour; 3]
    );
    // UTC is unaffected.
    let utc = check(r#"{"cron":"30 2 * * *"}"#).expect("rule");
    assert_eq!(
        utc.next_after(ms("2026-03-28T12:00:00Z"), 0),
        Some(ms("2026-03-29T02:30:00Z"))
    );
}

#[test]
fn an_outage_of_many_cron_slots_is_counted_and_the_latest_runs() {
    let r = check(r#"{"cron":"* * * * *"}"#).expect("rule");
    let p = Progress {
        since_ms: ms("2026-01-01T00:00:00Z"),
        ..Progress::default()
    };
    // Two days of minutes: the count stops at its limit, the slot is the latest.
    let now = ms("2026-01-03T00:00:30Z");
    let Decision::Act(a) = decide(&r, &p, now, false) else {
        panic!("due")
    };
    assert_eq!(a.slot, ms("2026-01-03T00:00:00Z"));
    assert_eq!(a.missed, COUNT_LIMIT - 1);
    assert!(a.catch_up);
}

#[test]
fn stored_schedules_round_trip() {
    let text = r#"{"rule":{"every":"30s","time_zone":"UTC","overlap":"skip","suspend":false},"progress":{"since_ms":5,"missed":0,"skipped":0}}"#;
    let r: Recurrence = serde_json::from_str(text).expect("decodes");
    assert_eq!(serde_json::to_string(&r).expect("encodes"), text);
}
