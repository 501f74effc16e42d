//! The HTTP server. Routes:
//! * `POST /v1/prefect/{action}`: the Prefect webhook intake ([`intake`]).
//! * `GET /healthz`: `200 {"status":"ok"}` while serving.
//! * `GET /v1/actions`: the configured actions, routing keys redacted.
//! * `GET /v1/spool`: spool figures (queued, open alerts, dead letters, …).
//! * `GET /v1/dead-letters`: events PagerDuty refused or that ran out of time.
//! * `POST /v1/dead-letters/{id}/retry`: queue one again, as a new event.
//! * `DELETE /v1/dead-letters/{id}`: purge one.
//!
//! Everything else is a JSON 404; a known path with the wrong method is 405.

pub mod intake;
pub mod response;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::dedup::Seen;
use crate::spool::Spool;
use crate::translate;
use response::Body;

/// How long a client may take to send its request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
#[derive(Debug)]
pub struct State {
    /// Actions by name.
    pub actions: Actions,
    /// Translation options.
    pub options: translate::Options,
    /// The durable outbox.
    pub spool: Spool,
    /// Recently seen Prefect event ids.
    pub seen: Seen,
    /// Body limit in bytes.
    pub max_body: usize,
}

/// Serves until `shutdown` is cancelled, then lets requests in flight finish.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends pass; never let them end the server.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(&state, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("requests still in flight after the drain timeout"),
    }
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/v1/prefect/") {
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() || name.contains('/') {
            return response::not_found(&path);
        }
        if req.method() != Method::POST {
            return response::method_not_allowed("POST");
        }
        return intake::handle(state, name, req).await;
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if let Some(rest) = path.strip_prefix("/v1/dead-letters/") {
        return dead_letter(state, rest, req.method()).await;
    }
    match path.as_str() {
        "/healthz" if get => response::json(StatusCode::OK, &json!({"status": "ok"})),
        "/v1/actions" if get => {
            let actions: Vec<_> = state.actions.iter().map(|a| a.summary()).collect();
            response::json(StatusCode::OK, &json!({"actions": actions}))
        }
        "/v1/spool" if get => response::json(StatusCode::OK, &json!(state.spool.stats())),
        "/v1/dead-letters" if get => match state.spool.dead_letters() {
            Ok(list) => response::json(StatusCode::OK, &json!({"dead_letters": list})),
            Err(e) => internal(&e),
        },
        "/healthz" | "/v1/actions" | "/v1/spool" | "/v1/dead-letters" => {
            response::method_not_allowed("GET, HEAD")
        }
        _ => response::not_found(&path),
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response<Body> {
    tracing::error!(error = %e, "request failed");
    response::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the bridge could not complete the request; see its log",
    )
}

/// `POST /v1/dead-letters/{id}/retry` and `DELETE /v1/dead-letters/{id}`.
async fn dead_letter(state: &State, rest: &str, method: &Method) -> Response<Body> {
    let (id, retry) = match rest.strip_suffix("/retry") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let Ok(id) = id.parse::<u64>() else {
        return response::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{id:?} is not a dead letter id"),
        );
    };
    let missing = || {
        response::error(
            StatusCode::NOT_FOUND,
            "no_such_dead_letter",
            format!("no dead letter {id}"),
        )
    };
    match (retry, method) {
        (true, &Method::POST) => match state.spool.retry_dead_letter(id).await {
            Ok(Some(new_id)) => response::json(
                StatusCode::ACCEPTED,
                &json!({"status": "queued", "id": new_id, "was": id}),
            ),
            Ok(None) => missing(),
            Err(e) => internal(&e),
        },
        (false, &Method::DELETE) => match state.spool.purge_dead_letter(id).await {
            Ok(true) => response::json(StatusCode::OK, &json!({"status": "purged", "id": id})),
            Ok(false) => missing(),
            Err(e) => internal(&e),
        },
        (true, _) => response::method_not_allowed("POST"),
        (false, _) => response::method_not_allowed("DELETE"),
    }
}
