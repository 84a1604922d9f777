//! The one error type that becomes an HTTP response: RFC 9457 problem details.
//!
//! Every handler returns `Result<_, ApiError>`, and the JSON extractor turns bad bodies into
//! `ApiError` too, so clients see one error shape. Internal causes are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::master::leader::WriteError;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `urn:crawler:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, stable summary of the kind of problem.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong in this instance.
    pub detail: String,
    /// The offending input field, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The role the request needs, when the caller's is too low (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// URL of the current leader, when the request needs the leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// Everything that can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such object.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// `worker`, `resource`, `route`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The request is malformed.
    #[error("{detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
        /// The offending field.
        field: Option<String>,
    },
    /// The request is well-formed but its values break a rule.
    #[error("{detail}")]
    Unprocessable {
        /// What is wrong.
        detail: String,
        /// The offending field.
        field: Option<String>,
    },
    /// The object already exists.
    #[error("{what} {name:?} already exists")]
    Conflict {
        /// `resource`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A well-formed request that names something the cluster's current state does not hold
    /// (a worker that is not registered, a revision etcd has not reached). Retrying after the
    /// state changes may succeed.
    #[error("{detail}")]
    StateConflict {
        /// Stable slug of the problem type, e.g. `unknown-worker`.
        slug: &'static str,
        /// Its title.
        title: &'static str,
        /// What is wrong.
        detail: String,
        /// The offending field.
        field: Option<String>,
    },
    /// `If-Match` did not match the current version.
    #[error("the resource changed since the version given in If-Match; read it again")]
    PreconditionFailed,
    /// A needed bearer token is missing or wrong.
    #[error("{detail}")]
    Unauthorized {
        /// What is wrong.
        detail: String,
    },
    /// The token is valid but its role does not allow the request.
    #[error("{detail}")]
    Forbidden {
        /// The role the request needs.
        needed: crate::model::role::Role,
        /// What was refused, and why.
        detail: String,
    },
    /// The caller used up a quota (its request rate, or its open streams).
    #[error("{detail}")]
    TooManyRequests {
        /// Which quota, and what to do.
        detail: String,
        /// Seconds to wait.
        retry_after: u32,
    },
    /// The route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// Body too large.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// This master is not the leader and cannot serve the write.
    #[error("this master is not the leader")]
    NotLeader {
        /// The leader's URL, when one is known.
        leader: Option<String>,
    },
    /// A dependency (etcd) is unavailable or not ready; the client should retry.
    #[error("{detail}")]
    Unavailable {
        /// What is unavailable.
        detail: String,
        /// Seconds after which to retry.
        retry_after: u32,
    },
    /// A bug or an unexpected failure. The cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming a field.
    pub fn bad_field(field: &str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
            field: Some(field.to_owned()),
        }
    }

    /// A 503 asking to retry after `retry_after` seconds.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            retry_after: 1,
        }
    }

    fn status_and_slug(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Self::Unprocessable { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-value",
                "Invalid value",
            ),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "conflict", "Already exists"),
            Self::StateConflict { slug, title, .. } => (StatusCode::CONFLICT, slug, title),
            Self::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::NotLeader { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-leader",
                "Not the leader",
            ),
            Self::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.status_and_slug();
        let field = match self {
            Self::BadRequest { field, .. }
            | Self::Unprocessable { field, .. }
            | Self::StateConflict { field, .. } => field.clone(),
            _ => None,
        };
        let leader = match self {
            Self::NotLeader { leader } => leader.clone(),
            _ => None,
        };
        let detail = match self {
            Self::NotLeader {
                leader: Some(leader),
            } => format!("this master is not the leader; send writes to {leader}"),
            Self::NotLeader { leader: None } => {
                "this master is not the leader and no leader is known; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let role = match self {
            Self::Forbidden { needed, .. } => Some(needed.as_str().to_owned()),
            _ => None,
        };
        Problem {
            kind: format!("urn:crawler:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field,
            role,
            leader,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::NotLeader { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            Self::TooManyRequests { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"crawler\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// At most this many characters of a caller's name are echoed back in a problem.
const SHOWN_CHARS: usize = 200;

/// A caller's name (a resource, a worker id, a path) as a problem echoes it: clipped.
pub fn shown(name: &str) -> String {
    name.chars().take(SHOWN_CHARS).collect()
}

/// The API error for a failed leader write on the `what` (`resource`, `worker`, `cluster`)
/// named `name`; `leader` is another master known to lead. A write naming a worker that is
/// not registered is a 404 when the worker is the subject, else a 409.
pub fn from_write(
    error: WriteError,
    what: &'static str,
    name: &str,
    leader: Option<String>,
) -> ApiError {
    let name = shown(name);
    match error {
        WriteError::NotLeader => ApiError::NotLeader { leader },
        WriteError::Deposed => ApiError::NotLeader { leader: None },
        WriteError::TakingOver => {
            ApiError::unavailable("this master was just elected and is taking over")
        }
        WriteError::Exists => ApiError::Conflict { what, name },
        WriteError::NotFound => ApiError::NotFound { what, name },
        WriteError::PreconditionFailed => ApiError::PreconditionFailed,
        WriteError::UnknownWorker(_) if what == "worker" => ApiError::NotFound { what, name },
        WriteError::UnknownWorker(id) => ApiError::StateConflict {
            slug: "unknown-worker",
            title: "No such worker",
            detail: format!("no registered worker has id {:?}", shown(&id)),
            field: Some("assigned_node".to_owned()),
        },
        WriteError::Unfit(id) => ApiError::StateConflict {
            slug: "worker-does-not-fit",
            title: "The worker does not meet the placement",
            detail: format!(
                "worker {:?} does not meet the resource's placement (its selector or a \
                 dedication)",
                shown(&id)
            ),
            field: Some("assigned_node".to_owned()),
        },
        WriteError::Invalid(field, detail) => ApiError::Unprocessable {
            detail,
            field: Some(field.to_owned()),
        },
        WriteError::Contended => ApiError::unavailable("the resource kept changing; retry"),
        WriteError::Etcd(e) => {
            tracing::warn!(error = %e, "etcd write failed");
            ApiError::unavailable("etcd did not answer in time; retry")
        }
        other => ApiError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_are_not_leaked() {
        let p = ApiError::Internal("etcd at 10.0.0.1 said boom".into()).problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("10.0.0.1"));
    }

    #[test]
    fn shapes_are_stable() {
        let p = ApiError::NotFound {
            what: "worker",
            name: "w".into(),
        }
        .problem();
        assert_eq!(p.kind, "urn:crawler:problem:not-found");
        assert_eq!(p.status, 404);
        let p = ApiError::bad_field("name", "bad").problem();
        assert_eq!(p.field.as_deref(), Some("name"));
    }
}
