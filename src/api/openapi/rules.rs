//! The rules every operation shares, stated in the spec so that a request the schema allows
//! is one the API accepts.

use utoipa::Modify;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Required};

use crate::api::{extract, labels, status_view};
use crate::model::name;
use crate::model::status::TaskState;

use super::placement::placement_schema;
use super::problems::{ensure, particular_problems, problem};
use super::schedule::schedule_schema;

/// Adds what every operation shares and states every rule the handlers enforce, so that a
/// request the schema allows is one the API accepts:
/// - `?min_revision` (a revision, `>= 0`) on every GET, with its 400, 409 and 503;
/// - the visibility headers (`X-Served-By`, `X-Leader`, `X-Etcd-Revision`) on every response;
/// - 400, 413 and 415 on every operation with a body, 401 and 429 on every API operation
///   (tokens, quotas), 503
///   on every write (no leader, etcd unavailable);
/// - the name rule ([`crate::model::name::PATTERN`]) on every name, the label rules on labels,
///   and the `If-Match` shape this API hands out.
pub(super) struct CommonRules;

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

/// Worker ids (node ids): at most 1,000, none empty.
fn worker_ids_schema(description: &str) -> Schema {
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1));
    Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(id)
            .max_items(Some(super::super::placement::MAX_PREVIEW_WORKERS))
            .description(Some(description))
            .build(),
    )
}

/// A drain deadline: duration text, a whole number of seconds, or null.
fn deadline_schema() -> Schema {
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(extract::DEADLINE_MAX_LEN))
        .pattern(Some(extract::DEADLINE_PATTERN))
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
        .max_length(Some(labels::MAX_LABEL_VALUE))
        .pattern(Some(NO_CONTROL));
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(labels::MAX_LABEL_KEY))
        .pattern(Some(NO_CONTROL));
    ObjectBuilder::new()
        .schema_type(if nullable_values {
            SchemaType::from_iter([Type::Object, Type::Null])
        } else {
            SchemaType::new(Type::Object)
        })
        .max_properties(Some(labels::MAX_LABELS))
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

fn constrain_parameters(op: &mut Operation) {
    for param in op.parameters.iter_mut().flatten() {
        let RefOr::T(param) = param else { continue };
        let schema = match (param.parameter_in.clone(), param.name.as_str()) {
            (ParameterIn::Path, "name") | (ParameterIn::Query, "continue") => name_schema(),
            (ParameterIn::Path, "domain") => ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(crate::model::politeness::DOMAIN_PATTERN))
                .max_length(Some(253))
                .build(),
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
                        .chain([status_view::UNKNOWN]),
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
        (
            "CreateResource",
            "labels",
            Schema::Object(labels_schema(false)),
        ),
        ("CreateResource", "schedule", schedule_schema(false)),
        ("ReplaceResource", "schedule", schedule_schema(false)),
        ("PatchResource", "schedule", schedule_schema(true)),
        ("CreateResource", "placement", placement_schema(false)),
        ("ReplaceResource", "placement", placement_schema(false)),
        ("PatchResource", "placement", placement_schema(true)),
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
        (
            "PreviewRequest",
            "drain",
            worker_ids_schema("Workers to drain (node ids)"),
        ),
        (
            "PreviewRequest",
            "remove",
            worker_ids_schema("Workers to take away for good (node ids)"),
        ),
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
                    ensure(op, "429", || {
                        problem(
                            "The caller used up a quota on this master: its request rate \
                             (quotas.rate) or its open streams (quotas.streams)",
                            &[("retry-after", "Seconds to wait")],
                        )
                    });
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
