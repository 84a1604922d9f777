//! A task's placement as a schema, exactly as the API checks it
//! ([`crate::model::constraints`]): a request the schema allows is one the API accepts.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};

use crate::model::constraints::{MAX_PRIORITY, MAX_TERMS, MAX_VALUES, MAX_WEIGHT};

/// No control characters (what `char::is_control` refuses: C0, DEL and C1).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Longest key or value, in characters.
const MAX_TEXT: usize = 256;

fn typed(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([t, Type::Null])
    } else {
        SchemaType::new(t)
    }
}

fn text(min: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(MAX_TEXT))
        .pattern(Some(NO_CONTROL))
}

fn closed(t: SchemaType) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(t)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// An expression whose operator is one of `operators`, with `values`.
fn expression(operators: [&str; 2], values: ArrayBuilder, required: bool) -> ObjectBuilder {
    let object = closed(SchemaType::new(Type::Object))
        .property("key", text(1))
        .property(
            "operator",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(operators)),
        )
        .property("values", values.items(text(0)))
        .required("key")
        .required("operator");
    if required {
        object.required("values")
    } else {
        object
    }
}

/// One expression: `In`/`NotIn` with 1 to 64 values, `Exists`/`DoesNotExist` with none.
fn requirement() -> Schema {
    let some = ArrayBuilder::new()
        .min_items(Some(1))
        .max_items(Some(MAX_VALUES));
    let none = ArrayBuilder::new().max_items(Some(0));
    Schema::OneOf(
        OneOfBuilder::new()
            .item(expression(["In", "NotIn"], some, true).build())
            .item(expression(["Exists", "DoesNotExist"], none, false).build())
            .build(),
    )
}

/// A selector: every label pair and every expression must hold.
fn selector() -> ObjectBuilder {
    closed(SchemaType::new(Type::Object))
        .property(
            "match_labels",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .max_properties(Some(MAX_TERMS))
                .property_names(Some(text(1)))
                .additional_properties(Some(RefOr::T(Schema::Object(text(0).build())))),
        )
        .property(
            "match_expressions",
            ArrayBuilder::new()
                .items(RefOr::T(requirement()))
                .max_items(Some(MAX_TERMS)),
        )
        .description(Some(
            "Worker labels required: each match_labels pair, and each expression (In, NotIn, \
             Exists, DoesNotExist)",
        ))
}

fn weight(low: i32, high: i32) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(f64::from(low)))
        .maximum(Some(f64::from(high)))
}

/// A placement; in a merge patch every field is nullable (null removes it), and so is the
/// whole (null: none).
pub(super) fn placement_schema(patch: bool) -> Schema {
    let preference = closed(SchemaType::new(Type::Object))
        .property(
            "weight",
            Schema::OneOf(
                OneOfBuilder::new()
                    .item(weight(-MAX_WEIGHT, -1).build())
                    .item(weight(1, MAX_WEIGHT).build())
                    .build(),
            ),
        )
        .property("selector", selector())
        .required("weight")
        .required("selector");
    // Null is no spread, in a create as in a patch.
    let spread = closed(typed(Type::Object, true))
        .property(
            "over",
            text(1).description(Some("Worker label whose values share the group")),
        )
        .property(
            "by",
            text(1).description(Some("Resource label that makes a group")),
        )
        .required("over")
        .required("by");
    let list = |items: RefOr<Schema>, max: usize| {
        ArrayBuilder::new()
            .schema_type(typed(Type::Array, patch))
            .items(items)
            .max_items(Some(max))
    };
    let selector = selector().schema_type(typed(Type::Object, patch));
    Schema::Object(
        closed(typed(Type::Object, true))
            .property("selector", selector)
            .property(
                "tolerations",
                list(RefOr::T(Schema::Object(text(1).build())), MAX_VALUES).description(Some(
                    "Dedicated workers (labelled dedicated=<x>) whose <x> this task may use",
                )),
            )
            .property(
                "preferences",
                list(RefOr::T(Schema::Object(preference.build())), MAX_TERMS).description(Some(
                    "Soft: each worker scores the weights of the selectors it matches; the \
                     highest score with room is chosen",
                )),
            )
            .property("spread", spread)
            .property(
                "priority",
                ObjectBuilder::new()
                    .schema_type(typed(Type::Integer, patch))
                    .minimum(Some(0.0))
                    .maximum(Some(f64::from(MAX_PRIORITY)))
                    .description(Some("Higher is placed first when room is short; default 0")),
            )
            .description(Some(if patch {
                "Placement fields to set, or to remove (null), merged into the placement; null \
                 removes it"
            } else {
                "Where the task may run; null or absent for anywhere"
            }))
            .build(),
    )
}
