//! Operating the fleet: cordon, uncordon and drain a worker, thaw a storm freeze, preview a
//! placement (writes, so followers forward them to the leader), and read a resource's
//! assignment history (from etcd, on any master). The scheduling state every master shows
//! comes from its cache of the schedule prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use super::{ApiError, AppState};
use crate::master::leader::WriteError;
use crate::model::schedule::{Assignment, Control, Record, Storm};

/// Most workers one preview may name.
const MAX_PREVIEW_WORKERS: usize = 1_000;
/// Most moves a preview lists (all are counted).
const MAX_PREVIEW_MOVES: usize = 1_000;

use super::status::rfc3339;

/// Longest drain deadline; a longer one counts as this.
pub const MAX_DEADLINE: Duration = Duration::from_secs(366 * 24 * 3600);

/// A drain, as shown with its worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainView {
    /// When it started, RFC 3339.
    pub since: String,
    /// When the remaining tasks move regardless of the rate, RFC 3339; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Tasks still assigned to the worker.
    pub remaining: usize,
    /// True once the worker holds no task.
    pub done: bool,
}

/// Operators' state of a worker: `ready`, `cordoned`, `draining` or `drained`, with details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlView {
    /// `ready` (takes new tasks), `cordoned` (takes none), `draining` (its tasks are moving
    /// away) or `drained` (a drain emptied it; still cordoned).
    #[schema(example = "ready")]
    pub state: &'static str,
    /// When it was cordoned, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cordoned_at: Option<String>,
    /// The drain, if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainView>,
}

/// The view of `control` for a worker holding `load` tasks.
pub fn control_view(control: Option<&Control>, load: usize) -> ControlView {
    let Some(c) = control else {
        return ControlView {
            state: "ready",
            cordoned_at: None,
            drain: None,
        };
    };
    let drain = c.drain.as_ref().map(|d| DrainView {
        since: rfc3339(d.since_ms),
        deadline: d.deadline_ms.map(rfc3339),
        remaining: load,
        done: load == 0,
    });
    let state = match &drain {
        None => "cordoned",
        Some(d) if d.done => "drained",
        Some(_) => "draining",
    };
    ControlView {
        state,
        cordoned_at: Some(rfc3339(c.cordoned_at_ms)),
        drain,
    }
}

/// Operators' controls by node id, from this master's cache.
pub fn controls(state: &AppState) -> BTreeMap<String, Control> {
    state.schedule.with(|objects, _| {
        objects
            .values()
            .filter_map(|e| match &*e.value {
                Record::Control(id, c) => Some((id.clone(), c.clone())),
                _ => None,
            })
            .collect()
    })
}

/// An absent worker in its grace period.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepartedView {
    /// Node id.
    pub id: String,
    /// When the leader saw it leave, RFC 3339.
    pub left_at: String,
    /// When its tasks may start moving (unless reassignment is frozen), RFC 3339.
    pub reassign_at: String,
    /// Tasks still assigned to it.
    pub tasks: usize,
}

/// The scheduling policy's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulingView {
    /// True while the storm guard freezes reassignment.
    pub frozen: bool,
    /// Why it froze (the last storm, if there was one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it froze, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The workers whose departure froze it.
    pub left: Vec<String>,
    /// When it thawed, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thawed_at: Option<String>,
    /// `operator` or `workers-returned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thawed_by: Option<String>,
    /// Absent workers whose tasks wait out the grace period.
    pub departed: Vec<DepartedView>,
    /// Cordoned workers (draining ones included).
    pub cordoned: usize,
}

/// The scheduling state as this master's cache holds it. Counts resources per worker only
/// when a departed worker needs them.
pub fn scheduling(state: &AppState) -> SchedulingView {
    scheduling_with(state, None)
}

/// [`scheduling`], with the loads per worker when the caller already has them.
pub fn scheduling_with(
    state: &AppState,
    loads: Option<&std::collections::HashMap<String, usize>>,
) -> SchedulingView {
    let (storm, departed, cordoned) = state.schedule.with(|objects, _| {
        let mut storm: Option<Storm> = None;
        let mut departed = Vec::new();
        let mut cordoned = 0;
        for e in objects.values() {
            match &*e.value {
                Record::Storm(s) => storm = Some(s.clone()),
                Record::Departed(id, d) => departed.push((id.clone(), d.at_ms)),
                Record::Control(..) => cordoned += 1,
            }
        }
        (storm, departed, cordoned)
    });
    let counted;
    let loads = match loads {
        Some(loads) => loads,
        None => {
            counted = if departed.is_empty() {
                Default::default()
            } else {
                super::workers::loads(state)
            };
            &counted
        }
    };
    let grace = i64::try_from(state.scheduling.reassign_after.as_millis()).unwrap_or(i64::MAX);
    let departed = departed
        .into_iter()
        .filter(|(id, _)| loads.get(id).copied().unwrap_or(0) > 0)
        .map(|(id, at)| DepartedView {
            left_at: rfc3339(at),
            reassign_at: rfc3339(at.saturating_add(grace)),
            tasks: loads.get(&id).copied().unwrap_or(0),
            id,
        })
        .collect();
    SchedulingView {
        frozen: storm.as_ref().is_some_and(|s| s.frozen),
        reason: storm.as_ref().map(|s| s.reason.clone()),
        since: storm.as_ref().map(|s| rfc3339(s.since_ms)),
        left: storm.as_ref().map(|s| s.left.clone()).unwrap_or_default(),
        thawed_at: storm.as_ref().and_then(|s| s.thawed_at_ms).map(rfc3339),
        thawed_by: storm.as_ref().and_then(|s| s.thawed_by.clone()),
        departed,
        cordoned,
    }
}

fn worker_error(state: &AppState, id: &str, error: WriteError) -> ApiError {
    match error {
        WriteError::UnknownWorker(_) => ApiError::NotFound {
            what: "worker",
            name: id.chars().take(200).collect(),
        },
        other => state.write_error(id, other),
    }
}

/// The answer to cordon, uncordon and drain: the worker's id and operators' state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlAnswer {
    /// Node id.
    pub id: String,
    /// Its state.
    #[serde(flatten)]
    pub control: ControlView,
}

fn answer(state: &AppState, id: &str, control: Option<&Control>) -> Json<ControlAnswer> {
    let load = super::workers::loads(state).get(id).copied().unwrap_or(0);
    Json(ControlAnswer {
        id: id.to_owned(),
        control: control_view(control, load),
    })
}

/// Cordons a worker: it takes no new task; what it holds stays.
#[utoipa::path(post, path = "/api/v1/workers/{id}/cordon", tag = "workers", operation_id = "cordon_worker",
    params(("id" = String, Path, description = "Node id of a registered worker")),
    responses(
        (status = 200, description = "Cordoned", body = ControlAnswer),
        (status = 404, description = "No such worker", body = super::Problem, content_type = "application/problem+json")))]
pub async fn cordon(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ControlAnswer>, ApiError> {
    let control = state
        .leader
        .cordon(&id)
        .await
        .map_err(|e| worker_error(&state, &id, e))?;
    Ok(answer(&state, &id, Some(&control)))
}

/// Lifts a worker's cordon, and stops its drain.
#[utoipa::path(post, path = "/api/v1/workers/{id}/uncordon", tag = "workers", operation_id = "uncordon_worker",
    params(("id" = String, Path, description = "Node id of a registered or cordoned worker")),
    responses(
        (status = 200, description = "Ready again", body = ControlAnswer),
        (status = 404, description = "No such worker", body = super::Problem, content_type = "application/problem+json")))]
pub async fn uncordon(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ControlAnswer>, ApiError> {
    state
        .leader
        .uncordon(&id)
        .await
        .map_err(|e| worker_error(&state, &id, e))?;
    Ok(answer(&state, &id, None))
}

/// A drain request. The body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// How long until the remaining tasks move regardless of the reassignment rate: a
    /// duration such as `90s`, `5m` or `1h 30m`, or a whole number of seconds (longer than
    /// 366 days counts as 366 days). Without one, the drain goes at the rate until done.
    #[schema(value_type = Option<String>, example = "5m")]
    pub deadline: Option<serde_json::Value>,
}

/// The rule for a deadline written as text: components such as `90s`, `5m`, `1h 30m`
/// (units ns, us, ms, s, m, h, d, w), at most 64 characters.
pub const DEADLINE_PATTERN: &str =
    "^[0-9]{1,9}(ns|us|ms|s|m|h|d|w)( ?[0-9]{1,9}(ns|us|ms|s|m|h|d|w))*$";
/// Longest deadline text.
pub const DEADLINE_MAX_LEN: usize = 64;

/// A duration written as [`DEADLINE_PATTERN`] says, or `None`.
pub fn parse_duration_text(text: &str) -> Option<Duration> {
    if text.is_empty() || text.len() > DEADLINE_MAX_LEN {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let unit = match &rest[..letters] {
            "ns" => Duration::from_nanos(1),
            "us" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => return None,
        };
        total = total.saturating_add(unit.saturating_mul(u32::try_from(value).ok()?));
        rest = &rest[letters..];
        if rest.is_empty() {
            return Some(total);
        }
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
}

/// The deadline of a drain request: text such as `90s` (see [`DEADLINE_PATTERN`]) or a whole,
/// non-negative number of seconds. Anything else is a 400 naming `deadline`.
pub fn parse_deadline(value: Option<&serde_json::Value>) -> Result<Option<Duration>, ApiError> {
    let bad = |detail: String| ApiError::bad_field("deadline", detail);
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            // JSON Schema counts 344.0 as an integer: any whole number of seconds.
            // The schema says int64: 2^63 and more are refused.
            let too_large = match n.as_u64() {
                Some(u) => i64::try_from(u).is_err(),
                None => n.as_f64().is_some_and(|f| f >= 9_223_372_036_854_775_808.0),
            };
            if too_large {
                return Err(bad("deadline is larger than an int64".into()));
            }
            let secs = n.as_u64().map(|u| u as f64).or_else(|| n.as_f64());
            match secs {
                Some(s) if s < 0.0 => Err(bad("deadline must not be negative".into())),
                // Past the cap every value counts as the cap: no need to ask whether it is whole
                // (a large one may not parse to exactly the integer it was written as).
                Some(s) if s >= MAX_DEADLINE.as_secs_f64() => Ok(Some(MAX_DEADLINE)),
                Some(s) if s.fract() == 0.0 => Ok(Some(Duration::from_secs_f64(
                    s.min(MAX_DEADLINE.as_secs_f64()),
                ))),
                _ => Err(bad("deadline must be a whole number of seconds".into())),
            }
        }
        Some(serde_json::Value::String(text)) => parse_duration_text(text)
            .map(|d| Some(d.min(MAX_DEADLINE)))
            .ok_or_else(|| {
                let shown: String = text.chars().take(40).collect();
                if shown.trim_start().starts_with('-') {
                    bad("deadline must not be negative".into())
                } else {
                    bad(format!(
                        "deadline {shown:?} is not a duration such as 90s, 5m or 1h 30m"
                    ))
                }
            }),
        Some(_) => Err(bad(
            "deadline must be a duration such as \"90s\" or a number of seconds".into(),
        )),
    }
}

/// Drains a worker: it is cordoned and its tasks move to other workers at the reassignment
/// rate (all of them once the deadline passes). The drain is done when the worker holds none.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", operation_id = "drain_worker",
    params(("id" = String, Path, description = "Node id of a registered worker")),
    request_body(content = DrainRequest, description = "Optional: a deadline", content_type = "application/json"),
    responses(
        (status = 200, description = "Draining", body = ControlAnswer),
        (status = 400, description = "The deadline is negative or not a duration", body = super::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such worker", body = super::Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = super::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body that is not a drain request", body = super::Problem, content_type = "application/problem+json")))]
pub async fn drain(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Result<Json<ControlAnswer>, ApiError> {
    let request = optional_json::<DrainRequest>(&state, req).await?;
    let deadline = parse_deadline(request.deadline.as_ref())?;
    let control = state
        .leader
        .drain(&id, deadline)
        .await
        .map_err(|e| worker_error(&state, &id, e))?;
    Ok(answer(&state, &id, Some(&control)))
}

/// A JSON body when there is one (any Content-Type is fine for none), else the default.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    req: Request,
) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.http.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
    Ok(value)
}

/// Ends a storm freeze now; reassignment resumes at the reassignment rate. Without a freeze,
/// nothing changes.
#[utoipa::path(post, path = "/api/v1/cluster/thaw", tag = "cluster", operation_id = "thaw_cluster",
    responses((status = 200, description = "Not frozen (any more)", body = SchedulingView)))]
pub async fn thaw(State(state): State<AppState>) -> Result<Json<SchedulingView>, ApiError> {
    let storm = state
        .leader
        .thaw()
        .await
        .map_err(|e| state.write_error("", e))?;
    let mut view = scheduling(&state);
    // This master's cache may not have the write yet: the answer shows what was written.
    if let Some(s) = storm {
        view.frozen = s.frozen;
        view.thawed_at = s.thawed_at_ms.map(rfc3339);
        view.thawed_by = s.thawed_by;
    }
    Ok(Json(view))
}

/// What to preview.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Workers to drain (node ids).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub drain: Vec<String>,
    /// Workers to take away for good (node ids).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub remove: Vec<String>,
}

/// One planned move.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedMove {
    /// Resource name.
    pub name: String,
    /// The worker it leaves (null: it has none).
    pub from: Option<String>,
    /// The worker it would go to.
    pub to: String,
    /// `drained`, `worker-left` or `created`.
    pub reason: &'static str,
}

/// What would move where.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewAnswer {
    /// Moves, at most 1,000 (see `total`).
    pub moves: Vec<PlannedMove>,
    /// All planned moves.
    pub total: usize,
    /// Planned moves per receiving worker.
    pub to: BTreeMap<String, usize>,
    /// Resources that would find no worker with room.
    pub unplaced: usize,
}

/// What would move where if the named workers were drained or removed, as the leader's
/// placement code plans it, without moving anything.
#[utoipa::path(post, path = "/api/v1/placement/preview", tag = "cluster", operation_id = "preview_placement",
    request_body(content = PreviewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The plan", body = PreviewAnswer),
        (status = 400, description = "A named worker is unknown, or too many are named", body = super::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = super::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a preview request", body = super::Problem, content_type = "application/problem+json")))]
pub async fn preview(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<Json<PreviewAnswer>, ApiError> {
    for (field, list) in [("drain", &request.drain), ("remove", &request.remove)] {
        if list.len() > MAX_PREVIEW_WORKERS {
            return Err(ApiError::bad_field(field, "at most 1000 workers"));
        }
    }
    let plan = state
        .leader
        .preview(&request.drain, &request.remove)
        .map_err(|e| match e {
            WriteError::UnknownWorker(id) => {
                let field = if request.drain.contains(&id) {
                    "drain"
                } else {
                    "remove"
                };
                ApiError::bad_field(
                    field,
                    format!(
                        "no worker {:?} is registered or holds tasks",
                        id.chars().take(200).collect::<String>()
                    ),
                )
            }
            other => state.write_error("", other),
        })?;
    let mut to = BTreeMap::new();
    for m in &plan.moves {
        *to.entry(m.to.worker.clone()).or_insert(0) += 1;
    }
    let total = plan.moves.len();
    let moves = plan
        .moves
        .into_iter()
        .take(MAX_PREVIEW_MOVES)
        .map(|m| PlannedMove {
            name: m.name,
            from: m.from,
            to: m.to.worker,
            reason: m.reason.as_str(),
        })
        .collect();
    Ok(Json(PreviewAnswer {
        moves,
        total,
        to,
        unplaced: plan.unplaced,
    }))
}

/// A resource's assignment history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// Resource name.
    pub name: String,
    /// The last 20 assignments, oldest first.
    pub items: Vec<HistoryItem>,
}

/// One assignment.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// `created`, `worker-left`, `drained`, `rebalanced`, `pinned` or `restarted`.
    pub reason: &'static str,
    /// When, RFC 3339.
    pub at: String,
    /// The worker it left.
    pub from: Option<String>,
    /// The worker it went to (null: none had room).
    pub to: Option<String>,
}

/// The last 20 assignments of a resource, with their reasons; they survive leader changes.
#[utoipa::path(get, path = "/api/v1/resources/{name}/history", tag = "resources", operation_id = "resource_history",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 200, description = "Its history", body = HistoryView),
        (status = 404, description = "No such resource", body = super::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Name breaks the rules", body = super::Problem, content_type = "application/problem+json"),
        (status = 503, description = "etcd did not answer", body = super::Problem, content_type = "application/problem+json")))]
pub async fn history(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<HistoryView>, ApiError> {
    let name = super::resources::checked_name(&raw)?;
    let stored = state
        .leader
        .history(name)
        .await
        .map_err(|e| state.write_error(name, e))?;
    let Some(items) = stored else {
        return Err(ApiError::NotFound {
            what: "resource",
            name: name.to_owned(),
        });
    };
    Ok(Json(HistoryView {
        name: name.to_owned(),
        items: items.into_iter().map(item).collect(),
    }))
}

fn item(a: Assignment) -> HistoryItem {
    HistoryItem {
        reason: a.reason.as_str(),
        at: rfc3339(a.at_ms),
        from: a.from,
        to: a.to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deadlines_parse_or_name_the_field() {
        let ok = |v: serde_json::Value| parse_deadline(Some(&v)).expect("ok");
        assert_eq!(ok(serde_json::json!("90s")), Some(Duration::from_secs(90)));
        assert_eq!(
            ok(serde_json::json!("1h 30m")),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(
            ok(serde_json::json!("1h30m")),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(ok(serde_json::json!(45)), Some(Duration::from_secs(45)));
        assert_eq!(ok(serde_json::json!(344.0)), Some(Duration::from_secs(344)));
        // schemathesis sent this: serde_json parses it to a float a hair off the integer.
        let large: serde_json::Value =
            serde_json::from_str("2036819993370577.0").expect("a number");
        assert_eq!(ok(large), Some(MAX_DEADLINE));
        assert_eq!(
            ok(serde_json::json!(9_000_000_000_000_000_000u64)),
            Some(MAX_DEADLINE)
        );
        assert_eq!(ok(serde_json::json!("999999999w")), Some(MAX_DEADLINE));
        assert_eq!(ok(serde_json::Value::Null), None);
        assert_eq!(parse_deadline(None).expect("none"), None);
        for bad in [
            serde_json::json!("-5s"),
            serde_json::json!(-5),
            serde_json::json!(9_223_372_036_854_775_808u64),
            serde_json::json!(1e30),
            serde_json::json!(1.5),
            serde_json::json!("soon"),
            serde_json::json!("5 minutes"),
            serde_json::json!(""),
            serde_json::json!(true),
            serde_json::json!({"s": 1}),
        ] {
            match parse_deadline(Some(&bad)) {
                Err(ApiError::BadRequest { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("deadline"), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    proptest! {
        /// The pattern the API documents is exactly what the parser takes.
        #[test]
        fn the_pattern_states_the_rule(text in "[0-9a-z -]{0,20}|[0-9]{1,10}(ns|us|ms|s|m|h|d|w|x)( ?[0-9]{1,3}(s|m|h))*") {
            let pattern = regex::Regex::new(DEADLINE_PATTERN).expect("pattern");
            let by_pattern = pattern.is_match(&text) && text.len() <= DEADLINE_MAX_LEN;
            prop_assert_eq!(by_pattern, parse_duration_text(&text).is_some(), "{:?}", text);
        }
    }
}
