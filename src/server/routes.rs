//! Every route the bridge serves, and who may call it.
//!
//! | route | access |
//! |---|---|
//! | `POST /v1/prefect/{action}`: the Prefect webhook intake | webhook token |
//! | `GET /healthz`: `200` while serving (liveness) | public |
//! | `GET /readyz`: `200` while the spool can take events, else `503` with the reason | public |
//! | `GET /metrics`: Prometheus metrics (also alone on `--metrics-listen`) | viewer |
//! | `GET /v1/actions`: the actions, routing keys redacted | viewer |
//! | `POST /v1/actions`: create one | user |
//! | `DELETE /v1/actions/{name}`: delete one created over the API | user |
//! | `POST /v1/actions/{name}/test`: send a test alert through one | user |
//! | `GET /v1/spool`: spool figures | viewer |
//! | `GET /v1/dead-letters`: events PagerDuty refused or that ran out of time | viewer |
//! | `POST /v1/dead-letters/{id}/retry`: queue one again, as a new event | user |
//! | `DELETE /v1/dead-letters/{id}`: purge one | admin |
//!
//! `HEAD` is served wherever `GET` is. Anything else is a JSON 404, and a
//! served path with another method a 405 naming the methods it takes; those
//! two say nothing a client could not read here, so they need no token.
//!
//! A route is one [`Route`] value, and [`Route::access`] decides for every
//! variant in one exhaustive match: a new route does not compile until it
//! says who may call it.

use http::Method;

use super::auth::Role;
use super::error::ApiError;

/// One served route, with what its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `POST /v1/prefect/{action}`.
    Intake {
        /// The action's name.
        action: &'a str,
    },
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/actions`.
    ListActions,
    /// `POST /v1/actions`.
    CreateAction,
    /// `DELETE /v1/actions/{name}`.
    DeleteAction {
        /// The action's name.
        name: &'a str,
    },
    /// `POST /v1/actions/{name}/test`.
    TestAction {
        /// The action's name.
        name: &'a str,
    },
    /// `GET /v1/spool`.
    SpoolStats,
    /// `GET /v1/dead-letters`.
    ListDeadLetters,
    /// `POST /v1/dead-letters/{id}/retry`.
    RetryDeadLetter {
        /// The id as given (checked by the handler, after access).
        id: &'a str,
    },
    /// `DELETE /v1/dead-letters/{id}`.
    PurgeDeadLetter {
        /// The id as given.
        id: &'a str,
    },
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone.
    Public,
    /// A `--webhook-token` (or anyone, when none is configured).
    Webhook,
    /// An API token of at least this role (or a loopback client, when no
    /// API token is configured).
    Api(Role),
}

impl Route<'_> {
    /// Who may call this route.
    pub(crate) fn access(&self) -> Access {
        match self {
            Self::Intake { .. } => Access::Webhook,
            Self::Health | Self::Ready => Access::Public,
            Self::ListActions | Self::SpoolStats | Self::ListDeadLetters | Self::Metrics => {
                Access::Api(Role::Viewer)
            }
            Self::CreateAction
            | Self::DeleteAction { .. }
            | Self::TestAction { .. }
            | Self::RetryDeadLetter { .. } => Access::Api(Role::User),
            Self::PurgeDeadLetter { .. } => Access::Api(Role::Admin),
        }
    }
}

/// One path segment: non-empty, no `/`.
fn segment(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.contains('/')).then_some(s)
}

impl<'a> Route<'a> {
    /// The route for `method` and `path`.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for a path no route has;
    /// [`ApiError::MethodNotAllowed`] for a served path with another method.
    pub(crate) fn parse(method: &Method, path: &'a str) -> Result<Self, ApiError> {
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let delete = *method == Method::DELETE;
        let only = |ok: bool, allow: &'static str, route: Self| {
            if ok {
                Ok(route)
            } else {
                Err(ApiError::MethodNotAllowed { allow })
            }
        };
        let not_found = || ApiError::NotFound {
            path: path.to_owned(),
        };
        if let Some(rest) = path.strip_prefix("/v1/prefect/") {
            // A trailing slash is forgiven: Prefect UIs make it easy to add.
            let action = segment(rest.strip_suffix('/').unwrap_or(rest)).ok_or_else(not_found)?;
            return only(post, "POST", Self::Intake { action });
        }
        if let Some(rest) = path.strip_prefix("/v1/actions/") {
            if let Some(name) = rest.strip_suffix("/test").and_then(segment) {
                return only(post, "POST", Self::TestAction { name });
            }
            let name = segment(rest).ok_or_else(not_found)?;
            return only(delete, "DELETE", Self::DeleteAction { name });
        }
        if let Some(rest) = path.strip_prefix("/v1/dead-letters/") {
            if let Some(id) = rest.strip_suffix("/retry").and_then(segment) {
                return only(post, "POST", Self::RetryDeadLetter { id });
            }
            let id = segment(rest).ok_or_else(not_found)?;
            return only(delete, "DELETE", Self::PurgeDeadLetter { id });
        }
        match path {
            "/healthz" => only(get, "GET, HEAD", Self::Health),
            "/readyz" => only(get, "GET, HEAD", Self::Ready),
            "/metrics" => only(get, "GET, HEAD", Self::Metrics),
            "/v1/actions" if get => Ok(Self::ListActions),
            "/v1/actions" => only(post, "GET, HEAD, POST", Self::CreateAction),
            "/v1/spool" => only(get, "GET, HEAD", Self::SpoolStats),
            "/v1/dead-letters" => only(get, "GET, HEAD", Self::ListDeadLetters),
            _ => Err(not_found()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One request for every route: adding a variant breaks this match until
    /// the route × credential test below covers it.
    pub(crate) fn example(route: &Route<'_>) -> (Method, &'static str) {
        match route {
            Route::Intake { .. } => (Method::POST, "/v1/prefect/oncall"),
            Route::Health => (Method::GET, "/healthz"),
            Route::Ready => (Method::GET, "/readyz"),
            Route::Metrics => (Method::GET, "/metrics"),
            Route::ListActions => (Method::GET, "/v1/actions"),
            Route::CreateAction => (Method::POST, "/v1/actions"),
            Route::DeleteAction { .. } => (Method::DELETE, "/v1/actions/nosuch"),
            Route::TestAction { .. } => (Method::POST, "/v1/actions/oncall/test"),
            Route::SpoolStats => (Method::GET, "/v1/spool"),
            Route::ListDeadLetters => (Method::GET, "/v1/dead-letters"),
            Route::RetryDeadLetter { .. } => (Method::POST, "/v1/dead-letters/999/retry"),
            Route::PurgeDeadLetter { .. } => (Method::DELETE, "/v1/dead-letters/999"),
        }
    }

    /// Every variant, once.
    pub(crate) const ALL: [Route<'static>; 12] = [
        Route::Intake { action: "oncall" },
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::ListActions,
        Route::CreateAction,
        Route::DeleteAction { name: "nosuch" },
        Route::TestAction { name: "oncall" },
        Route::SpoolStats,
        Route::ListDeadLetters,
        Route::RetryDeadLetter { id: "999" },
        Route::PurgeDeadLetter { id: "999" },
    ];

    #[test]
    fn every_example_parses_back_to_its_route() {
        for route in ALL {
            let (method, path) = example(&route);
            assert_eq!(Route::parse(&method, path), Ok(route), "{method} {path}");
        }
    }

    #[test]
    fn heads_are_gets_and_other_methods_are_named() {
        assert_eq!(Route::parse(&Method::HEAD, "/v1/spool"), Ok(Route::SpoolStats));
        assert_eq!(
            Route::parse(&Method::GET, "/v1/prefect/oncall/"),
            Err(ApiError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v1/prefect/oncall/"),
            Ok(Route::Intake { action: "oncall" })
        );
        assert_eq!(
            Route::parse(&Method::PUT, "/v1/actions"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, POST"
            })
        );
        for path in [
            "/",
            "/v1/prefect/",
            "/v1/prefect/a/b",
            "/v1/actions/",
            "/v1/actions/a/b",
            "/v1/dead-letters/",
            "/v1/spool/x",
        ] {
            assert!(
                matches!(Route::parse(&Method::POST, path), Err(ApiError::NotFound { .. })),
                "{path}"
            );
        }
    }
}
