//! Politeness budgets on any master: each domain's budget and where it comes from, what the
//! fleet's tasks want of it and what the leader has granted, busiest first; and the budgets
//! operators set, writes the leader does (a follower forwards them).

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery, page_limit};
use super::{ApiError, AppState, revision_header};
use crate::config::PolitenessConfig;
use crate::etcd::cache::Store;
use crate::master::leader::politeness::budget_of;
use crate::model::politeness::{Budget, Demand, Grant, Shares, check_domain};

/// What the domains view reads: the budgets set, workers' demands and the leader's shares.
#[derive(Clone)]
pub struct Politeness {
    /// Budgets set through the API.
    pub budgets: Store<Budget>,
    /// Workers' demands.
    pub demand: Store<Demand>,
    /// The leader's shares.
    pub shares: Store<Shares>,
    /// Budgets and leases from the config.
    pub config: PolitenessConfig,
}

/// One domain's budget and use.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    /// The domain (or host, for a budget of scope `host`).
    pub domain: String,
    /// Its budget.
    pub budget: Budget,
    /// Where the budget comes from: `api`, `config` or `default`.
    pub source: &'static str,
    /// Workers whose tasks asked for it.
    pub workers: usize,
    /// Tasks that asked for it in the workers' last period.
    pub tasks: u32,
    /// Requests/s granted to tasks, summed over the workers' last period.
    pub used: f64,
    /// Requests waiting for a slot now.
    pub waiting: u32,
    /// The shares the leader has granted, summed.
    pub granted: Grant,
    /// 429 and 503 answers tasks reported.
    pub throttled: u64,
}

/// Domains, busiest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    /// The budget of every domain without one of its own.
    pub default: Budget,
    /// How long a worker may use a share without confirming it, in ms.
    pub share_lease_ms: u64,
    /// The top domains by use and waiting, then the ones with budgets set.
    pub domains: Vec<DomainView>,
    /// Domains known in all.
    pub total: usize,
}

/// Query of the domains list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DomainQuery {
    /// Most domains listed, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl Politeness {
    fn source(&self, domain: &str) -> &'static str {
        if self.budgets.get(domain).is_some() {
            "api"
        } else if self.config.configured(domain).is_some() {
            "config"
        } else {
            "default"
        }
    }

    /// A domain nobody uses.
    fn blank(&self, domain: &str) -> DomainView {
        DomainView {
            domain: domain.to_owned(),
            budget: budget_of(domain, &self.budgets, &self.config),
            source: self.source(domain),
            workers: 0,
            tasks: 0,
            used: 0.0,
            waiting: 0,
            granted: Grant::default(),
            throttled: 0,
        }
    }

    /// Views of every domain known, or of `only`.
    pub(super) fn views(&self, only: Option<&str>) -> Vec<DomainView> {
        let demands = self.demand.snapshot().objects;
        let shares = self.shares.snapshot().objects;
        let mut names: BTreeSet<String> = self.config.domains.keys().cloned().collect();
        self.budgets.with(|objects, _| {
            names.extend(objects.keys().map(|k| k.to_string()));
        });
        let wanted = |d: &str| only.is_none_or(|o| o == d);
        names.retain(|n| wanted(n));
        if let Some(domain) = only {
            names.insert(domain.to_owned());
        }
        let mut views: BTreeMap<String, DomainView> = BTreeMap::new();
        let blank = |domain: &str| self.blank(domain);
        for name in &names {
            views.insert(name.clone(), blank(name));
        }
        for entry in demands.values() {
            for (domain, want) in entry.value.domains.iter().filter(|(d, _)| wanted(d)) {
                let v = views.entry(domain.clone()).or_insert_with(|| blank(domain));
                v.workers += 1;
                v.tasks += want.tasks;
                v.used += want.used;
                v.waiting += want.waiting;
                v.throttled += want.throttled;
            }
        }
        for entry in shares.values() {
            for (domain, grant) in entry.value.grants.iter().filter(|(d, _)| wanted(d)) {
                let v = views.entry(domain.clone()).or_insert_with(|| blank(domain));
                v.granted.rate += grant.rate;
                v.granted.concurrency += grant.concurrency;
            }
        }
        let mut list: Vec<DomainView> = views.into_values().collect();
        list.sort_by(|a, b| {
            (b.used + f64::from(b.waiting))
                .total_cmp(&(a.used + f64::from(a.waiting)))
                .then_with(|| a.domain.cmp(&b.domain))
        });
        list
    }
}

/// Domains: each one's budget, grants, use and waiting requests, busiest first.
#[utoipa::path(get, path = "/api/v1/domains", tag = "domains", operation_id = "list_domains",
    params(DomainQuery),
    responses((status = 200, description = "Domains, busiest first", body = DomainList)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DomainQuery>,
) -> Result<Json<DomainList>, ApiError> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let p = &state.politeness;
    let mut domains = p.views(None);
    let total = domains.len();
    domains.truncate(limit);
    Ok(Json(DomainList {
        default: p.config.default,
        share_lease_ms: p.config.share_lease.as_millis() as u64,
        domains,
        total,
    }))
}

fn domain_of(raw: &str) -> Result<String, ApiError> {
    check_domain(raw).map_err(|e| ApiError::Unprocessable {
        detail: e.detail,
        field: Some(e.field.to_owned()),
    })
}

/// One domain's budget, grants, use and waiting requests.
#[utoipa::path(get, path = "/api/v1/domains/{domain}", tag = "domains", operation_id = "get_domain",
    params(("domain" = String, Path, description = "Domain or host, lowercase")),
    responses((status = 200, description = "The domain", body = DomainView)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<DomainView>, ApiError> {
    let domain = domain_of(&raw)?;
    let view = state.politeness.views(Some(&domain)).into_iter().next();
    Ok(Json(
        view.unwrap_or_else(|| state.politeness.blank(&domain)),
    ))
}

/// The budget set for a domain through the API; 404 when none is (the domain then has the
/// config's or the default, which `GET /api/v1/domains/{domain}` shows).
#[utoipa::path(get, path = "/api/v1/domains/{domain}/budget", tag = "domains", operation_id = "get_domain_budget",
    params(("domain" = String, Path, description = "Domain or host, lowercase")),
    responses((status = 200, description = "The budget set through the API", body = Budget)))]
pub async fn get_budget(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Budget>, ApiError> {
    let domain = domain_of(&raw)?;
    match state.politeness.budgets.get(&domain) {
        Some(entry) => Ok(Json(*entry.value)),
        None => Err(ApiError::NotFound {
            what: "domain budget",
            name: domain,
        }),
    }
}

/// Sets a domain's budget: what the whole fleet may send it. It overrides the config's; the
/// leader splits it among the workers whose tasks ask within a renewal period.
#[utoipa::path(put, path = "/api/v1/domains/{domain}/budget", tag = "domains", operation_id = "set_domain_budget",
    params(("domain" = String, Path, description = "Domain or host, lowercase")),
    request_body = Budget,
    responses((status = 200, description = "Set", body = Budget,
        headers(("x-etcd-revision" = i64, description = "Revision of the write")))))]
pub async fn set(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(budget): ApiJson<Budget>,
) -> Result<impl IntoResponse, ApiError> {
    let domain = domain_of(&raw)?;
    budget.check().map_err(|e| ApiError::Unprocessable {
        detail: format!("{}: {}", e.field, e.detail),
        field: Some(e.field.to_owned()),
    })?;
    let revision = state
        .leader
        .set_budget(&domain, &budget)
        .await
        .map_err(|e| state.write_error("domain", &domain, e))?;
    state
        .politeness
        .budgets
        .wait_for_revision(revision, std::time::Duration::from_secs(2))
        .await;
    Ok((StatusCode::OK, [revision_header(revision)], Json(budget)))
}

/// Removes the budget set for a domain through the API; the config's or the default applies
/// again.
#[utoipa::path(delete, path = "/api/v1/domains/{domain}/budget", tag = "domains", operation_id = "clear_domain_budget",
    params(("domain" = String, Path, description = "Domain or host, lowercase")),
    responses((status = 204, description = "Removed",
        headers(("x-etcd-revision" = i64, description = "Revision of the write")))))]
pub async fn clear(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let domain = domain_of(&raw)?;
    if state.politeness.budgets.get(&domain).is_none() {
        return Err(ApiError::NotFound {
            what: "domain budget",
            name: domain,
        });
    }
    let revision = state
        .leader
        .clear_budget(&domain)
        .await
        .map_err(|e| state.write_error("domain", &domain, e))?;
    state
        .politeness
        .budgets
        .wait_for_revision(revision, std::time::Duration::from_secs(2))
        .await;
    Ok((StatusCode::NO_CONTENT, [revision_header(revision)]))
}
