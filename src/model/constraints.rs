//! Where a task may run: what a resource asks of its worker, and how a worker's labels answer.
//!
//! A subset of Kubernetes' scheduling vocabulary that a crawl operator needs: a required
//! selector (equality and set-based, as `nodeSelector` and required node affinity), weighted
//! preferences (preferred affinity), spread of a group's tasks over a worker label's values
//! (topology spread), tolerations of dedicated workers (a taint, as a label), and a priority.
//! Pure: the placement and the API both judge with it, so the leader and every follower explain
//! a waiting task the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::intern::{Table, share};

/// Where a resource's constraints are kept in the stored JSON (a field the Go crawler ignores).
pub const PLACEMENT_FIELD: &str = "Placement";
static SHARED: LazyLock<Mutex<Table<Arc<Constraints>>>> = LazyLock::new(Mutex::default);

/// The shared copy of `c`: the resources that ask alike hold one.
pub fn shared(c: Constraints) -> Arc<Constraints> {
    share(&SHARED, &c, || Arc::new(c.clone()))
}

/// The constraints stored in a resource's field: `None` when they ask nothing or cannot be
/// read (then the field is kept as it is, and asks nothing).
pub fn stored(value: &Value) -> Option<Arc<Constraints>> {
    Constraints::deserialize(value)
        .ok()
        .filter(|c| !c.is_empty())
        .map(shared)
}

/// A worker labelled `dedicated=<x>` takes only tasks that tolerate `<x>`.
pub const DEDICATED_LABEL: &str = "dedicated";
/// Most expressions in one selector, and most preferences.
pub const MAX_TERMS: usize = 16;
/// Most values in one expression, and most tolerations.
pub const MAX_VALUES: usize = 64;
/// Highest priority (0 is the default and the lowest).
pub const MAX_PRIORITY: i32 = 1_000;
/// Largest weight of a preference, either way.
pub const MAX_WEIGHT: i32 = 100;
/// Longest label key or value a constraint names, in characters.
const MAX_TEXT: usize = 256;

/// A worker's labels: its registration's metadata.
pub type Labels = BTreeMap<String, String>;

/// How an expression tests a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The label is set to one of the values.
    In,
    /// The label is not set, or set to none of the values.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is not set.
    DoesNotExist,
}

/// One set-based requirement on a worker label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How it is tested.
    pub operator: Operator,
    /// The values, for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// Worker labels a task requires: every `match_labels` pair and every expression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Labels the worker must have, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// True when it selects every worker.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// True when a worker with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The selector in one line, as `kubectl` writes it: `region=eu,browser,tier in (a,b)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        parts.join(",")
    }

    /// The label keys it tests.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.match_labels
            .keys()
            .map(String::as_str)
            .chain(self.match_expressions.iter().map(|r| r.key.as_str()))
    }
}

/// A soft wish: a worker the selector matches scores `weight` (negative: avoid it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    /// −100 to 100, not 0.
    #[serde(deserialize_with = "whole")]
    pub weight: i32,
    /// The workers it speaks of.
    pub selector: Selector,
}

/// Spread the tasks that share resource label `by` (with this task's value) evenly over the
/// values of worker label `over`, e.g. a site's shards over regions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    /// The worker label whose values take equal shares.
    pub over: String,
    /// The resource label that makes a group.
    pub by: String,
}

/// What a resource asks of its worker. The default asks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Required: only workers it matches.
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
    /// Dedicated workers (`dedicated=<x>`) whose `<x>` this task may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<String>,
    /// Preferred: workers scored by weight; higher scores are chosen first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<Preference>,
    /// Preferred: spread over a worker label's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    /// Higher is placed first when room is short; 0 to 1000.
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "whole")]
    pub priority: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A whole number, also when written as one with a fraction of zero (`5.0`), which JSON
/// Schema's `integer` allows.
pub(crate) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX))
                .map(|f| f as i64)
        })
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number in range")))
}

pub use crate::model::invalid::Invalid;
use crate::model::invalid::invalid;

/// serde takes a struct from an array too (`[]` as an empty selector): a placement's objects
/// must be objects, as its schema says.
fn objects_are_objects(placement: &Value) -> Result<(), Invalid> {
    fn object(v: Option<&Value>, field: &'static str) -> Result<(), Invalid> {
        match v {
            None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(invalid(field, "must be an object")),
        }
    }
    fn selector(s: Option<&Value>, field: &'static str) -> Result<(), Invalid> {
        object(s, field)?;
        if let Some(Value::Array(terms)) = s.and_then(|s| s.get("match_expressions"))
            && terms.iter().any(|t| !t.is_object())
        {
            return Err(invalid(field, "each of match_expressions is an object"));
        }
        Ok(())
    }
    selector(placement.get("selector"), "placement.selector")?;
    if let Some(Value::Array(preferences)) = placement.get("preferences") {
        for p in preferences {
            object(Some(p), "placement.preferences")?;
            selector(p.get("selector"), "placement.preferences")?;
        }
    }
    object(placement.get("spread"), "placement.spread")
}

fn check_text(field: &'static str, what: &str, text: &str, empty_ok: bool) -> Result<(), Invalid> {
    let n = text.chars().count();
    if (n == 0 && !empty_ok) || n > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{what} {text:?} must be {} to {MAX_TEXT} characters, with no control characters",
                u8::from(!empty_ok)
            ),
        ));
    }
    Ok(())
}

fn check_selector(field: &'static str, s: &Selector) -> Result<(), Invalid> {
    if s.match_labels.len() > MAX_TERMS || s.match_expressions.len() > MAX_TERMS {
        return Err(invalid(
            field,
            format!("at most {MAX_TERMS} labels and {MAX_TERMS} expressions"),
        ));
    }
    for (k, v) in &s.match_labels {
        check_text(field, "a label key", k, false)?;
        check_text(field, "a label value", v, true)?;
    }
    for r in &s.match_expressions {
        check_text(field, "a label key", &r.key, false)?;
        let wants_values = matches!(r.operator, Operator::In | Operator::NotIn);
        if wants_values && r.values.is_empty() {
            return Err(invalid(
                field,
                format!("{:?} on {:?} needs at least one value", r.operator, r.key),
            ));
        }
        if !wants_values && !r.values.is_empty() {
            return Err(invalid(
                field,
                format!("{:?} on {:?} takes no values", r.operator, r.key),
            ));
        }
        if r.values.len() > MAX_VALUES {
            return Err(invalid(field, format!("at most {MAX_VALUES} values")));
        }
        for v in &r.values {
            check_text(field, "a label value", v, true)?;
        }
    }
    Ok(())
}

impl Constraints {
    /// Reads constraints a client gave (an object), checked.
    pub fn parse(value: &Value) -> Result<Self, Invalid> {
        if !value.is_object() {
            return Err(invalid("placement", "a placement is an object"));
        }
        objects_are_objects(value)?;
        let c: Self = serde_json::from_value(value.clone())
            .map_err(|e| invalid("placement", format!("not a placement: {e}")))?;
        c.check()?;
        Ok(c)
    }

    /// Checks the rules every field follows.
    pub fn check(&self) -> Result<(), Invalid> {
        check_selector("placement.selector", &self.selector)?;
        if self.tolerations.len() > MAX_VALUES {
            return Err(invalid(
                "placement.tolerations",
                format!("at most {MAX_VALUES} tolerations"),
            ));
        }
        for t in &self.tolerations {
            check_text("placement.tolerations", "a toleration", t, false)?;
        }
        if self.preferences.len() > MAX_TERMS {
            return Err(invalid(
                "placement.preferences",
                format!("at most {MAX_TERMS} preferences"),
            ));
        }
        for p in &self.preferences {
            if p.weight == 0 || p.weight.abs() > MAX_WEIGHT {
                return Err(invalid(
                    "placement.preferences",
                    format!(
                        "a weight is -{MAX_WEIGHT} to {MAX_WEIGHT}, not 0; got {}",
                        p.weight
                    ),
                ));
            }
            check_selector("placement.preferences", &p.selector)?;
        }
        if let Some(s) = &self.spread {
            check_text("placement.spread", "a label key", &s.over, false)?;
            check_text("placement.spread", "a label key", &s.by, false)?;
        }
        if !(0..=MAX_PRIORITY).contains(&self.priority) {
            return Err(invalid(
                "placement.priority",
                format!("a priority is 0 to {MAX_PRIORITY}; got {}", self.priority),
            ));
        }
        Ok(())
    }

    /// True when it asks nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// True when it limits which workers may take the task (a selector); dedicated workers
    /// are judged by [`Constraints::admits`] too.
    pub fn restricts(&self) -> bool {
        !self.selector.is_empty() || !self.tolerations.is_empty()
    }

    /// True when it bears on the choice of a worker (not a priority alone): the workers are
    /// then scanned and scored rather than taken least-loaded first.
    pub fn chooses(&self) -> bool {
        self.restricts() || !self.preferences.is_empty() || self.spread.is_some()
    }

    /// True when a worker with `labels` may take the task: the selector matches, and a
    /// dedicated worker's dedication is tolerated.
    pub fn admits(&self, labels: &Labels) -> bool {
        tolerates(&self.tolerations, labels) && self.selector.matches(labels)
    }

    /// The sum of the weights of the preferences a worker with `labels` matches.
    pub fn score(&self, labels: &Labels) -> i32 {
        self.preferences
            .iter()
            .filter(|p| p.selector.matches(labels))
            .map(|p| p.weight)
            .sum()
    }
}

/// True when `tolerations` let a task onto a worker with `labels`.
pub fn tolerates(tolerations: &[String], labels: &Labels) -> bool {
    labels
        .get(DEDICATED_LABEL)
        .is_none_or(|d| tolerations.iter().any(|t| t == d))
}

#[cfg(test)]
mod tests;
