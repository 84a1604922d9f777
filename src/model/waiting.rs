//! Why a task waits for a worker, in words an operator acts on: "no worker matches region=eu
//! (3 workers have region=us)", "all 2 matching workers are full", "the matching worker is
//! cordoned". Pure, so the leader's metrics and every master's views say the same.

use std::collections::BTreeSet;

use crate::model::constraints::{Constraints, DEDICATED_LABEL, Labels, tolerates};

/// What the placement knows of one present worker.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its labels.
    pub labels: &'a Labels,
    /// True while cordoned.
    pub cordoned: bool,
    /// True when it has room for one more task.
    pub room: bool,
}

/// Why a task that needs a worker has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wait {
    /// No worker is present.
    NoWorkers,
    /// No present worker matches its selector.
    NoMatch,
    /// The workers it matches are dedicated to something it does not tolerate.
    Dedicated,
    /// Every worker it may use is cordoned.
    Cordoned,
    /// Every worker it may use is full.
    Full,
    /// A worker has room: it is placed at the next pass (or waits its turn at the rate limit).
    Queued,
    /// Its worker left, and the grace period has not run out.
    Grace,
}

impl Wait {
    /// Every kind, for metrics.
    pub const ALL: [Wait; 7] = [
        Wait::NoWorkers,
        Wait::NoMatch,
        Wait::Dedicated,
        Wait::Cordoned,
        Wait::Full,
        Wait::Queued,
        Wait::Grace,
    ];

    /// The kind's name in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::NoWorkers => "no_workers",
            Wait::NoMatch => "no_match",
            Wait::Dedicated => "dedicated",
            Wait::Cordoned => "cordoned",
            Wait::Full => "full",
            Wait::Queued => "queued",
            Wait::Grace => "grace",
        }
    }
}

/// Why a task with constraints `c` waits, among `workers`, and the sentence that says so.
pub fn explain<'a>(
    c: &Constraints,
    workers: impl IntoIterator<Item = Candidate<'a>>,
) -> (Wait, String) {
    let workers: Vec<Candidate<'a>> = workers.into_iter().collect();
    if workers.is_empty() {
        return (Wait::NoWorkers, "no worker is registered".into());
    }
    let selected: Vec<&Candidate<'a>> = workers
        .iter()
        .filter(|w| c.selector.matches(w.labels))
        .collect();
    if selected.is_empty() {
        return (Wait::NoMatch, no_match(c, &workers));
    }
    let usable: Vec<&&Candidate<'a>> = selected
        .iter()
        .filter(|w| tolerates(&c.tolerations, w.labels))
        .collect();
    if usable.is_empty() {
        let dedications: BTreeSet<&str> = selected
            .iter()
            .filter_map(|w| w.labels.get(DEDICATED_LABEL).map(String::as_str))
            .collect();
        return (
            Wait::Dedicated,
            format!(
                "{} dedicated to {}, which it does not tolerate",
                matching(selected.len()),
                dedications.into_iter().collect::<Vec<_>>().join(", "),
            ),
        );
    }
    if usable.iter().any(|w| w.room && !w.cordoned) {
        return (
            Wait::Queued,
            "a matching worker has room: it is placed in turn".into(),
        );
    }
    let open: Vec<_> = usable.iter().filter(|w| !w.cordoned).collect();
    if open.is_empty() {
        return (
            Wait::Cordoned,
            if usable.len() == 1 {
                "the matching worker is cordoned".into()
            } else {
                format!("all {} matching workers are cordoned", usable.len())
            },
        );
    }
    let cordoned = usable.len() - open.len();
    let mut text = if open.len() == 1 {
        "the matching worker is full".to_owned()
    } else {
        format!("all {} matching workers are full", open.len())
    };
    if cordoned > 0 {
        text.push_str(&format!(" ({cordoned} more cordoned)"));
    }
    (Wait::Full, text)
}

fn matching(n: usize) -> String {
    if n == 1 {
        "the matching worker is".into()
    } else {
        format!("all {n} matching workers are")
    }
}

/// "no worker matches region=eu (3 workers have region=us)": the values the workers do have
/// for the first key the selector names that some worker has.
fn no_match(c: &Constraints, workers: &[Candidate<'_>]) -> String {
    let mut text = format!("no worker matches {}", c.selector.describe());
    for key in c.selector.keys() {
        let with: Vec<&str> = workers
            .iter()
            .filter_map(|w| w.labels.get(key).map(String::as_str))
            .collect();
        if with.is_empty() {
            continue;
        }
        let values: BTreeSet<&str> = with.iter().copied().collect();
        let shown: Vec<String> = values
            .iter()
            .take(3)
            .map(|v| format!("{key}={v}"))
            .collect();
        let more = if values.len() > 3 { ", ..." } else { "" };
        let have = if with.len() == 1 { "has" } else { "have" };
        let n = with.len();
        let workers = if n == 1 { "worker" } else { "workers" };
        text.push_str(&format!(
            " ({n} {workers} {have} {}{more})",
            shown.join(", ")
        ));
        return text;
    }
    let key = c.selector.keys().next().unwrap_or_default();
    text.push_str(&format!(" (no worker has {key})"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::constraints::Selector;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn eu() -> Constraints {
        Constraints {
            selector: Selector {
                match_labels: labels(&[("region", "eu")]),
                ..Selector::default()
            },
            ..Constraints::default()
        }
    }

    #[test]
    fn says_what_the_workers_have_instead() {
        let us = labels(&[("region", "us")]);
        let none = labels(&[]);
        let fleet = [&us, &us, &us, &none].map(|l| Candidate {
            labels: l,
            cordoned: false,
            room: true,
        });
        let (wait, text) = explain(&eu(), fleet);
        assert_eq!(wait, Wait::NoMatch);
        assert_eq!(
            text,
            "no worker matches region=eu (3 workers have region=us)"
        );
        let (wait, text) = explain(&eu(), [fleet[3]]);
        assert_eq!(
            (wait, text.as_str()),
            (
                Wait::NoMatch,
                "no worker matches region=eu (no worker has region)"
            )
        );
        assert_eq!(explain(&eu(), []).0, Wait::NoWorkers);
    }

    #[test]
    fn full_cordoned_dedicated_and_queued() {
        let eu_l = labels(&[("region", "eu")]);
        let acme = labels(&[("region", "eu"), ("dedicated", "acme")]);
        let w = |l, cordoned, room| Candidate {
            labels: l,
            cordoned,
            room,
        };
        let full = explain(&eu(), [w(&eu_l, false, false), w(&eu_l, false, false)]);
        assert_eq!(full, (Wait::Full, "all 2 matching workers are full".into()));
        let cordoned = explain(&eu(), [w(&eu_l, true, true)]);
        assert_eq!(
            cordoned,
            (Wait::Cordoned, "the matching worker is cordoned".into())
        );
        let mixed = explain(&eu(), [w(&eu_l, true, true), w(&eu_l, false, false)]);
        assert_eq!(mixed.0, Wait::Full);
        assert!(mixed.1.ends_with("(1 more cordoned)"), "{}", mixed.1);
        let dedicated = explain(&eu(), [w(&acme, false, true)]);
        assert_eq!(
            dedicated,
            (
                Wait::Dedicated,
                "the matching worker is dedicated to acme, which it does not tolerate".into()
            )
        );
        let mut tolerant = eu();
        tolerant.tolerations = vec!["acme".into()];
        assert_eq!(explain(&tolerant, [w(&acme, false, true)]).0, Wait::Queued);
    }
}
