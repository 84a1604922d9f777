//! The OpenAPI document and Swagger UI (vendored, so it works offline).

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

mod placement;
mod problems;
pub mod roles;
mod rules;
mod schedule;

use roles::Roles;
use rules::CommonRules;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    modifiers(&Roles, &CommonRules),
    info(title = "crawler master", description = "Control plane of a distributed web crawler.\n\nEvery master serves reads from its cache and forwards writes to the leader. Every response carries `X-Served-By` (the master's id), `X-Leader` (the leader's URL, when known) and `X-Etcd-Revision` (reads: the revision the cache reflected; writes: the revision of the write). Any GET accepts `?min_revision=N`: it waits up to 3 s for the cache to reach N, then answers 503 with `Retry-After`. Errors are RFC 9457 problem+json. When tokens are configured, each operation needs a role (`viewer`, `operator` or `admin`), named by its `x-crawler-role` and its description; a lower one gets 403 naming it."),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::metrics::render,
        super::dashboard::page,
        super::workers::list,
        super::workers::get_one,
        super::workers::cordon,
        super::workers::uncordon,
        super::workers::drain,
        super::cluster::thaw,
        super::placement::preview,
        super::trends::trends,
        super::history::history,
        super::history::runs,
        super::resources::create,
        super::listing::list,
        super::listing::summary,
        super::resources::get_one,
        super::resources::delete,
        super::resources::replace,
        super::resources::patch,
        super::tasks::logs,
        super::tasks::restart,
        super::checkpoints::get,
        super::checkpoints::clear,
        super::domains::list,
        super::domains::get_one,
        super::domains::get_budget,
        super::domains::set,
        super::domains::clear,
        super::cluster::get,
        super::audit::list,
        super::events::stream,
        super::compat::add,
        super::compat::remove,
    ),
    components(schemas(
        super::Problem,
        super::health::Health,
        super::views::WorkerView,
        super::workers::WorkerList,
        super::resources::ResourceView,
        super::resources::AssignedNode,
        super::checkpoints::CheckpointView,
        super::resources::ResourceList,
        super::listing::Summary,
        super::resources::CreateResource,
        super::resources::ReplaceResource,
        super::resources::PatchResource,
        super::status_view::StatusView,
        super::events::FeedEvent,
        super::events::StreamNotice,
        super::events::StreamData,
        super::events::Kind,
        super::compat::ResourceSpec,
        super::compat::NodeSpec,
        super::compat::Empty,
        super::cluster::ClusterView,
        super::audit::AuditPage,
        crate::model::audit::Entry,
        super::cluster::MasterView,
        super::cluster::SelfView,
        super::views::ControlView,
        super::workers::ControlAnswer,
        super::views::DrainView,
        super::workers::DrainRequest,
        super::views::SchedulingView,
        super::views::DepartedView,
        super::placement::PreviewRequest,
        super::trends::Trends,
        super::trends::TrendSample,
        super::placement::PreviewAnswer,
        super::placement::PlannedMove,
        super::placement::UnplacedView,
        super::history::HistoryView,
        super::history::HistoryItem,
        super::history::RunsView,
        super::history::RunView,
        super::history::PassedView,
        super::schedules::ScheduleView,
        super::constraints::WaitingView,
        super::domains::DomainView,
        super::domains::DomainList,
        crate::model::politeness::Budget,
        crate::model::politeness::Scope,
        crate::model::politeness::Grant,
    )),
    tags(
        (name = "workers", description = "Crawler workers discovered through etcd"),
        (name = "resources", description = "Crawl tasks, assigned to workers by the leader"),
        (name = "cluster", description = "Masters, the elected leader and the scheduling policy's state"),
        (name = "domains", description = "Politeness budgets per domain, fleet-wide, and how they are used"),
        (name = "events", description = "A live stream of changes (Server-Sent Events)"),
        (name = "compatibility", description = "The Go crawler's gateway routes"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// The spec as pretty JSON.
pub fn spec_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

/// `/openapi.json` and `/swagger-ui/`.
pub fn routes() -> Router<AppState> {
    Router::from(SwaggerUi::new("/swagger-ui").url("/openapi.json", ApiDoc::openapi()))
}
