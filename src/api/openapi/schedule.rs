//! The schedule's rules as a schema: a request the schema allows is one the API accepts.
//!
//! The schema states a subset of what the API takes (plain values and `*/n` in each cron field,
//! days of the month up to 28, durations of one unit), so that everything it allows is valid:
//! ranges, names, days 29 to 31 and durations such as `1h 30m` are accepted too.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

/// One cron field: `*`, `*/n`, or up to four values from `values`.
fn field(values: &str, steps: &str) -> String {
    format!("(\\*(/[{steps}])?|{values}(,{values}){{0,3}})")
}

/// 5-field crons (minute, hour, day of month up to 28, month, day of week) and macros.
fn cron_pattern() -> String {
    let minute = field("([0-9]|[1-5][0-9])", "1-9");
    let hour = field("([0-9]|1[0-9]|2[0-3])", "1-9");
    let day = field("([1-9]|1[0-9]|2[0-8])", "1-9");
    let month = field("([1-9]|1[0-2])", "1-9");
    let weekday = field("[0-6]", "1-6");
    format!(
        "^(@(yearly|annually|monthly|weekly|daily|hourly)|{minute} {hour} {day} {month} {weekday})$"
    )
}

/// A duration of one unit, at least a second.
const DURATION: &str = "^[1-9][0-9]{0,3}(s|m|h|d)$";

fn typed(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([t, Type::Null])
    } else {
        SchemaType::new(t)
    }
}

/// The properties of a schedule, without `skip` (the cadence another variant holds); every
/// value nullable in a merge patch.
fn properties(patch: bool, skip: Option<&str>) -> ObjectBuilder {
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
    let mut object = ObjectBuilder::new()
        .schema_type(typed(Type::Object, patch))
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ));
    let fields = [
        (
            "cron",
            ObjectBuilder::new()
                .schema_type(typed(Type::String, patch))
                .pattern(Some(cron_pattern()))
                .description(Some(
                    "5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, \
                     @weekly, @monthly, @yearly; no seconds, no years, never a date that does \
                     not exist (30 February)",
                )),
        ),
        (
            "every",
            ObjectBuilder::new()
                .schema_type(typed(Type::String, patch))
                .pattern(Some(DURATION))
                .description(Some(
                    "An interval of at least 1s, counted from when the schedule was set",
                )),
        ),
        (
            "time_zone",
            ObjectBuilder::new()
                .schema_type(typed(Type::String, patch))
                .enum_values(Some(zones))
                .description(Some("IANA time zone the cron is read in; default UTC")),
        ),
        (
            "overlap",
            ObjectBuilder::new()
                .schema_type(typed(Type::String, patch))
                .enum_values(Some(["skip", "replace"]))
                .description(Some(
                    "A slot while a run goes: skip it (default, recorded) or replace the run",
                )),
        ),
        (
            "starting_deadline",
            ObjectBuilder::new()
                .schema_type(typed(Type::String, patch))
                .pattern(Some(DURATION))
                .description(Some(
                    "A slot decided later than this after it was due is missed",
                )),
        ),
        (
            "suspend",
            ObjectBuilder::new()
                .schema_type(typed(Type::Boolean, patch))
                .description(Some(
                    "While true, slots pass without a run; none is caught up",
                )),
        ),
    ];
    for (name, schema) in fields {
        if Some(name) != skip {
            object = object.property(name, schema);
        }
    }
    object
}

/// A schedule: exactly one of `cron` and `every`, or null for none. In a merge patch, any field (null removes
/// it), or null for no schedule.
pub(super) fn schedule_schema(patch: bool) -> Schema {
    if patch {
        return Schema::Object(
            properties(true, None)
                .description(Some(
                    "Schedule fields to set, or to remove (null), merged into the schedule \
                     (which must then have exactly one of cron and every); null removes it",
                ))
                .build(),
        );
    }
    Schema::OneOf(
        OneOfBuilder::new()
            .item(properties(false, Some("every")).required("cron").build())
            .item(properties(false, Some("cron")).required("every").build())
            .item(ObjectBuilder::new().schema_type(Type::Null).build())
            .description(Some(
                "A schedule: exactly one of cron and every; null for none",
            ))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crons_the_pattern_allows_are_accepted() {
        let text = cron_pattern();
        let pattern = regex_lite(&text);
        for cron in [
            "*/5 1,2 28 12 6",
            "59 23 */9 */9 */6",
            "@annually",
            "0 0 1 1 0",
        ] {
            assert!(pattern(cron), "{cron}");
            let rule = crate::model::recurrence::Rule {
                cron: Some(cron.into()),
                every: None,
                time_zone: "UTC".into(),
                overlap: Default::default(),
                starting_deadline: None,
                suspend: false,
            };
            assert!(rule.compile(0).is_ok(), "{cron}");
        }
        for cron in ["0 0 30 2 *", "* * * * * *", "60 * * * *"] {
            assert!(!pattern(cron), "{cron}");
        }
    }

    /// The pattern, anchored, as a predicate (the spec's regex dialect is the common subset).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + '_ {
        let re = regex::Regex::new(pattern).expect("pattern");
        move |text| re.is_match(text)
    }
}
