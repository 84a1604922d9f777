//! Which role each operation needs: one table, read by the check every request passes and by
//! the OpenAPI document, so that the two cannot disagree.
//!
//! Reads need `viewer`, but for the audit trail, which needs `admin`. `operator` may also cordon, uncordon and drain workers, thaw a storm
//! freeze, restart a task, preview a placement, and PATCH a task's schedule's `suspend` alone
//! (the handler asks for `admin` when a patch changes anything else). Every other write needs
//! `admin`, the Go crawler's routes included. Health, readiness, metrics, the spec, Swagger UI
//! and the dashboard's page are open.

use axum::http::Method;

pub use crate::model::role::Role;

/// True for routes anyone may call, token or not.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path.starts_with("/swagger-ui")
        || !(path.starts_with("/api/") || path.starts_with("/crawler/"))
}

/// Every write the API serves, and the role it needs. A write that is not here (a method a
/// route does not take, an unknown route) needs only what a read does, so that it gets its
/// 405 or 404, never a 403 for a role nothing could have. (`tests/roles.rs` checks that every
/// write in the spec needs more than a viewer.)
const WRITES: &[(&str, &str, Role)] = &[
    ("POST", "/api/v1/workers/{id}/cordon", Role::Operator),
    ("POST", "/api/v1/workers/{id}/uncordon", Role::Operator),
    ("POST", "/api/v1/workers/{id}/drain", Role::Operator),
    ("POST", "/api/v1/cluster/thaw", Role::Operator),
    ("POST", "/api/v1/resources/{name}/restart", Role::Operator),
    ("POST", "/api/v1/placement/preview", Role::Operator),
    // Suspending or resuming a schedule alone; the handler asks for admin for anything else.
    ("PATCH", "/api/v1/resources/{name}", Role::Operator),
    ("POST", "/api/v1/resources", Role::Admin),
    ("PUT", "/api/v1/resources/{name}", Role::Admin),
    ("DELETE", "/api/v1/resources/{name}", Role::Admin),
    ("DELETE", "/api/v1/resources/{name}/checkpoint", Role::Admin),
    ("PUT", "/api/v1/domains/{domain}/budget", Role::Admin),
    ("DELETE", "/api/v1/domains/{domain}/budget", Role::Admin),
    ("POST", "/crawler/resource", Role::Admin),
    ("DELETE", "/crawler/resource", Role::Admin),
];

/// The role `method` on `route` needs (`route` as axum matched it, which is also the spec's
/// path template), or `None` when the route is open.
pub fn required(method: &Method, route: &str) -> Option<Role> {
    if is_open(route) {
        return None;
    }
    if route == "/api/v1/audit" && *method == Method::GET {
        return Some(Role::Admin);
    }
    let write = WRITES
        .iter()
        .find(|(m, r, _)| *m == method.as_str() && *r == route)
        .map(|(_, _, role)| *role);
    Some(write.unwrap_or(Role::Viewer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_a_viewer_operations_an_operator_and_the_rest_an_admin() {
        let cases = [
            (Method::GET, "/api/v1/resources", Some(Role::Viewer)),
            (Method::GET, "/api/v1/events", Some(Role::Viewer)),
            (
                Method::GET,
                "/api/v1/resources/{name}/logs",
                Some(Role::Viewer),
            ),
            (
                Method::POST,
                "/api/v1/workers/{id}/drain",
                Some(Role::Operator),
            ),
            (Method::POST, "/api/v1/cluster/thaw", Some(Role::Operator)),
            (
                Method::PATCH,
                "/api/v1/resources/{name}",
                Some(Role::Operator),
            ),
            (Method::PUT, "/api/v1/resources/{name}", Some(Role::Admin)),
            (
                Method::DELETE,
                "/api/v1/resources/{name}",
                Some(Role::Admin),
            ),
            (Method::POST, "/api/v1/resources", Some(Role::Admin)),
            (
                Method::PUT,
                "/api/v1/domains/{domain}/budget",
                Some(Role::Admin),
            ),
            (
                Method::GET,
                "/api/v1/domains/{domain}/budget",
                Some(Role::Viewer),
            ),
            (Method::POST, "/crawler/resource", Some(Role::Admin)),
            (Method::GET, "/api/v1/audit", Some(Role::Admin)),
            (Method::PUT, "/api/v1/domains/{domain}", Some(Role::Viewer)),
            (Method::DELETE, "/api/v1/nowhere", Some(Role::Viewer)),
            (Method::GET, "/healthz", None),
            (Method::GET, "/metrics", None),
            (Method::GET, "/swagger-ui/index.html", None),
            (Method::GET, "/", None),
        ];
        for (method, route, role) in cases {
            assert_eq!(required(&method, route), role, "{method} {route}");
        }
    }
}
