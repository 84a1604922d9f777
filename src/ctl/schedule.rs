//! Recurring crawls from the terminal: a schedule given at `create`, `suspend` and `resume`,
//! and a task's `runs`.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::args::{Format, ScheduleArgs};
use super::client::{Client, CtlError, segment};
use super::show::{self, text};

impl ScheduleArgs {
    /// The API's `schedule`, if a cadence is given; a refinement without one is a usage error.
    pub fn body(&self) -> Result<Option<Value>, CtlError> {
        let mut fields = Map::new();
        let given = [
            ("cron", &self.cron),
            ("every", &self.every),
            ("time_zone", &self.time_zone),
            ("overlap", &self.overlap),
            ("starting_deadline", &self.starting_deadline),
        ];
        for (key, value) in given {
            if let Some(v) = value {
                fields.insert(key.to_owned(), json!(v));
            }
        }
        if self.suspend {
            fields.insert("suspend".to_owned(), json!(true));
        }
        match (
            self.cron.is_some() || self.every.is_some(),
            fields.is_empty(),
        ) {
            (true, _) => Ok(Some(Value::Object(fields))),
            (false, true) => Ok(None),
            (false, false) => Err(CtlError::Usage("a schedule needs --cron or --every".into())),
        }
    }
}

/// `suspend NAME` or `resume NAME`: a merge patch of the schedule, and nothing when it is so
/// already.
pub async fn set_suspended(client: &Client, name: &str, suspend: bool) -> Result<String, CtlError> {
    let path = format!("/api/v1/resources/{}", segment(name));
    let resource = client.get(&path).await?;
    let Some(schedule) = resource.get("schedule") else {
        return Err(CtlError::Usage(format!("resource/{name} has no schedule")));
    };
    let verb = if suspend { "suspended" } else { "resumed" };
    if schedule["suspend"] == suspend {
        return Ok(format!("resource/{name} unchanged: already {verb}"));
    }
    let body = json!({ "schedule": { "suspend": suspend } });
    client.json(Method::PATCH, &path, Some(&body)).await?;
    Ok(format!("resource/{name} {verb}"))
}

/// `runs NAME`: the last runs, newest last, and the slots passed without one.
pub async fn runs(client: &Client, name: &str, format: Format) -> Result<String, CtlError> {
    let path = format!("/api/v1/resources/{}/runs", segment(name));
    let runs = client.get(&path).await?;
    if matches!(format, Format::Json | Format::Yaml) {
        return show::encode(&runs, format);
    }
    let rows = runs["items"].as_array().into_iter().flatten().map(|r| {
        let took = r["duration_ms"].as_i64().map_or_else(
            || "-".to_owned(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        vec![
            text(&r["epoch"]),
            text(&r["started_at"]),
            text(&r["reason"]),
            text(&r["worker"]),
            took,
            text(&r["state"]),
            text(&r["exit_code"]),
            text(&r["summary"]),
        ]
    });
    let mut out = show::aligned(
        &[
            "EPOCH", "STARTED", "REASON", "WORKER", "TOOK", "STATE", "EXIT", "SUMMARY",
        ],
        rows,
    );
    for p in runs["passed"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} slot(s) from {}\n",
            text(&p["outcome"]),
            text(&p["count"]),
            text(&p["slot"])
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_a_schedule_only_with_a_cadence() {
        let none = ScheduleArgs::default();
        assert!(matches!(none.body(), Ok(None)));
        let every = ScheduleArgs {
            every: Some("30m".into()),
            overlap: Some("replace".into()),
            suspend: true,
            ..ScheduleArgs::default()
        };
        assert_eq!(
            every.body().ok().flatten(),
            Some(json!({"every": "30m", "overlap": "replace", "suspend": true}))
        );
        let lost = ScheduleArgs {
            time_zone: Some("Europe/Paris".into()),
            ..ScheduleArgs::default()
        };
        assert!(matches!(lost.body(), Err(CtlError::Usage(_))));
    }
}
