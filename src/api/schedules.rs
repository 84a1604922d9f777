//! Schedules in the API: the `schedule` a client gives at creation, replaces with PUT and
//! merges with PATCH (JSON merge patch: `{"schedule": {"suspend": true}}` suspends it, and
//! `null` removes it), and the view with what the leader decided.
//!
//! Every rule is checked here, before anything touches etcd: a bad schedule is a 422 that
//! names its field.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiError;
use super::status_view::rfc3339;
use crate::model::recurrence::{Decision, Invalid, Recurrence, Rule, decide};
use crate::model::status::now_ms;

/// A schedule as the API shows it: the rule as given, and what the leader decided.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// 5-field cron or macro, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Interval, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// IANA time zone of the cron.
    pub time_zone: String,
    /// `skip` or `replace`.
    pub overlap: &'static str,
    /// A slot decided later than this after it was due is missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<String>,
    /// True while suspended.
    pub suspend: bool,
    /// When the next run is due, RFC 3339 (absent while suspended); a time in the past means
    /// it is being decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// The last slot decided, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scheduled_at: Option<String>,
    /// How it was decided: `started`, `skipped`, `missed` or `replaced`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<&'static str>,
    /// True when the last run started was a catch-up (decided late, or after missed slots).
    pub last_run_catch_up: bool,
    /// Slots missed in all.
    pub missed: u64,
    /// Slots skipped in all (a run still going).
    pub skipped: u64,
}

impl ScheduleView {
    /// The view of a stored schedule.
    pub fn of(s: &Recurrence) -> Self {
        let next = s.rule.compile(now_ms()).ok().and_then(|c| {
            if c.suspend {
                return None;
            }
            match decide(&c, &s.progress, now_ms(), false) {
                Decision::Wait(at) => Some(at),
                Decision::Act(act) => Some(act.slot),
                Decision::Idle => None,
            }
        });
        Self {
            cron: s.rule.cron.clone(),
            every: s.rule.every.clone(),
            time_zone: s.rule.time_zone.clone(),
            overlap: match s.rule.overlap {
                crate::model::recurrence::Overlap::Skip => "skip",
                crate::model::recurrence::Overlap::Replace => "replace",
            },
            starting_deadline: s.rule.starting_deadline.clone(),
            suspend: s.rule.suspend,
            next_run_at: next.map(rfc3339),
            last_scheduled_at: s.progress.last_scheduled_ms.map(rfc3339),
            last_outcome: s.progress.last_outcome.map(|o| o.as_str()),
            last_run_catch_up: s.progress.catch_up,
            missed: s.progress.missed,
            skipped: s.progress.skipped,
        }
    }
}

/// The rule a request's `schedule` gives, checked; `None` for JSON null.
pub fn checked(value: &Value) -> Result<Option<Rule>, ApiError> {
    rule_of(value).map_err(unprocessable)
}

fn rule_of(value: &Value) -> Result<Option<Rule>, Invalid> {
    if value.is_null() {
        return Ok(None);
    }
    // Null removes a field in a merge patch, and means nothing elsewhere: leave it out.
    if let Some((key, _)) = value
        .as_object()
        .and_then(|o| o.iter().find(|(_, v)| v.is_null()))
    {
        return Err(Invalid {
            field: "schedule",
            detail: format!("schedule.{key} is null: give a value or leave it out"),
        });
    }
    let rule: Rule = serde_json::from_value(value.clone()).map_err(|e| Invalid {
        field: "schedule",
        detail: format!("not a schedule: {e}"),
    })?;
    rule.compile(now_ms())?;
    Ok(Some(rule))
}

/// The 422 a broken rule answers, naming its field.
pub fn unprocessable(e: Invalid) -> ApiError {
    ApiError::Unprocessable {
        detail: e.detail,
        field: Some(e.field.into()),
    }
}

/// `current` with the merge patch `patch` applied (RFC 7396), checked.
pub fn merged(current: Option<&Rule>, patch: &Value) -> Result<Option<Rule>, Invalid> {
    let mut target = current
        .and_then(|rule| serde_json::to_value(rule).ok())
        .unwrap_or(Value::Null);
    merge(&mut target, patch);
    rule_of(&target)
}

/// Applies merge patch `patch` to `target` (RFC 7396).
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(into) = target {
        for (key, value) in fields {
            if value.is_null() {
                into.remove(key);
            } else {
                merge(into.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_changes_the_fields_it_names() {
        let rule = checked(&json!({"every": "30s"}))
            .expect("ok")
            .expect("some");
        let suspended = merged(Some(&rule), &json!({"suspend": true}))
            .expect("ok")
            .expect("some");
        assert!(suspended.suspend);
        assert_eq!(suspended.every.as_deref(), Some("30s"));
        let cron = merged(Some(&rule), &json!({"cron": "@hourly", "every": null}))
            .expect("ok")
            .expect("some");
        assert_eq!((cron.cron.as_deref(), cron.every), (Some("@hourly"), None));
        assert_eq!(merged(Some(&rule), &Value::Null).expect("ok"), None);
        let both = merged(Some(&rule), &json!({"cron": "@hourly"})).expect_err("two");
        assert_eq!(both.field, "schedule");
        let alone = merged(None, &json!({"suspend": true})).expect_err("none");
        assert_eq!(unprocessable(alone).problem().status, 422);
        let zone = checked(&json!({"every": "1m", "time_zone": "Nowhere"})).expect_err("zone");
        assert_eq!(zone.problem().field.as_deref(), Some("schedule.time_zone"));
    }
}
