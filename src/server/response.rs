//! The one place outcomes become HTTP responses: JSON bodies, and every error
//! as `{"error": "<code>", "detail": "<human text>"}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

/// The body type of every response.
pub type Body = Full<Bytes>;

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    // Plain data always encodes; `null` is the unreachable fallback.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// An error response; `code` is a stable snake_case name, `detail` says what
/// to do about it.
pub fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response<Body> {
    json(status, &json!({"error": code, "detail": detail.into()}))
}

/// 404 for a path that is not served.
pub fn not_found(path: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {path}; the Prefect intake is POST /v1/prefect/{{action}}"),
    )
}

/// 405 with the methods that are allowed.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint accepts {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}
