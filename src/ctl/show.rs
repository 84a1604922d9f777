//! How `crawler ctl` prints what the API answers: aligned tables (`table`, `wide`) built with
//! comfy-table, or the API's own objects as JSON or YAML, so that a script can read back
//! exactly what the API said.

use std::collections::BTreeMap;

use comfy_table::{Table, presets};
use serde_json::Value;

use super::args::{Format, Kind};
use super::client::CtlError;

/// A list of `kind` objects in `format`.
pub fn list(kind: Kind, items: &[Value], format: Format) -> Result<String, CtlError> {
    match format {
        Format::Json | Format::Yaml => encode(&serde_json::json!({ "items": items }), format),
        Format::Table | Format::Wide => Ok(table(kind, items, format == Format::Wide)),
    }
}

/// One `kind` object in `format`.
pub fn one(kind: Kind, item: &Value, format: Format) -> Result<String, CtlError> {
    match format {
        Format::Json | Format::Yaml => encode(item, format),
        Format::Table | Format::Wide => Ok(table(
            kind,
            std::slice::from_ref(item),
            format == Format::Wide,
        )),
    }
}

/// A document as pretty JSON or YAML (for a table format: JSON).
pub fn encode(value: &Value, format: Format) -> Result<String, CtlError> {
    let text = if format == Format::Yaml {
        serde_yaml_ng::to_string(value).map_err(|e| CtlError::Failed(e.to_string()))?
    } else {
        serde_json::to_string_pretty(value).map_err(|e| CtlError::Failed(e.to_string()))? + "\n"
    };
    Ok(text)
}

/// The column names of `kind`'s table.
pub fn header(kind: Kind, wide: bool) -> Vec<&'static str> {
    let mut columns = match kind {
        Kind::Workers => vec!["NAME", "STATE", "LOAD", "CAPACITY", "ADDRESS"],
        Kind::Resources => vec!["NAME", "STATE", "WORKER", "RESTARTS", "AGE"],
    };
    if wide {
        columns.extend(match kind {
            Kind::Workers => ["VERSION", "METADATA"].as_slice(),
            Kind::Resources => ["ID", "EPOCH", "LABELS", "SCHEDULE", "MESSAGE"].as_slice(),
        });
    }
    columns
}

/// A JSON value as a cell shows it: a string bare, null as `-`, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// One object's cells, in [`header`]'s order.
pub fn row(kind: Kind, item: &Value, wide: bool) -> Vec<String> {
    let status = &item["status"];
    let mut cells = match kind {
        Kind::Workers => vec![
            text(&item["id"]),
            text(&item["state"]),
            text(&item["load"]),
            text(&item["capacity"]),
            text(&item["address"]),
        ],
        Kind::Resources => vec![
            text(&item["name"]),
            text(&status["state"]),
            text(&item["assigned_node"]["id"]),
            status["restarts"].as_u64().unwrap_or(0).to_string(),
            item["creation_time"]
                .as_str()
                .map_or_else(|| "-".to_owned(), age),
        ],
    };
    if wide {
        match kind {
            Kind::Workers => cells.extend([text(&item["version"]), pairs(&item["metadata"])]),
            Kind::Resources => cells.extend([
                text(&item["id"]),
                text(&status["epoch"]),
                pairs(&item["labels"]),
                schedule(&item["schedule"]),
                text(&status["message"]),
            ]),
        }
    }
    cells
}

/// A schedule as a cell: its cadence and what comes next.
fn schedule(s: &Value) -> String {
    if s.is_null() {
        return "-".to_owned();
    }
    let cadence = match (s["cron"].as_str(), s["every"].as_str()) {
        (Some(cron), _) => cron.to_owned(),
        (None, Some(every)) => format!("every {every}"),
        (None, None) => "-".to_owned(),
    };
    if s["suspend"] == true {
        format!("{cadence} (suspended)")
    } else {
        format!("{cadence} (next {})", text(&s["next_run_at"]))
    }
}

/// A table of `items` with a header.
fn table(kind: Kind, items: &[Value], wide: bool) -> String {
    aligned(
        &header(kind, wide),
        items.iter().map(|item| row(kind, item, wide)),
    )
}

/// Rows under a header, in aligned columns with no borders, as kubectl prints them.
pub fn aligned(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    // comfy-table pads every cell by a space on each side: trimmed, rows start at column 0.
    table
        .lines()
        .map(|line| line.trim().to_owned() + "\n")
        .collect()
}

/// `k=v,k2=v2`, or `-` for none.
fn pairs(map: &Value) -> String {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return "-".to_owned();
    };
    map.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// How long ago an RFC 3339 time was, in its largest unit: `42s`, `5m`, `3h`, `2d`.
pub fn age(time: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(time.trim_end_matches('Z')) else {
        return "-".to_owned();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    short_duration(secs)
}

fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A label selector: `team=a,tier!=low,urgent,!archived` (equal, not equal, has, lacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    Differs(String, String),
    Has(String),
    Lacks(String),
}

impl Selector {
    /// Parses a selector; a malformed one is a usage error.
    pub fn parse(text: &str) -> Result<Self, CtlError> {
        let bad = |term: &str| {
            CtlError::Usage(format!(
                "selector term {term:?}: expected key=value, key!=value, key or !key"
            ))
        };
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim) {
            let parsed = if let Some((k, v)) = term.split_once("!=") {
                Term::Differs(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Term::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = term.strip_prefix('!') {
                Term::Lacks(k.trim().to_owned())
            } else {
                Term::Has(term.to_owned())
            };
            let key = match &parsed {
                Term::Equals(k, _) | Term::Differs(k, _) | Term::Has(k) | Term::Lacks(k) => k,
            };
            if key.is_empty() || key.contains(['=', '!', ' ']) {
                return Err(bad(term));
            }
            terms.push(parsed);
        }
        Ok(Self(terms))
    }

    /// Whether a resource's labels match every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|term| match term {
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::Differs(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
            Term::Lacks(k) => !labels.contains_key(k),
        })
    }

    /// Whether a resource object's labels match.
    pub fn matches_object(&self, item: &Value) -> bool {
        let labels = item["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match_like_kubectls() {
        let s = Selector::parse("team=a, tier!=low,urgent,!archived").expect("parses");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(s.matches(&labels(&[("team", "a"), ("urgent", "")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("urgent", ""), ("tier", "low")])));
        assert!(!s.matches(&labels(&[("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("team", "a"),
            ("urgent", "y"),
            ("archived", "1")
        ])));
        assert!(
            Selector::parse("team==a")
                .expect("==")
                .matches(&labels(&[("team", "a")]))
        );
        for bad in ["", "=a", "!", "a b", "team,,x"] {
            assert!(
                matches!(Selector::parse(bad), Err(CtlError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tables_have_a_header_and_one_row_per_object() {
        let items = [serde_json::json!({
            "name": "a", "id": "7", "assigned_node": {"id": "w-1"},
            "creation_time": "2020-01-01T00:00:00Z", "labels": {"team": "x"},
            "status": {"state": "running", "restarts": 2, "epoch": 9, "message": "ok"}
        })];
        let text = list(Kind::Resources, &items, Format::Wide).expect("table");
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], header(Kind::Resources, true));
        assert_eq!(lines[1][..4], ["a", "running", "w-1", "2"]);
        assert!(lines[1][4].ends_with('d'), "{:?}", lines[1]);
        assert_eq!(lines[1][5..], ["7", "9", "team=x", "-", "ok"]);
        let every = serde_json::json!({"every": "30s", "suspend": false, "next_run_at": "soon"});
        assert_eq!(schedule(&every), "every 30s (next soon)");
        let cron = serde_json::json!({"cron": "@daily", "suspend": true});
        assert_eq!(schedule(&cron), "@daily (suspended)");
        let json = list(Kind::Resources, &items, Format::Json).expect("json");
        let back: Value = serde_json::from_str(&json).expect("parses");
        assert_eq!(back["items"][0]["name"], "a");
        let yaml = one(Kind::Resources, &items[0], Format::Yaml).expect("yaml");
        let back: Value = serde_yaml_ng::from_str(&yaml).expect("parses");
        assert_eq!(back, items[0]);
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(short_duration(42), "42s");
        assert_eq!(short_duration(300), "5m");
        assert_eq!(short_duration(3 * 3_600 + 5), "3h");
        assert_eq!(short_duration(2 * 86_400), "2d");
        assert_eq!(age("not a time"), "-");
    }
}
