//! Problem responses: the problem+json shape, and the problems particular to each operation.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr};

/// A problem+json response.
pub(super) fn problem(description: &str, headers: &[(&str, &str)]) -> RefOr<Response> {
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
            _ => ObjectBuilder::new().schema_type(Type::String).build(),
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
/// Every operation also gets the problems of the rules in [`super::rules::CommonRules`].
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
    (
        "get_checkpoint",
        "404",
        "No checkpoint (none stored yet, or no such resource)",
    ),
    ("get_checkpoint", "503", "etcd did not answer"),
    ("get_checkpoint", "422", "Name breaks the rules"),
    ("clear_checkpoint", "404", "No such resource"),
    (
        "clear_checkpoint",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    ("clear_checkpoint", "422", "Name breaks the rules"),
    ("list_domains", "400", "Bad limit"),
    ("get_domain", "422", "Not a domain (lowercase host name)"),
    ("get_domain_budget", "404", "No budget set through the API"),
    (
        "get_domain_budget",
        "422",
        "Not a domain (lowercase host name)",
    ),
    (
        "set_domain_budget",
        "422",
        "Bad domain, rate, concurrency or scope (the field is named)",
    ),
    (
        "set_domain_budget",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    (
        "clear_domain_budget",
        "404",
        "No budget set for it through the API",
    ),
    (
        "clear_domain_budget",
        "422",
        "Not a domain (lowercase host name)",
    ),
    (
        "clear_domain_budget",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    ("resource_runs", "404", "No such resource"),
    ("resource_runs", "503", "etcd did not answer"),
    ("resource_runs", "422", "Name breaks the rules"),
    ("list_resources", "400", "Bad query"),
    (
        "preview_placement",
        "400",
        "An empty worker id, or too many are named",
    ),
    (
        "preview_placement",
        "409",
        "A named worker is neither registered nor holding tasks (unknown-worker)",
    ),
    ("preview_placement", "422", "Not a preview request"),
    ("create_resource", "409", "The name exists"),
    (
        "create_resource",
        "503",
        "Not the leader, or etcd unavailable",
    ),
    (
        "create_resource",
        "422",
        "Name, labels or schedule break the rules (the field is named)",
    ),
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
        "assigned_node names no registered worker (unknown-worker), or one that does not meet \
         the placement (worker-does-not-fit)",
    ),
    ("replace_resource", "412", "If-Match does not match"),
    (
        "replace_resource",
        "422",
        "Bad name, label, schedule or placement (the field is named)",
    ),
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
        "assigned_node names no registered worker (unknown-worker), or one that does not meet \
         the placement (worker-does-not-fit)",
    ),
    ("patch_resource", "412", "If-Match does not match"),
    (
        "patch_resource",
        "422",
        "Bad name, label, schedule or placement (the field is named)",
    ),
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
pub(super) fn particular_problems(op: &mut Operation) {
    let id = op.operation_id.clone().unwrap_or_default();
    for (_, status, description) in PROBLEMS.iter().filter(|(o, ..)| *o == id) {
        ensure(op, status, || problem_for(status, description));
    }
}

/// Adds `response` for `status` unless the operation already describes it.
pub(super) fn ensure(op: &mut Operation, status: &str, response: impl FnOnce() -> RefOr<Response>) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(response);
}
