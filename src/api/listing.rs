//! Lists and counts of resources, answered from the caches' indexes rather than by scanning.
//!
//! A list walks one sorted candidate set from the `continue` token or the name prefix on, and
//! stops when the page is full: one worker's names, one task state's names, or every name. So a
//! filtered page costs what it returns, not what the cache holds. Only `state=unknown` (no report
//! from the assigned worker, which no key records) walks every resource. The summary counts come
//! from the same indexes.

use std::collections::BTreeMap;
use std::ops::Bound;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::constraints::Fleet;
use super::extract::{ApiQuery, page_limit};
use super::rendered::Row;
use super::resources::ResourceList;
use super::status_view::{StatusView, UNKNOWN, parse_state};
use super::{ApiError, AppState, revision_header};
use crate::etcd::cache::{Index, Name, Objects};
use crate::model::name;
use crate::model::resource::Resource;
use crate::model::status::{TaskState, TaskStatus};

/// Default page size of a list.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page size of a list.
pub const MAX_LIMIT: usize = 10_000;

/// Query of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only resources assigned to this worker (node id).
    pub worker: Option<String>,
    /// Only resources whose task is in this state: `starting`, `running`, `backoff`,
    /// `completed`, `failed`, `stopping`, or `unknown`.
    pub state: Option<String>,
    /// Only resources whose name starts with this text.
    pub prefix: Option<String>,
    /// Page size, 1 to 10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// The `continue` token of the previous page.
    #[serde(rename = "continue")]
    #[param(rename = "continue")]
    pub continue_token: Option<String>,
}

/// The checked filters of a list.
struct Filter<'a> {
    worker: Option<&'a str>,
    state: Option<String>,
    prefix: &'a str,
}

/// The first name a page may hold: past the `continue` token, at or past the prefix.
fn start<'n>(token: Option<&'n str>, prefix: &'n str) -> Bound<&'n str> {
    match token {
        Some(t) if t >= prefix => Bound::Excluded(t),
        _ => Bound::Included(prefix),
    }
}

/// One page: walks the smallest candidate set the filters allow, in name order.
fn page(
    resources: (&Objects<Resource>, &Index),
    statuses: (&Objects<TaskStatus>, &Index),
    filter: &Filter<'_>,
    start: Bound<&str>,
    limit: usize,
) -> (Vec<Row>, bool) {
    let range = (start, Bound::Unbounded);
    let candidates: Box<dyn Iterator<Item = &str>> = match (filter.worker, &filter.state) {
        (Some(worker), _) => match resources.1.names(worker) {
            Some(names) => Box::new(names.range::<str, _>(range).map(|n: &Name| &**n)),
            None => Box::new(std::iter::empty()),
        },
        (None, Some(state)) if state != UNKNOWN => match statuses.1.names(state) {
            Some(names) => Box::new(names.range::<str, _>(range).map(|n: &Name| &**n)),
            None => Box::new(std::iter::empty()),
        },
        _ => Box::new(resources.0.range::<str, _>(range).map(|(n, _)| &**n)),
    };
    let mut matches = candidates
        .take_while(|name| name.starts_with(filter.prefix))
        .filter_map(|name| resources.0.get(name))
        .filter(|e| {
            filter
                .worker
                .is_none_or(|w| e.value.assigned_worker() == Some(w))
        })
        .map(|e| (e, statuses.0.get(&*e.value.name)))
        .filter(|(e, reported)| {
            filter.state.as_ref().is_none_or(|wanted| {
                StatusView::state_of(&e.value, reported.map(|r| &*r.value)) == wanted
            })
        })
        .map(|(e, reported)| Row {
            resource: e.clone(),
            reported: reported.cloned(),
            waiting: None,
        });
    let items: Vec<Row> = matches.by_ref().take(limit).collect();
    let more = matches.next().is_some();
    (items, more)
}

/// Lists resources from the local cache, sorted by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/resources", tag = "resources", operation_id = "list_resources",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of resources", body = ResourceList,
            headers(("x-etcd-revision" = i64, description = "etcd revision the cache reflected")))))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(token) = &query.continue_token {
        name::validate(token)
            .map_err(|_| ApiError::bad_field("continue", "not a continue token"))?;
    }
    // Any text is a valid prefix: one that no name can start with matches nothing.
    let prefix = query.prefix.as_deref().unwrap_or("");
    let wanted_state = match &query.state {
        Some(text) => Some(parse_state(text).ok_or_else(|| {
            ApiError::bad_field(
                "state",
                "state is one of starting, running, backoff, completed, failed, stopping, unknown",
            )
        })?),
        None => None,
    };
    let filter = Filter {
        worker: query.worker.as_deref(),
        state: wanted_state,
        prefix,
    };
    let start = start(query.continue_token.as_deref(), prefix);
    // Locks in the order every reader takes them: resources, then statuses.
    let ((mut items, more), revision) = state.resources.with_index(|robjs, rindex, revision| {
        let found = state.statuses.with_index(|sobjs, sindex, _| {
            page((robjs, rindex), (sobjs, sindex), &filter, start, limit)
        });
        (found, revision)
    });
    let continue_token = more
        .then(|| items.last().map(|r| r.resource.value.name.clone()))
        .flatten();
    // Why a task waits, and its rendering, are found outside the caches' locks: the fleet is
    // read in the order every reader takes the locks, and a rendering may sweep the memo, which
    // reads the resources cache.
    let mut fleet = None;
    for row in &mut items {
        row.waiting = Fleet::why_lazily(&state, &row.resource.value, &mut fleet);
    }
    let mut body = Vec::with_capacity(64 + items.len() * 512);
    body.extend_from_slice(b"{\"items\":[");
    for (i, row) in items.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            &row.render(&state)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    }
    body.push(b']');
    if let Some(token) = continue_token {
        body.extend_from_slice(b",\"continue\":");
        serde_json::to_writer(&mut body, &*token).map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    body.push(b'}');
    Ok((
        [
            revision_header(revision),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    ))
}

/// Counts of resources, from the caches' indexes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    /// etcd revision the resources cache reflected.
    pub revision: i64,
    /// Every resource.
    pub resources: usize,
    /// Resources no worker holds.
    pub unassigned: usize,
    /// Resources by the state their workers report (`unknown`: no report), as counted from
    /// the reports; a report a worker left behind for a task it no longer holds counts until
    /// the worker removes it.
    pub states: BTreeMap<String, usize>,
}

/// Counts of resources: all, unassigned, and by state. Cheap at any size (no resource is
/// read).
#[utoipa::path(get, path = "/api/v1/summary", tag = "resources", operation_id = "summary",
    responses(
        (status = 200, description = "Counts", body = Summary,
            headers(("x-etcd-revision" = i64, description = "etcd revision the cache reflected")))))]
pub async fn summary(State(state): State<AppState>) -> impl IntoResponse {
    let (total, assigned, revision) = state.resources.with_index(|objects, index, revision| {
        let assigned: usize = index.groups().map(|(_, n)| n).sum();
        (objects.len(), assigned, revision)
    });
    let mut states: BTreeMap<String, usize> = state.statuses.with_index(|_, index, _| {
        TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), index.count(s.as_str())))
            .collect()
    });
    let reported: usize = states.values().sum();
    states.insert(UNKNOWN.to_owned(), total.saturating_sub(reported));
    (
        [revision_header(revision)],
        Json(Summary {
            revision,
            resources: total,
            unassigned: total.saturating_sub(assigned),
            states,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_starts_past_the_token_and_at_the_prefix() {
        assert_eq!(start(None, "b"), Bound::Included("b"));
        assert_eq!(start(Some("a"), "b"), Bound::Included("b"));
        assert_eq!(start(Some("bb"), "b"), Bound::Excluded("bb"));
    }
}
