//! Extractors whose every rejection is an [`ApiError`], so bad bodies, paths and queries get
//! the same problem+json shape as everything else, naming the field where serde can tell; and
//! the parsing of values with rules of their own (a drain's deadline).

use std::time::Duration;

use axum::body::{Body, Bytes};
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
        match bytes.iter().find(|b| !is_json_whitespace(b)) {
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

/// Longest drain deadline; a longer one counts as this.
pub const MAX_DEADLINE: Duration = Duration::from_secs(366 * 24 * 3600);

/// The rule for a deadline written as text: components such as `90s`, `5m`, `1h 30m`
/// (units ns, us, ms, s, m, h, d, w), at most 64 characters.
pub const DEADLINE_PATTERN: &str =
    "^[0-9]{1,9}(ns|us|ms|s|m|h|d|w)( ?[0-9]{1,9}(ns|us|ms|s|m|h|d|w))*$";
/// Longest deadline text.
pub const DEADLINE_MAX_LEN: usize = 64;

/// A duration written as [`DEADLINE_PATTERN`] says, or `None`.
pub fn parse_duration_text(text: &str) -> Option<Duration> {
    if text.is_empty() || text.len() > DEADLINE_MAX_LEN {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let unit = match &rest[..letters] {
            "ns" => Duration::from_nanos(1),
            "us" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => return None,
        };
        total = total.saturating_add(unit.saturating_mul(u32::try_from(value).ok()?));
        rest = &rest[letters..];
        if rest.is_empty() {
            return Some(total);
        }
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
}

/// The deadline of a drain request: text such as `90s` (see [`DEADLINE_PATTERN`]) or a whole,
/// non-negative number of seconds. Anything else is a 400 naming `deadline`.
pub fn parse_deadline(value: Option<&serde_json::Value>) -> Result<Option<Duration>, ApiError> {
    let bad = |detail: String| ApiError::bad_field("deadline", detail);
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            // JSON Schema counts 344.0 as an integer: any whole number of seconds.
            // The schema says int64: 2^63 and more are refused.
            let too_large = match n.as_u64() {
                Some(u) => i64::try_from(u).is_err(),
                None => n.as_f64().is_some_and(|f| f >= 9_223_372_036_854_775_808.0),
            };
            if too_large {
                return Err(bad("deadline is larger than an int64".into()));
            }
            let secs = n.as_u64().map(|u| u as f64).or_else(|| n.as_f64());
            match secs {
                Some(s) if s < 0.0 => Err(bad("deadline must not be negative".into())),
                // Past the cap every value counts as the cap: no need to ask whether it is whole
                // (a large one may not parse to exactly the integer it was written as).
                Some(s) if s >= MAX_DEADLINE.as_secs_f64() => Ok(Some(MAX_DEADLINE)),
                Some(s) if s.fract() == 0.0 => Ok(Some(Duration::from_secs_f64(
                    s.min(MAX_DEADLINE.as_secs_f64()),
                ))),
                _ => Err(bad("deadline must be a whole number of seconds".into())),
            }
        }
        Some(serde_json::Value::String(text)) => parse_duration_text(text)
            .map(|d| Some(d.min(MAX_DEADLINE)))
            .ok_or_else(|| {
                let shown: String = text.chars().take(40).collect();
                if shown.trim_start().starts_with('-') {
                    bad("deadline must not be negative".into())
                } else {
                    bad(format!(
                        "deadline {shown:?} is not a duration such as 90s, 5m or 1h 30m"
                    ))
                }
            }),
        Some(_) => Err(bad(
            "deadline must be a duration such as \"90s\" or a number of seconds".into(),
        )),
    }
}

/// JSON's whitespace (RFC 8259): space, tab, line feed, carriage return. Not a form feed,
/// which `u8::is_ascii_whitespace` counts.
fn is_json_whitespace(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A JSON body when there is one (any Content-Type is fine for none), else the default. A body
/// of whitespace is one, and not JSON: RFC 8259 has no text without a value.
pub async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    req: Request,
) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.http.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
    Ok(value)
}

/// A page's `?limit=`: `default` when absent, refused with 400 naming the field outside
/// 1..=`max`.
pub fn page_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn json_whitespace_is_rfc_8259s() {
        assert!(b" \t\r\n".iter().all(is_json_whitespace));
        for b in [b'\x0c', b'\x0b', b'{'] {
            assert!(!is_json_whitespace(&b));
        }
        assert!(serde_json::from_slice::<serde_json::Value>(b"\x0c{}").is_err());
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

    #[test]
    fn deadlines_parse_or_name_the_field() {
        let ok = |v: serde_json::Value| parse_deadline(Some(&v)).expect("ok");
        assert_eq!(ok(serde_json::json!("90s")), Some(Duration::from_secs(90)));
        assert_eq!(
            ok(serde_json::json!("1h 30m")),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(
            ok(serde_json::json!("1h30m")),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(ok(serde_json::json!(45)), Some(Duration::from_secs(45)));
        assert_eq!(ok(serde_json::json!(344.0)), Some(Duration::from_secs(344)));
        // schemathesis sent this: serde_json parses it to a float a hair off the integer.
        let large: serde_json::Value =
            serde_json::from_str("2036819993370577.0").expect("a number");
        assert_eq!(ok(large), Some(MAX_DEADLINE));
        assert_eq!(
            ok(serde_json::json!(9_000_000_000_000_000_000u64)),
            Some(MAX_DEADLINE)
        );
        assert_eq!(ok(serde_json::json!("999999999w")), Some(MAX_DEADLINE));
        assert_eq!(ok(serde_json::Value::Null), None);
        assert_eq!(parse_deadline(None).expect("none"), None);
        for bad in [
            serde_json::json!("-5s"),
            serde_json::json!(-5),
            serde_json::json!(9_223_372_036_854_775_808u64),
            serde_json::json!(1e30),
            serde_json::json!(1.5),
            serde_json::json!("soon"),
            serde_json::json!("5 minutes"),
            serde_json::json!(""),
            serde_json::json!(true),
            serde_json::json!({"s": 1}),
        ] {
            match parse_deadline(Some(&bad)) {
                Err(ApiError::BadRequest { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("deadline"), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    proptest! {
        /// The pattern the API documents is exactly what the parser takes.
        #[test]
        fn the_pattern_states_the_rule(text in "[0-9a-z -]{0,20}|[0-9]{1,10}(ns|us|ms|s|m|h|d|w|x)( ?[0-9]{1,3}(s|m|h))*") {
            let pattern = regex::Regex::new(DEADLINE_PATTERN).expect("pattern");
            let by_pattern = pattern.is_match(&text) && text.len() <= DEADLINE_MAX_LEN;
            prop_assert_eq!(by_pattern, parse_duration_text(&text).is_some(), "{:?}", text);
        }
    }
}
