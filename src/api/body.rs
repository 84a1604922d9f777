//! Request bodies are read whole, up to `http.max_body_bytes`, before anything else looks at the
//! request, so that an early answer can never cost the client its response.
//!
//! A server that answers before reading the request (a 413, a 401, a follower's 503) and closes
//! makes the kernel reset the connection, and the client may lose the answer. So: an oversized
//! `Content-Length` is refused at once; a chunked body is refused the moment it passes the limit;
//! before a 413 the rest is read and discarded (nginx's lingering close), within
//! [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`], else `Connection: close`; every body within the
//! limit is handed on already read, so no layer below can answer with unread input on the wire.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::body::{Read, drain, read_up_to};

/// What the headers say about the body.
#[derive(Debug, PartialEq, Eq)]
enum Declared {
    /// No body (no `Content-Length`, or 0, and no `Transfer-Encoding`).
    None,
    /// `Content-Length: n`, within the limit.
    Within,
    /// `Content-Length: n`, over the limit.
    Over,
    /// A body of unknown length (chunked).
    Unknown,
}

fn declared(req: &Request, limit: usize) -> Declared {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Declared::Unknown;
    }
    // hyper has already refused a malformed or repeated Content-Length.
    match headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        None | Some(0) => Declared::None,
        Some(n) if n > limit as u64 => Declared::Over,
        Some(_) => Declared::Within,
    }
}

fn expects_continue(req: &Request) -> bool {
    req.headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Reads the body whole (see the module documentation): the request with its body in hand, or
/// the answer when it is refused.
pub async fn read_whole(state: &AppState, req: Request) -> Result<Request, Response> {
    let limit = state.http.max_body_bytes;
    match declared(&req, limit) {
        Declared::None => Ok(req),
        Declared::Over => {
            if expects_continue(&req) {
                return Err(too_large(limit, false));
            }
            let drained = drain(req.into_body().into_data_stream()).await;
            Err(too_large(limit, drained))
        }
        Declared::Within | Declared::Unknown => {
            let (mut parts, body) = req.into_parts();
            let mut stream = body.into_data_stream();
            match read_up_to(&mut stream, limit).await {
                Read::Whole(bytes) => {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    Ok(Request::from_parts(parts, Body::from(bytes)))
                }
                Read::Over => {
                    let drained = drain(stream).await;
                    Err(too_large(limit, drained))
                }
                Read::Broken(error) => Err(ApiError::BadRequest {
                    detail: format!("the request body could not be read: {error}"),
                    field: None,
                }
                .into_response()),
            }
        }
    }
}

/// The 413; `Connection: close` unless the whole body was read.
fn too_large(limit: usize, drained: bool) -> Response {
    let mut response = ApiError::PayloadTooLarge { limit }.into_response();
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method("POST").uri("/");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(Body::empty()).expect("request")
    }

    #[test]
    fn the_headers_decide_before_any_byte_is_read() {
        assert_eq!(declared(&request(&[]), 10), Declared::None);
        assert_eq!(
            declared(&request(&[("content-length", "0")]), 10),
            Declared::None
        );
        assert_eq!(
            declared(&request(&[("content-length", "10")]), 10),
            Declared::Within
        );
        assert_eq!(
            declared(&request(&[("content-length", "11")]), 10),
            Declared::Over
        );
        assert_eq!(
            declared(&request(&[("transfer-encoding", "chunked")]), 10),
            Declared::Unknown
        );
        assert!(expects_continue(&request(&[("expect", "100-Continue")])));
    }
}
