//! The OpenAPI document and Swagger UI (vendored, so it works offline).

use axum::Router;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    modifiers(&Shared),
    info(title = "crawler master", description = "Control plane of a distributed web crawler.\n\nEvery master serves reads from its cache and forwards writes to the leader. Every response carries `X-Served-By` (the master's id), `X-Leader` (the leader's URL, when known) and `X-Etcd-Revision` (reads: the revision the cache reflected; writes: the revision of the write). Any GET accepts `?min_revision=N`: it waits up to 3 s for the cache to reach N, then answers 503 with `Retry-After`. Errors are RFC 9457 problem+json."),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::dashboard::page,
        super::workers::list,
        super::workers::get_one,
        super::resources::create,
        super::resources::list,
        super::resources::get_one,
        super::resources::delete,
        super::resources::replace,
        super::resources::patch,
        super::cluster::get,
        super::events::stream,
        super::compat::add,
        super::compat::remove,
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
        super::resources::ReplaceResource,
        super::resources::PatchResource,
        super::events::FeedEvent,
        super::events::Kind,
        super::compat::ResourceSpec,
        super::compat::NodeSpec,
        super::compat::Empty,
        super::cluster::ClusterView,
        super::cluster::MasterView,
        super::cluster::SelfView,
    )),
    tags(
        (name = "workers", description = "Crawler workers discovered through etcd"),
        (name = "resources", description = "Crawl tasks, assigned to workers by the leader"),
        (name = "cluster", description = "Masters and the elected leader"),
        (name = "events", description = "A live stream of changes (Server-Sent Events)"),
        (name = "compatibility", description = "The Go crawler's gateway routes"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// Adds what every operation shares: `?min_revision` on every GET, and the visibility headers
/// (`X-Served-By`, `X-Leader`, `X-Etcd-Revision`) on every response.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let integer = || {
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Integer)
                .build()
        };
        let string = || {
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .build()
        };
        let header = |schema: utoipa::openapi::Object, text: &str| {
            let mut h = Header::new(schema);
            h.description = Some(text.to_owned());
            RefOr::T(h)
        };
        for item in openapi.paths.paths.values_mut() {
            if let Some(get) = item.get.as_mut() {
                let param = ParameterBuilder::new()
                    .name("min_revision")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(
                        "Wait (up to 3 s) until this master's cache reflects this etcd revision; \
                         503 with Retry-After if it does not",
                    ))
                    .schema(Some(integer()))
                    .build();
                get.parameters
                    .get_or_insert_with(Vec::new)
                    .push(RefOr::T(param));
            }
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .entry("x-served-by".into())
                            .or_insert_with(|| {
                                header(integer(), "Id of the master that served the request")
                            });
                        response
                            .headers
                            .entry("x-leader".into())
                            .or_insert_with(|| {
                                header(string(), "URL of the leader as that master sees it")
                            });
                        response
                            .headers
                            .entry("x-etcd-revision".into())
                            .or_insert_with(|| {
                                header(
                                    integer(),
                                    "Reads: the revision the cache reflected; writes: the write's",
                                )
                            });
                    }
                }
            }
        }
    }
}

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
