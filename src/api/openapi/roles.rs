//! Each operation's role, stated in the spec from the same table the API enforces: the
//! extension `x-crawler-role`, a line of its description, and its 403.

use axum::http::Method;
use utoipa::Modify;
use utoipa::openapi::extensions::Extensions;

use super::problems::{ensure, problem};
use crate::api::roles;

/// The spec extension naming the role an operation needs.
pub const EXTENSION: &str = "x-crawler-role";

pub(super) struct Roles;

impl Modify for Roles {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [
                (Method::GET, item.get.as_mut()),
                (Method::POST, item.post.as_mut()),
                (Method::PUT, item.put.as_mut()),
                (Method::PATCH, item.patch.as_mut()),
                (Method::DELETE, item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let Some(role) = roles::required(&method, path) else {
                    continue;
                };
                op.extensions
                    .get_or_insert_with(Extensions::default)
                    .insert(EXTENSION.into(), serde_json::json!(role.as_str()));
                let line = if method == Method::PATCH {
                    format!(
                        "Role: `{role}` to change `schedule.suspend` alone, `admin` for anything else."
                    )
                } else {
                    format!("Role: `{role}`.")
                };
                let description = op.description.get_or_insert_with(String::new);
                if !description.is_empty() {
                    description.push_str("\n\n");
                }
                description.push_str(&line);
                ensure(op, "403", || {
                    problem(
                        "The token's role does not allow this operation; `role` names the one \
                         it needs",
                        &[],
                    )
                });
            }
        }
    }
}
