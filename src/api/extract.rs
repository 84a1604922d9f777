//! Extractors whose every rejection is an [`ApiError`], so bad bodies, paths and queries get
//! the same problem+json shape as everything else, naming the field where serde can tell.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};

/// `Json<T>` with [`ApiError`] rejections.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.http.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
                _ => ApiError::BadRequest {
                    detail: clip(&rejection.body_text()),
                    field: None,
                },
            }
        })?;
        // Every body this API takes is a JSON object; serde would also take a struct written
        // as an array (`[null, null]`), which the schema does not allow.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | None => {}
            Some(_) => {
                return Err(ApiError::Unprocessable {
                    detail: "the body must be a JSON object".into(),
                    field: None,
                });
            }
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_to_error(rejection, limit)),
        }
    }
}

/// `Content-Type: application/json`, or any `application/*+json`, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

/// `Path<T>` with [`ApiError`] rejections (a path segment that is not UTF-8, say).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T> FromRequestParts<AppState> for ApiPath<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                detail: clip(&rejection.body_text()),
                field: Some("path".to_owned()),
            }),
        }
    }
}

/// `Query<T>` with [`ApiError`] rejections.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T> FromRequestParts<AppState> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                let detail = clip(&rejection.body_text());
                Err(ApiError::BadRequest {
                    field: field_of(&detail).or_else(|| Some("query".to_owned())),
                    detail,
                })
            }
        }
    }
}

fn rejection_to_error(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            ApiError::Unprocessable {
                field: field_of(&detail),
                detail: clip(&detail),
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
            detail: clip(&e.body_text()),
            field: None,
        },
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit }
        }
        other => ApiError::BadRequest {
            detail: clip(&other.body_text()),
            field: None,
        },
    }
}

/// serde_path_to_error, which axum uses, reports `path: message`; the path is the field.
fn field_of(detail: &str) -> Option<String> {
    let rest = detail.split_once(": ")?.1;
    if let Some(field) = rest.split_once("missing field `") {
        return field.1.split('`').next().map(str::to_owned);
    }
    if let Some(field) = rest.split_once("unknown field `") {
        return field.1.split('`').next().map(str::to_owned);
    }
    let (path, _) = rest.split_once(": ")?;
    (!path.is_empty() && path != ".").then(|| path.to_owned())
}

fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().expect("ct"));
            h
        };
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(is_json(&with("application/merge-patch+json")));
        assert!(!is_json(&with("text/json")));
        assert!(!is_json(&with("application/jsonx")));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn fields_are_named() {
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: name: invalid type: integer `1`, expected a string at line 1 column 9").as_deref(),
            Some("name")
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: missing field `name` at line 1 column 2").as_deref(),
            Some("name")
        );
    }
}
