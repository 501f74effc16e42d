//! Every way a request can fail, and the one place each becomes an HTTP
//! status, headers and a `{"error": "<code>", "detail": "<text>"}` body.
//! Handlers return `Result<Response, ApiError>`; none picks an error status
//! itself.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::auth::{Denied, Role};
use super::response::{self, Body};
use crate::spool::AcceptError;

/// A request the bridge refuses or could not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// No route has this path.
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The path is served, with other methods.
    MethodNotAllowed {
        /// The methods it takes, for `Allow`.
        allow: &'static str,
    },
    /// No valid token for what the request asks.
    Unauthorized {
        /// What needed one.
        what: String,
    },
    /// A valid token whose role is too low.
    Forbidden {
        /// What was asked.
        what: String,
        /// Role it needs.
        needs: Role,
        /// Role the token has.
        has: Role,
    },
    /// Over `--ingress-rate` for this client.
    RateLimited {
        /// The client.
        client: std::net::IpAddr,
        /// When to come back.
        retry_after: Duration,
    },
    /// The request did not arrive in full within `--request-timeout`.
    RequestTimeout {
        /// The limit.
        limit: Duration,
    },
    /// The body is over `--max-body`.
    PayloadTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// A body that could not be read or does not say what it must; `code`
    /// names the problem (`invalid_action`, `invalid_routing_key`, …).
    BadRequest {
        /// Stable snake_case name.
        code: &'static str,
        /// What is wrong and what is accepted.
        detail: String,
    },
    /// No action by this name.
    UnknownAction {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: Vec<String>,
    },
    /// A named thing the request refers to does not exist.
    Missing {
        /// Stable snake_case name (`no_such_dead_letter`).
        code: &'static str,
        /// What is missing.
        detail: String,
    },
    /// The request conflicts with what exists (`action_exists`, `action_fixed`).
    Conflict {
        /// Stable snake_case name.
        code: &'static str,
        /// What conflicts and what to do.
        detail: String,
    },
    /// The spool holds `--queue-capacity` undelivered events.
    SpoolFull,
    /// The spool cannot commit now.
    SpoolUnavailable {
        /// What could not be done.
        detail: String,
    },
    /// `/readyz`: the bridge cannot take events now.
    NotReady {
        /// Why.
        reason: String,
    },
    /// A fault the client cannot fix; the log has it.
    Internal,
}

impl ApiError {
    /// A refusal by [`super::auth`], for `what` was asked.
    pub(crate) fn denied(d: Denied, what: String) -> Self {
        match d {
            Denied::Unauthenticated => Self::Unauthorized { what },
            Denied::Forbidden { needs, has } => Self::Forbidden { what, needs, has },
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Full => Self::SpoolFull,
            AcceptError::Storage(e) => {
                tracing::error!(error = %e, "spool commit failed; refusing the request");
                Self::SpoolUnavailable {
                    detail: "the event could not be stored durably; retry later".to_owned(),
                }
            }
        }
    }
}

impl From<crate::spool::Error> for ApiError {
    fn from(e: crate::spool::Error) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::Internal
    }
}

impl ApiError {
    /// The stable code in the body's `error` field.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BadRequest { code, .. } | Self::Missing { code, .. } | Self::Conflict { code, .. } => code,
            Self::UnknownAction { .. } => "unknown_action",
            Self::SpoolFull => "spool_full",
            Self::SpoolUnavailable { .. } => "spool_unavailable",
            Self::NotReady { .. } => "not_ready",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::UnknownAction { .. } | Self::Missing { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::SpoolFull | Self::SpoolUnavailable { .. } | Self::NotReady { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::NotFound { path } => {
                format!("no such endpoint: {path}; the Prefect intake is POST /v1/prefect/{{action}}")
            }
            Self::MethodNotAllowed { allow } => format!("this endpoint accepts {allow}"),
            Self::Unauthorized { what } => {
                format!("{what}: send a valid token as `Authorization: Bearer <token>`")
            }
            Self::Forbidden { what, needs, has } => {
                format!("{what} needs the {needs} role; this token has {has}")
            }
            Self::RateLimited { client, retry_after } => {
                format!(
                    "too many requests from {client}; retry in {} s (--ingress-rate)",
                    whole_seconds(*retry_after)
                )
            }
            Self::RequestTimeout { limit } => {
                format!("the request did not arrive in full within {limit:?} (--request-timeout)")
            }
            Self::PayloadTooLarge { limit } => {
                format!("the body is over the {limit}-byte limit (--max-body)")
            }
            Self::BadRequest { detail, .. }
            | Self::Missing { detail, .. }
            | Self::Conflict { detail, .. }
            | Self::SpoolUnavailable { detail } => detail.clone(),
            Self::UnknownAction { name, known } if known.is_empty() => format!(
                "no action named {name:?}: none is configured; start the bridge with --action NAME=ROUTING_KEY"
            ),
            Self::UnknownAction { name, known } => {
                format!(
                    "no action named {name:?}; configured actions: {}",
                    known.join(", ")
                )
            }
            Self::SpoolFull => AcceptError::Full.to_string(),
            Self::NotReady { reason } => reason.clone(),
            Self::Internal => "the bridge could not complete the request; see its log".to_owned(),
        }
    }

    /// The response.
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut body = json!({"error": self.code(), "detail": self.detail()});
        if let Self::UnknownAction { name, known } = &self {
            body["actions"] = json!(known);
            body["action"] = json!(name);
        }
        let mut res = response::json(self.status(), &body);
        let headers = res.headers_mut();
        match &self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(whole_seconds(*retry_after).max(1)),
                );
            }
            Self::RequestTimeout { .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }
}

/// Seconds, rounded up: a client told "0" would come straight back.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_json_body_with_its_code() {
        let cases = [
            ApiError::NotFound { path: "/x".into() },
            ApiError::MethodNotAllowed { allow: "POST" },
            ApiError::Unauthorized {
                what: "GET /v1/spool".into(),
            },
            ApiError::RateLimited {
                client: "10.0.0.1".parse().expect("ip"),
                retry_after: Duration::from_millis(1500),
            },
            ApiError::RequestTimeout {
                limit: Duration::from_secs(1),
            },
            ApiError::UnknownAction {
                name: "x".into(),
                known: vec!["a".into()],
            },
            ApiError::SpoolFull,
            ApiError::Internal,
        ];
        for e in cases {
            let (status, code) = (e.status(), e.code());
            let res = e.clone().into_response();
            assert_eq!(res.status(), status);
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
            let body = futures_body(res);
            assert_eq!(body["error"], code, "{e:?}");
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e:?}");
        }
        let res = ApiError::RateLimited {
            client: "10.0.0.1".parse().expect("ip"),
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    }

    fn futures_body(res: Response<Body>) -> serde_json::Value {
        use http_body_util::BodyExt as _;
        let bytes = match futures_lite(res.into_body().collect()) {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        serde_json::from_slice(&bytes).expect("json body")
    }

    /// The body is already in memory: one poll completes it.
    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
