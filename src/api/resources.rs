//! Crawl tasks ("resources"): reads from the local cache on every master, writes on the leader.
//!
//! A name is checked against the rules before anything touches etcd. Creates are decided by a
//! txn (the key's create revision must be 0), never by reading first.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::constraints;
use super::extract::{ApiJson, ApiPath};
use super::labels::{MAX_LABELS, check_all, check_labels, set_labels};
use super::rendered::Row;
pub use super::resource_view::{AssignedNode, ResourceList, ResourceView};
use super::schedules;
use super::{ApiError, AppState, revision_header};
use crate::master::leader::{Init, WriteError, Written};
use crate::model::name;
use crate::model::recurrence::Recurrence;
use crate::model::resource::Resource;
use crate::model::role::Role;

/// Body of a create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResource {
    /// 1 to 128 characters from `[A-Za-z0-9._-]`, not `.` or `..`.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its schedule, when it recurs (see `Schedule`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub schedule: Option<serde_json::Value>,
    /// Where it may run: a selector on worker labels, tolerations of dedicated workers,
    /// weighted preferences, a spread, and a priority.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub placement: Option<serde_json::Value>,
}

/// Body of a PUT: replaces what users may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceResource {
    /// Node id of a registered worker to move the resource to; null leaves the assignment to
    /// the leader.
    #[serde(default)]
    pub assigned_node: Option<String>,
    /// The labels; absent means none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The schedule; absent means none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub schedule: Option<serde_json::Value>,
    /// Where it may run; absent means anywhere.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub placement: Option<serde_json::Value>,
}

/// Body of a PATCH (JSON merge patch): absent fields are kept, a label set to null is removed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchResource {
    /// Node id of a registered worker to move the resource to.
    #[serde(default)]
    pub assigned_node: Option<String>,
    /// Labels to set (a string) or remove (null).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, Option<String>>>,
    /// Schedule fields to set, or to remove (null); a null `schedule` removes the schedule.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object)]
    pub schedule: Option<serde_json::Value>,
    /// Placement fields to set, or to remove (null); a null `placement` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object)]
    pub placement: Option<serde_json::Value>,
}

/// A field that is present, even as null (absent stays `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The strong ETag of a version (a mod revision).
pub fn etag(mod_revision: i64) -> String {
    format!("\"{mod_revision}\"")
}

/// The version `If-Match` asks for: `None` when absent or `*`. A value that is not `*` or one
/// ETag of the shape this API hands out (`"42"`, or leniently `42`) is malformed: 400, naming
/// the header. A
/// well-formed ETag of another version is the txn's business: 412.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::bad_field(
            "If-Match",
            "If-Match must be * or one ETag this API handed out, such as \"42\"",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?.trim();
    if text == "*" {
        return Ok(None);
    }
    // Leniently, a bare version (the ETag without its quotes) means the same.
    let bare = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    // A well-formed ETag too large for a revision names a version no key can have: it matches
    // nothing, which the txn answers with 412.
    Ok(Some(bare.parse::<i64>().unwrap_or(i64::MAX)))
}

/// A resource name from a request, checked against the rules before anything touches etcd.
pub fn checked_name(raw: &str) -> Result<&str, ApiError> {
    name::validate(raw).map_err(|e| ApiError::Unprocessable {
        detail: e.to_string(),
        field: Some("name".to_owned()),
    })?;
    Ok(raw)
}

/// Creates a resource and assigns it to the least-loaded worker with room (or leaves it
/// unassigned until one has room).
#[utoipa::path(post, path = "/api/v1/resources", tag = "resources", operation_id = "create_resource",
    request_body = CreateResource,
    responses(
        (status = 201, description = "Created", body = ResourceView,
            headers(("location" = String, description = "URL of the new resource"),
                    ("x-etcd-revision" = i64, description = "Revision of the write")))))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateResource>,
) -> Result<impl IntoResponse, ApiError> {
    check_all(&body.labels)?;
    let init = Init {
        labels: body.labels,
        schedule: match &body.schedule {
            Some(value) => schedules::checked(value)?,
            None => None,
        },
        constraints: match &body.placement {
            Some(value) => constraints::checked(value)?,
            None => Default::default(),
        },
    };
    let (name, created) = create_named(&state, &body.name, &init).await?;
    let location = format!("/api/v1/resources/{name}");
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (super::REVISION_HEADER, created.revision.to_string()),
        ],
        Json(ResourceView::written(
            &state,
            &created.resource,
            created.revision,
        )),
    ))
}

/// Creates the resource named `raw` once the name passes the rules: the REST create and the Go
/// gateway's share it.
pub async fn create_named<'a>(
    state: &AppState,
    raw: &'a str,
    init: &Init,
) -> Result<(&'a str, Written), ApiError> {
    let name = checked_name(raw)?;
    let created = state
        .leader
        .create(name, init)
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    Ok((name, created))
}

/// One resource, from the local cache.
#[utoipa::path(get, path = "/api/v1/resources/{name}", tag = "resources", operation_id = "get_resource",
    params(("name" = String, Path, description = "Resource name")),
    responses(
        (status = 200, description = "The resource", body = ResourceView,
            headers(("x-etcd-revision" = i64, description = "etcd revision the cache reflected"),
                    ("etag" = String, description = "Version (the key's mod revision), for If-Match")))))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let name = checked_name(&raw)?;
    let revision = state.resources.revision();
    let entry = state
        .resources
        .get(name)
        .ok_or_else(|| ApiError::NotFound {
            what: "resource",
            name: super::error::shown(name),
        })?;
    let tag = HeaderValue::from_str(&etag(entry.mod_revision))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let body = Row {
        waiting: constraints::Fleet::why_one(&state, &entry.value),
        reported: state.statuses.get(&entry.value.name),
        resource: entry,
    }
    .render(&state)
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            revision_header(revision),
            (header::ETAG, tag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    ))
}

/// Deletes a resource.
#[utoipa::path(delete, path = "/api/v1/resources/{name}", tag = "resources", operation_id = "delete_resource",
    params(("name" = String, Path, description = "Resource name"),
           ("if-match" = Option<String>, Header, description = "Delete only this version (an ETag)")),
    responses(
        (status = 204, description = "Deleted",
            headers(("x-etcd-revision" = i64, description = "Revision of the write")))))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let name = checked_name(&raw)?;
    let wanted = if_match(&headers)?;
    let revision = state
        .leader
        .delete(name, wanted)
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    Ok((StatusCode::NO_CONTENT, [revision_header(revision)]))
}

/// The answer to a write that changed a resource: its view, revision and new ETag.
pub fn updated(state: &AppState, written: Written) -> Result<impl IntoResponse + use<>, ApiError> {
    Ok((
        [
            revision_header(written.revision),
            (
                header::ETAG,
                HeaderValue::from_str(&etag(written.revision))
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
        ],
        Json(ResourceView::written(
            state,
            &written.resource,
            written.revision,
        )),
    ))
}

/// Replaces what users may change: the worker (pin) and the labels.
#[utoipa::path(put, path = "/api/v1/resources/{name}", tag = "resources", operation_id = "replace_resource",
    params(("name" = String, Path, description = "Resource name"),
           ("if-match" = Option<String>, Header, description = "Change only this version (an ETag)")),
    request_body = ReplaceResource,
    responses(
        (status = 200, description = "Changed", body = ResourceView,
            headers(("x-etcd-revision" = i64, description = "Revision of the write"),
                    ("etag" = String, description = "The new version")))))]
pub async fn replace(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReplaceResource>,
) -> Result<impl IntoResponse, ApiError> {
    let name = checked_name(&raw)?;
    let wanted = if_match(&headers)?;
    check_all(&body.labels)?;
    let rule = match &body.schedule {
        Some(value) => schedules::checked(value)?,
        None => None,
    };
    let placement = match &body.placement {
        Some(value) => constraints::checked(value)?,
        None => Default::default(),
    };
    let labels = body.labels;
    let written = state
        .leader
        .update(
            name,
            |r| {
                set_labels(r, &labels);
                set_schedule(r, rule.clone());
                r.set_constraints(&placement);
                Ok(())
            },
            body.assigned_node.as_deref(),
            wanted,
        )
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    updated(&state, written)
}

/// True when a patch only suspends or resumes a schedule: what an operator may do.
fn suspends_only(body: &PatchResource) -> bool {
    body.labels.as_ref().is_none_or(|l| l.is_empty())
        && body.assigned_node.is_none()
        && body.placement.is_none()
        && body
            .schedule
            .as_ref()
            .and_then(|s| s.as_object())
            .is_some_and(|s| s.len() == 1 && s.get("suspend").is_some_and(|v| v.is_boolean()))
}

/// Changes some of what users may change (JSON merge patch).
#[utoipa::path(patch, path = "/api/v1/resources/{name}", tag = "resources", operation_id = "patch_resource",
    params(("name" = String, Path, description = "Resource name"),
           ("if-match" = Option<String>, Header, description = "Change only this version (an ETag)")),
    request_body = PatchResource,
    responses(
        (status = 200, description = "Changed", body = ResourceView,
            headers(("x-etcd-revision" = i64, description = "Revision of the write"),
                    ("etag" = String, description = "The new version")))))]
pub async fn patch(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchResource>,
) -> Result<impl IntoResponse, ApiError> {
    if !suspends_only(&body) {
        caller.require(
            Role::Admin,
            "a PATCH that changes more than `schedule.suspend`",
        )?;
    }
    let name = checked_name(&raw)?;
    let wanted = if_match(&headers)?;
    let changes = body.labels.unwrap_or_default();
    check_labels(changes.iter().map(|(k, v)| (k, v.as_ref())))?;
    // A schedule patch is checked here against the cached rule, and again in the write
    // against the stored one.
    if let Some(patch) = &body.schedule {
        let cached = state.resources.get(name);
        let current = cached.as_ref().and_then(|e| e.value.schedule());
        schedules::merged(current.map(|s| &s.rule), patch).map_err(schedules::unprocessable)?;
    }
    if let Some(patch) = &body.placement {
        let cached = state.resources.get(name);
        let current = cached.as_ref().and_then(|e| e.value.constraints());
        constraints::merged(current, patch).map_err(constraints::unprocessable)?;
    }
    let written = state
        .leader
        .update(
            name,
            |r| {
                let mut labels = r.labels();
                for (key, value) in &changes {
                    match value {
                        Some(v) => labels.insert(key.clone(), v.clone()),
                        None => labels.remove(key),
                    };
                }
                if labels.len() > MAX_LABELS {
                    return Err(WriteError::Invalid(
                        "labels",
                        format!("at most {MAX_LABELS} labels"),
                    ));
                }
                set_labels(r, &labels);
                if let Some(patch) = &body.schedule {
                    let current = r.schedule().map(|s| &s.rule);
                    let rule = schedules::merged(current, patch)
                        .map_err(|e| WriteError::Invalid(e.field, e.detail))?;
                    set_schedule(r, rule);
                }
                if let Some(patch) = &body.placement {
                    let c = constraints::merged(r.constraints(), patch)
                        .map_err(|e| WriteError::Invalid(e.field, e.detail))?;
                    r.set_constraints(&c);
                }
                Ok(())
            },
            body.assigned_node.as_deref(),
            wanted,
        )
        .await
        .map_err(|e| state.write_error("resource", name, e))?;
    updated(&state, written)
}

/// Gives `r` the schedule `rule` makes of its current one (none: no schedule).
fn set_schedule(r: &mut Resource, rule: Option<crate::model::recurrence::Rule>) {
    let now = crate::model::status::now_ms();
    let schedule = Recurrence::set(r.schedule(), rule, now).map(Box::new);
    r.extra.set_schedule(schedule);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_if_match(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MATCH,
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn if_match_is_a_version_a_star_or_malformed() {
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(if_match(&with_if_match("*")).ok(), Some(None));
        assert_eq!(if_match(&with_if_match("\"42\"")).ok(), Some(Some(42)));
        assert_eq!(if_match(&with_if_match("42")).ok(), Some(Some(42)));
        assert_eq!(
            if_match(&with_if_match("\"97673319360902811107774\"")).ok(),
            Some(Some(i64::MAX))
        );
        for bad in [
            "",
            "\"42",
            "\"\"",
            "\"-1\"",
            "W/\"42\"",
            "\"1\", \"2\"",
            "null",
        ] {
            let error = if_match(&with_if_match(bad)).expect_err(bad);
            assert_eq!(error.problem().status, 400, "{bad}");
            assert_eq!(error.problem().field.as_deref(), Some("If-Match"));
        }
    }
}
