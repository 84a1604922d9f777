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

/// The role `method` on `route` needs (`route` as axum matched it, which is also the spec's
/// path template), or `None` when the route is open.
pub fn required(method: &Method, route: &str) -> Option<Role> {
    if is_open(route) {
        return None;
    }
    if route == "/api/v1/audit" {
        return Some(Role::Admin);
    }
    if !super::proxy::is_write(method) {
        return Some(Role::Viewer);
    }
    let operator = matches!(
        route,
        "/api/v1/workers/{id}/cordon"
            | "/api/v1/workers/{id}/uncordon"
            | "/api/v1/workers/{id}/drain"
            | "/api/v1/cluster/thaw"
            | "/api/v1/resources/{name}/restart"
            | "/api/v1/placement/preview"
    ) || (*method == Method::PATCH && route == "/api/v1/resources/{name}");
    Some(if operator {
        Role::Operator
    } else {
        Role::Admin
    })
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
            (Method::PUT, "/api/v1/domains/{domain}", Some(Role::Admin)),
            (Method::POST, "/crawler/resource", Some(Role::Admin)),
            (Method::GET, "/api/v1/audit", Some(Role::Admin)),
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
