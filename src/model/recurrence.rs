//! Recurring crawls: a resource's schedule (the API's `schedule`, stored under `Schedule`, a
//! field the Go crawler ignores), what the leader decided about it so far, and the pure rule
//! that turns both and the clock into the next decision.
//!
//! A schedule's slots are the times a run is due: those of a 5-field cron in a time zone, or
//! every `every` after the schedule was set. Each slot is decided once, by the leader, in a
//! fenced txn that also records the decision here: started, skipped (a run still going and
//! `overlap: skip`), replaced (`overlap: replace`) or missed (decided later than
//! `starting_deadline`). After an outage only the latest due slot can run (a catch-up); the
//! earlier ones are counted as missed.
//!
//! Cron is parsed by `croner` (5 fields and `@hourly`-style macros, no seconds or years) and
//! zones come from `chrono-tz` (the IANA database compiled in, so a minimal container without
//! tzdata behaves the same); daylight saving follows croner's documented rules: a fixed time in
//! a gap runs just after it, one in a repeated hour runs once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// Shortest `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// Due slots counted one by one after an outage; beyond this the count is a floor.
const COUNT_LIMIT: u64 = 1000;
/// A run decided later than this after its slot is a catch-up.
pub const CATCH_UP_AFTER_MS: i64 = 1000;

/// What to do when a slot comes while the previous run still goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The slot is skipped, with a record.
    #[default]
    Skip,
    /// The running process is stopped and a new run starts.
    Replace,
}

/// A schedule as a user gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A 5-field cron expression or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`); exactly one of `cron` and `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A duration such as `30s`, `15m` or `6h`: a run every so often after the schedule was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// IANA time zone the cron is read in.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// `skip` or `replace`.
    #[serde(default)]
    pub overlap: Overlap,
    /// A slot decided later than this after it was due is missed instead of run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<String>,
    /// While true, slots pass without a run or a record, and none is caught up on resume.
    #[serde(default)]
    pub suspend: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

pub use crate::model::invalid::Invalid;
use crate::model::invalid::invalid;

/// When slots come.
#[derive(Debug, Clone)]
enum Cadence {
    Cron(Box<Cron>),
    Every(i64),
}

/// A checked rule, ready to compute slots.
#[derive(Debug, Clone)]
pub struct Compiled {
    cadence: Cadence,
    zone: Tz,
    deadline_ms: Option<i64>,
    /// What a run still going makes of a slot.
    pub overlap: Overlap,
    /// No slot is decided while true.
    pub suspend: bool,
}

fn duration(field: &'static str, text: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            field,
            format!("{text:?} is not a duration such as 30s or 6h: {e}"),
        )
    })
}

impl Rule {
    /// Checks the rule: exactly one of `cron` (5 fields or a macro, that fires at least once
    /// after `now_ms`) and `every` (at least [`MIN_EVERY`]); a known zone; a deadline of at
    /// least a second.
    pub fn compile(&self, now_ms: i64) -> Result<Compiled, Invalid> {
        let zone = Tz::from_str(self.time_zone.trim()).map_err(|_| {
            invalid(
                "schedule.time_zone",
                format!(
                    "{:?} is not an IANA time zone such as Europe/Paris or UTC",
                    self.time_zone
                ),
            )
        })?;
        let cadence = match (&self.cron, &self.every) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "schedule",
                    "give exactly one of schedule.cron and schedule.every",
                ));
            }
            (Some(text), None) => Cadence::Cron(Box::new(parse_cron(text)?)),
            (None, Some(text)) => {
                let every = duration("schedule.every", text)?;
                if every < MIN_EVERY {
                    return Err(invalid(
                        "schedule.every",
                        format!("{text:?} is shorter than the shortest interval, 1s"),
                    ));
                }
                Cadence::Every(
                    i64::try_from(every.as_millis())
                        .map_err(|_| invalid("schedule.every", format!("{text:?} is too long")))?,
                )
            }
        };
        let deadline_ms = match &self.starting_deadline {
            None => None,
            Some(text) => {
                let d = duration("schedule.starting_deadline", text)?;
                if d < Duration::from_secs(1) {
                    return Err(invalid(
                        "schedule.starting_deadline",
                        format!("{text:?} is shorter than a second"),
                    ));
                }
                Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
        };
        let compiled = Compiled {
            cadence,
            zone,
            deadline_ms,
            overlap: self.overlap,
            suspend: self.suspend,
        };
        if compiled.next_after(now_ms, now_ms).is_none() {
            return Err(invalid(
                "schedule.cron",
                format!(
                    "{:?} never fires (a date such as 30 February does not exist)",
                    self.cron.as_deref().unwrap_or_default()
                ),
            ));
        }
        Ok(compiled)
    }
}

fn parse_cron(text: &str) -> Result<Cron, Invalid> {
    let text = text.trim();
    let fields = text.split_whitespace().count();
    if text.eq_ignore_ascii_case("@reboot") {
        return Err(invalid(
            "schedule.cron",
            "@reboot has no meaning for a cluster; use a time or `every`",
        ));
    }
    if !text.starts_with('@') && fields != 5 {
        return Err(invalid(
            "schedule.cron",
            format!(
                "{text:?} has {fields} fields; a cron has 5 (minute hour day-of-month month \
                 day-of-week) or is a macro such as @hourly"
            ),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| {
            invalid(
                "schedule.cron",
                format!("{text:?} is not a valid cron: {e}"),
            )
        })
}

impl Compiled {
    /// The first slot after `after_ms`; `anchor_ms` is when the schedule was set (an `every`
    /// counts from it). `None` when none comes (before the year 5000).
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64) -> Option<i64> {
        match &self.cadence {
            Cadence::Every(every) => {
                let k = if after_ms < anchor_ms {
                    1
                } else {
                    (after_ms - anchor_ms) / every + 1
                };
                anchor_ms.checked_add(k.checked_mul(*every)?)
            }
            Cadence::Cron(cron) => {
                let after = self.zone.from_utc_datetime(&utc_at(after_ms)?.naive_utc());
                let next = cron.find_next_occurrence(&after, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// The latest slot at or before `at_ms` and after `after_ms`, and how many slots lie in
    /// between (`after_ms`, `at_ms`], counted up to [`COUNT_LIMIT`].
    fn due(&self, after_ms: i64, at_ms: i64, anchor_ms: i64) -> Option<(i64, u64)> {
        let first = self.next_after(after_ms, anchor_ms)?;
        if first > at_ms {
            return None;
        }
        if let Cadence::Every(every) = self.cadence {
            let count = (at_ms - first) / every + 1;
            return Some((first + (count - 1) * every, count as u64));
        }
        let (mut latest, mut count) = (first, 1);
        while count < COUNT_LIMIT {
            match self.next_after(latest, anchor_ms) {
                Some(next) if next <= at_ms => (latest, count) = (next, count + 1),
                _ => return Some((latest, count)),
            }
        }
        let Cadence::Cron(cron) = &self.cadence else {
            return Some((latest, count));
        };
        let at = self.zone.from_utc_datetime(&utc_at(at_ms)?.naive_utc());
        let last = cron.find_previous_occurrence(&at, true).ok()?;
        Some((last.timestamp_millis().max(latest), count))
    }
}

fn utc_at(ms: i64) -> Option<DateTime<Utc>> {
    // Croner searches by the second: a slot is a whole second.
    DateTime::from_timestamp_millis(ms.div_euclid(1000) * 1000)
}

/// How a slot was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A run started.
    Started,
    /// A run still going made it skip.
    Skipped,
    /// It was decided too late (past `starting_deadline`), or an outage passed over it.
    Missed,
    /// The run still going was stopped and a new one started.
    Replaced,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [
        Outcome::Started,
        Outcome::Skipped,
        Outcome::Missed,
        Outcome::Replaced,
    ];

    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Skipped => "skipped",
            Outcome::Missed => "missed",
            Outcome::Replaced => "replaced",
        }
    }

    /// True when a run starts.
    pub fn runs(self) -> bool {
        matches!(self, Outcome::Started | Outcome::Replaced)
    }
}

/// What the leader decided so far: stored with the rule, and written in the txn of each
/// decision, so a new leader continues from the last slot decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// When the rule was set or last changed, Unix ms: slots before it are never run.
    pub since_ms: i64,
    /// The last slot decided, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_ms: Option<i64>,
    /// How it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// True when the last run started was a catch-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch_up: bool,
    /// The slot of the run the schedule last started, Unix ms, until a restart starts one of
    /// its own (its task sees it as `CRAWLER_SCHEDULED_AT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_slot_ms: Option<i64>,
    /// Slots missed in all.
    #[serde(default)]
    pub missed: u64,
    /// Slots skipped in all.
    #[serde(default)]
    pub skipped: u64,
}

impl Progress {
    /// The last slot decided, or when the rule was set.
    pub fn cursor(&self) -> i64 {
        self.last_scheduled_ms
            .map_or(self.since_ms, |s| s.max(self.since_ms))
    }
}

/// A resource's schedule: the rule and the leader's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// What the user set.
    pub rule: Rule,
    /// What the leader decided.
    #[serde(default)]
    pub progress: Progress,
}

impl Recurrence {
    /// The schedule `rule` makes of `current` at `now_ms`: unchanged when the rule is, and
    /// otherwise counting from now (slots before a change never run), the counts kept.
    pub fn set(current: Option<&Recurrence>, rule: Option<Rule>, now_ms: i64) -> Option<Self> {
        let rule = rule?;
        match current {
            Some(c) if c.rule == rule => Some(c.clone()),
            _ => {
                let mut progress = current.map(|c| c.progress.clone()).unwrap_or_default();
                progress.since_ms = now_ms;
                Some(Recurrence { rule, progress })
            }
        }
    }
}

/// The leader's decision about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due before this time, Unix ms.
    Wait(i64),
    /// Nothing will be due: suspended, or no slot comes.
    Idle,
    /// Decide slot `slot`.
    Act(Act),
}

/// A decision about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Act {
    /// The slot, Unix ms.
    pub slot: i64,
    /// What becomes of it.
    pub outcome: Outcome,
    /// Earlier due slots passed over, counted as missed.
    pub missed: u64,
    /// True for a run decided late ([`CATCH_UP_AFTER_MS`]) or after missed slots.
    pub catch_up: bool,
}

impl Act {
    /// `progress` after this decision.
    pub fn apply(&self, progress: &Progress) -> Progress {
        let mut next = progress.clone();
        next.last_scheduled_ms = Some(self.slot);
        next.last_outcome = Some(self.outcome);
        next.missed += self.missed + u64::from(self.outcome == Outcome::Missed);
        next.skipped += u64::from(self.outcome == Outcome::Skipped);
        if self.outcome.runs() {
            next.catch_up = self.catch_up;
            next.run_slot_ms = Some(self.slot);
        }
        next
    }
}

/// Decides the schedule `rule` with `progress` at `now_ms`, `active` telling whether a run of
/// it still goes. At most one slot, the latest due, is acted on; the earlier due ones are
/// missed.
pub fn decide(rule: &Compiled, progress: &Progress, now_ms: i64, active: bool) -> Decision {
    if rule.suspend {
        return Decision::Idle;
    }
    let cursor = progress.cursor();
    let Some((slot, count)) = rule.due(cursor, now_ms, progress.since_ms) else {
        return match rule.next_after(cursor, progress.since_ms) {
            Some(at) => Decision::Wait(at),
            None => Decision::Idle,
        };
    };
    let late = now_ms - slot;
    let earlier = count - 1;
    let outcome = if rule.deadline_ms.is_some_and(|d| late > d) {
        Outcome::Missed
    } else if !active {
        Outcome::Started
    } else if rule.overlap == Overlap::Replace {
        Outcome::Replaced
    } else {
        Outcome::Skipped
    };
    Decision::Act(Act {
        slot,
        outcome,
        missed: earlier,
        catch_up: outcome.runs() && (earlier > 0 || late > CATCH_UP_AFTER_MS),
    })
}

#[cfg(test)]
mod tests;
