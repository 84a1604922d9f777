//! The OpenAPI document and Swagger UI (vendored, so it works offline).

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "crawler master", description = "Control plane of a distributed web crawler."),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::workers::list,
        super::workers::get_one,
        super::resources::create,
        super::resources::list,
        super::resources::get_one,
        super::resources::delete,
        super::cluster::get,
    ),
    components(schemas(
        super::Problem,
        super::health::Status,
        super::workers::WorkerView,
        super::workers::WorkerList,
        super::resources::ResourceView,
        super::resources::AssignedNode,
        super::resources::ResourceList,
        super::resources::CreateResource,
        super::cluster::ClusterView,
        super::cluster::MasterView,
        super::cluster::SelfView,
    )),
    tags(
        (name = "workers", description = "Crawler workers discovered through etcd"),
        (name = "resources", description = "Crawl tasks, assigned to workers by the leader"),
        (name = "cluster", description = "Masters and the elected leader"),
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
