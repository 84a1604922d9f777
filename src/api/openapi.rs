//! The OpenAPI document and Swagger UI (vendored, so it works offline).

use axum::Router;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{AppState, resources};
use crate::model::name;
use crate::model::status::TaskState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    modifiers(&CommonRules),
    info(title = "crawler master", description = "Control plane of a distributed web crawler.\n\nEvery master serves reads from its cache and forwards writes to the leader. Every response carries `X-Served-By` (the master's id), `X-Leader` (the leader's URL, when known) and `X-Etcd-Revision` (reads: the revision the cache reflected; writes: the revision of the write). Any GET accepts `?min_revision=N`: it waits up to 3 s for the cache to reach N, then answers 503 with `Retry-After`. Errors are RFC 9457 problem+json."),
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
        super::history::history,
        super::resources::create,
        super::listing::list,
        super::listing::summary,
        super::resources::get_one,
        super::resources::delete,
        super::resources::replace,
        super::resources::patch,
        super::tasks::logs,
        super::tasks::restart,
        super::cluster::get,
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
        super::cluster::MasterView,
        super::cluster::SelfView,
        super::views::ControlView,
        super::workers::ControlAnswer,
        super::views::DrainView,
        super::workers::DrainRequest,
        super::views::SchedulingView,
        super::views::DepartedView,
        super::placement::PreviewRequest,
        super::placement::PreviewAnswer,
        super::placement::PlannedMove,
        super::history::HistoryView,
        super::history::HistoryItem,
    )),
    tags(
        (name = "workers", description = "Crawler workers discovered through etcd"),
        (name = "resources", description = "Crawl tasks, assigned to workers by the leader"),
        (name = "cluster", description = "Masters, the elected leader and the scheduling policy's state"),
        (name = "events", description = "A live stream of changes (Server-Sent Events)"),
        (name = "compatibility", description = "The Go crawler's gateway routes"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// Adds what every operation shares and states every rule the handlers enforce, so that a
/// request the schema allows is one the API accepts:
/// - `?min_revision` (a revision, `>= 0`) on every GET, with its 400, 409 and 503;
/// - the visibility headers (`X-Served-By`, `X-Leader`, `X-Etcd-Revision`) on every response;
/// - 400, 413 and 415 on every operation with a body, 401 on every API operation (tokens), 503
///   on every write (no leader, etcd unavailable);
/// - the name rule ([`crate::model::name::PATTERN`]) on every name, the label rules on labels,
///   and the `If-Match` shape this API hands out.
struct CommonRules;

fn integer() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .build()
}

fn string() -> Object {
    ObjectBuilder::new().schema_type(Type::String).build()
}

/// A string that follows the resource name rule.
fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(name::MAX_LEN))
        .pattern(Some(name::PATTERN))
        .build()
}

/// A drain deadline: duration text, a whole number of seconds, or null.
fn deadline_schema() -> Schema {
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(super::extract::DEADLINE_MAX_LEN))
        .pattern(Some(super::extract::DEADLINE_PATTERN))
        .build();
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .build();
    let null = ObjectBuilder::new().schema_type(Type::Null).build();
    Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(text)
            .item(seconds)
            .item(null)
            .description(Some(
                "How long until the remaining tasks move regardless of the rate: `90s`, `5m`, \
                 `1h 30m` (units ns, us, ms, s, m, h, d, w), or a whole number of seconds; longer than \
                 366 days counts as 366 days",
            ))
            .build(),
    )
}

/// Labels: at most 64, keys of 1 to 128 characters and values of at most 256, with no control
/// characters. `nullable_values` for a merge patch, where null removes a label (and a null
/// `labels` changes none).
fn labels_schema(nullable_values: bool) -> Object {
    let value = ObjectBuilder::new()
        .schema_type(if nullable_values {
            SchemaType::from_iter([Type::String, Type::Null])
        } else {
            SchemaType::new(Type::String)
        })
        .max_length(Some(resources::MAX_LABEL_VALUE))
        .pattern(Some(NO_CONTROL));
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(resources::MAX_LABEL_KEY))
        .pattern(Some(NO_CONTROL));
    ObjectBuilder::new()
        .schema_type(if nullable_values {
            SchemaType::from_iter([Type::Object, Type::Null])
        } else {
            SchemaType::new(Type::Object)
        })
        .max_properties(Some(resources::MAX_LABELS))
        .property_names(Some(key))
        .additional_properties(Some(RefOr::T(Schema::Object(value.build()))))
        .description(Some(
            "At most 64 labels; a key is 1 to 128 characters and a value at most 256, with no \
             control characters",
        ))
        .build()
}

/// No control characters (what `char::is_control` refuses: C0, DEL and C1).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// The `If-Match` values this API understands: `*` or one ETag it handed out, quoted as sent
/// or, leniently, bare.
const IF_MATCH: &str = "^(\\*|[0-9]+|\"[0-9]+\")$";

/// One Server-Sent Event as a client parses it: its `event` name, its `id` (the revision, on
/// changes), and its `data`, a JSON document described by `StreamData`.
fn sse_event() -> Schema {
    let data = ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type("application/json")
        .content_schema(Some(Ref::from_schema_name("StreamData")))
        .description(Some(
            "JSON: a FeedEvent for added, modified and deleted; a StreamNotice for relist and dropped",
        ));
    let event = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["added", "modified", "deleted", "relist", "dropped"]));
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]+$"))
        .description(Some("The revision, on the last change of a revision"));
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("event", event)
            .property("data", data)
            .property("id", id)
            .required("event")
            .required("data")
            .build(),
    )
}

fn header(schema: Object, text: &str) -> RefOr<Header> {
    let mut h = Header::new(schema);
    h.description = Some(text.to_owned());
    RefOr::T(h)
}

/// A problem+json response.
fn problem(description: &str, headers: &[(&str, &str)]) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content);
    for (name, text) in headers {
        let schema = match *name {
            "retry-after" => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(0))
                .build(),
            _ => string(),
        };
        response = response.header(*name, {
            let mut h = Header::new(schema);
            h.description = Some((*text).to_owned());
            h
        });
    }
    RefOr::T(response.build())
}

/// The problems particular to an operation, by operation id: what each status means there.
/// Every operation also gets the problems of the rules in [`CommonRules`].
const PROBLEMS: &[(&str, &str, &str)] = &[
    ("go_create_resource", "409", "The name exists"),
    (
        "go_create_resource",
        "503",
        "No leader, or etcd unavailable",
    ),
    ("go_create_resource", "422", "Name breaks the rules"),
    ("go_delete_resource", "404", "No such resource"),
    (
        "go_delete_resource",
        "503",
        "No leader, or etcd unavailable",
    ),
    ("go_delete_resource", "422", "Name breaks the rules"),
    ("stream_events", "400", "Bad query or Last-Event-ID"),
    ("resource_history", "404", "No such resource"),
    ("resource_history", "503", "etcd did not answer"),
    ("resource_history", "422", "Name breaks the rules"),
    ("list_resources", "400", "Bad query"),
    (
        "preview_placement",
        "400",
        "A named worker is unknown, or too many are named",
    ),
    ("preview_placement", "422", "Not a preview request"),
    ("create_resource", "409", "The name exists"),
    (
        "create_resource",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    ("create_resource", "422", "Name breaks the rules"),
    ("get_resource", "404", "No such resource"),
    ("get_resource", "422", "Name breaks the rules"),
    ("delete_resource", "400", "Malformed If-Match"),
    ("delete_resource", "404", "No such resource"),
    ("delete_resource", "412", "If-Match does not match"),
    (
        "delete_resource",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    ("delete_resource", "422", "Name breaks the rules"),
    ("replace_resource", "400", "Malformed body or If-Match"),
    ("replace_resource", "404", "No such resource"),
    (
        "replace_resource",
        "409",
        "assigned_node names no registered worker (unknown-worker)",
    ),
    ("replace_resource", "412", "If-Match does not match"),
    ("replace_resource", "422", "Bad name or label"),
    (
        "replace_resource",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    ("patch_resource", "400", "Malformed body or If-Match"),
    ("patch_resource", "404", "No such resource"),
    (
        "patch_resource",
        "409",
        "assigned_node names no registered worker (unknown-worker)",
    ),
    ("patch_resource", "412", "If-Match does not match"),
    ("patch_resource", "422", "Bad name or label"),
    (
        "patch_resource",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    (
        "get_resource_logs",
        "404",
        "No such resource, or its worker has no log of it yet",
    ),
    (
        "get_resource_logs",
        "409",
        "No worker is assigned (not-assigned)",
    ),
    ("get_resource_logs", "422", "Name breaks the rules"),
    ("restart_resource", "404", "No such resource"),
    ("restart_resource", "422", "Name breaks the rules"),
    ("get_worker", "404", "No such worker"),
    ("cordon_worker", "404", "No such worker"),
    ("uncordon_worker", "404", "No such worker"),
    (
        "drain_worker",
        "400",
        "The deadline is negative or not a duration",
    ),
    ("drain_worker", "404", "No such worker"),
    ("drain_worker", "415", "A body that is not JSON"),
    ("drain_worker", "422", "A body that is not a drain request"),
];

/// A problem response for `status`, with the headers that status carries.
fn problem_for(status: &str, description: &str) -> RefOr<Response> {
    match status {
        "503" => problem(description, &[("retry-after", "Seconds to wait")]),
        _ => problem(description, &[]),
    }
}

/// Adds the operation's own problems ([`PROBLEMS`]).
fn particular_problems(op: &mut Operation) {
    let id = op.operation_id.clone().unwrap_or_default();
    for (_, status, description) in PROBLEMS.iter().filter(|(o, ..)| *o == id) {
        ensure(op, status, || problem_for(status, description));
    }
}

/// Adds `response` for `status` unless the operation already describes it.
fn ensure(op: &mut Operation, status: &str, response: impl FnOnce() -> RefOr<Response>) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(response);
}

fn constrain_parameters(op: &mut Operation) {
    for param in op.parameters.iter_mut().flatten() {
        let RefOr::T(param) = param else { continue };
        let schema = match (param.parameter_in.clone(), param.name.as_str()) {
            (ParameterIn::Path, "name") | (ParameterIn::Query, "continue") => name_schema(),
            (ParameterIn::Header, "if-match") => ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IF_MATCH))
                .build(),
            // Optional, but a value is a revision: never `null`.
            (ParameterIn::Header, "last-event-id") => integer(),
            (ParameterIn::Query, "state") => ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    TaskState::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .chain([super::status_view::UNKNOWN]),
                ))
                .build(),
            _ => continue,
        };
        param.schema = Some(RefOr::T(Schema::Object(schema)));
    }
}

fn constrain_schemas(openapi: &mut utoipa::openapi::OpenApi) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    for (schema_name, field, schema) in [
        ("CreateResource", "name", Schema::Object(name_schema())),
        ("ResourceSpec", "name", Schema::Object(name_schema())),
        (
            "ReplaceResource",
            "labels",
            Schema::Object(labels_schema(false)),
        ),
        (
            "PatchResource",
            "labels",
            Schema::Object(labels_schema(true)),
        ),
        ("DrainRequest", "deadline", deadline_schema()),
    ] {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema_name) {
            object.properties.insert(field.to_owned(), RefOr::T(schema));
        }
    }
}

impl Modify for CommonRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        constrain_schemas(openapi);
        // A drain's body is optional: none means no deadline.
        if let Some(body) = openapi
            .paths
            .paths
            .get_mut("/api/v1/workers/{id}/drain")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
            && let RefOr::T(body) = body
        {
            body.required = Some(Required::False);
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/api/") || path.starts_with("/crawler/");
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
                particular_problems(op);
            }
            if let Some(get) = item.get.as_mut() {
                let param = ParameterBuilder::new()
                    .name("min_revision")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(
                        "Wait (up to 3 s) until this master's cache reflects this etcd revision; \
                         503 with Retry-After if it does not, 409 if etcd never reached it",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                            .minimum(Some(0)),
                    ))
                    .build();
                get.parameters
                    .get_or_insert_with(Vec::new)
                    .push(RefOr::T(param));
                ensure(get, "400", || {
                    problem("Bad query (a malformed min_revision, say)", &[])
                });
                ensure(get, "409", || {
                    problem("min_revision names a revision etcd has not reached", &[])
                });
                ensure(get, "503", || {
                    problem(
                        "The cache did not reach min_revision in time",
                        &[("retry-after", "Seconds to wait")],
                    )
                });
            }
            for (op, write) in [
                (item.get.as_mut(), false),
                (item.post.as_mut(), true),
                (item.put.as_mut(), true),
                (item.patch.as_mut(), true),
                (item.delete.as_mut(), true),
            ] {
                let Some(op) = op else { continue };
                constrain_parameters(op);
                if op.request_body.is_some() {
                    ensure(op, "400", || problem("Malformed body", &[]));
                    ensure(op, "413", || problem("Body too large", &[]));
                    ensure(op, "415", || problem("Not JSON", &[]));
                }
                if api {
                    ensure(op, "401", || {
                        problem(
                            "A bearer token is required (writes when tokens are configured; \
                             reads too with auth.protect_reads)",
                            &[("www-authenticate", "Bearer realm=\"crawler\"")],
                        )
                    });
                }
                if write {
                    ensure(op, "503", || {
                        problem(
                            "No leader, the leader is unreachable or taking over, or etcd did \
                             not answer in time",
                            &[("retry-after", "Seconds to wait")],
                        )
                    });
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        if let Some(RefOr::T(stream)) =
                            response.content.get_mut("text/event-stream")
                        {
                            stream.schema = Some(RefOr::T(sse_event()));
                        }
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
