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

pub mod actions;
pub mod auth;
pub mod intake;
pub mod response;
pub mod tls;

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

use std::net::{IpAddr, SocketAddr};

use governor::DefaultKeyedRateLimiter;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::actions::Actions;
use crate::dedup::Seen;
use crate::spool::Spool;
use crate::translate;
use auth::{Denied, Role, Tokens};
use response::Body;

/// Longest a client may take to send its request head (less when
/// `--request-timeout` is shorter).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long requests in flight may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
#[derive(Debug)]
pub struct State {
    /// Actions by name; API-created ones come and go at run time.
    pub actions: std::sync::RwLock<Actions>,
    /// Names given with `--action` (not deletable over the API).
    pub fixed_actions: std::collections::HashSet<String>,
    /// Translation options.
    pub options: translate::Options,
    /// The durable outbox.
    pub spool: Spool,
    /// Recently seen Prefect event ids.
    pub seen: Seen,
    /// Body limit in bytes.
    pub max_body: usize,
    /// Webhook and API tokens.
    pub tokens: Tokens,
    /// Whole-request time limit.
    pub request_timeout: Duration,
    /// Per-client-IP request limiter.
    pub ingress: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl State {
    /// The current actions (a read lock; do not hold it across an await).
    pub fn actions(&self) -> std::sync::RwLockReadGuard<'_, Actions> {
        self.actions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The actions, for changing.
    pub fn actions_mut(&self) -> std::sync::RwLockWriteGuard<'_, Actions> {
        self.actions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Listener settings.
pub struct Listen {
    /// Bound listener.
    pub listener: TcpListener,
    /// HTTPS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Most connections at once.
    pub max_connections: usize,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Serves until `shutdown` is cancelled, then lets requests in flight finish.
pub async fn run(listen: Listen, state: Arc<State>, shutdown: CancellationToken) {
    let Listen {
        listener,
        tls,
        max_connections,
    } = listen;
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slowloris: a client gets at most this long to send its request head.
    let header_timeout = HEADER_READ_TIMEOUT.min(state.request_timeout);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Prefect's heads are a few hundred bytes; bound what a client can
        // make us buffer (a longer head gets 431).
        .max_buf_size(MAX_HEAD_BYTES);
    builder.http2().max_header_list_size(MAX_HEAD_BYTES as u32);
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
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
            async move { Ok::<_, Infallible>(timed(&state, req, peer).await) }
        });
        match &tls {
            None => {
                let conn = graceful.watch(
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("requests still in flight after the drain timeout"),
    }
}

/// Applies the whole-request time limit (slow bodies included) and the
/// per-client-IP rate limit, then routes.
async fn timed(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if let Some(limiter) = &state.ingress
        && let Err(not_until) = limiter.check_key(&peer.ip())
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut res = response::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests from {}; retry in {secs} s (--ingress-rate)",
                peer.ip()
            ),
        );
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs.max(1)));
        return res;
    }
    match tokio::time::timeout(state.request_timeout, route(state, req, peer.ip())).await {
        Ok(res) => res,
        Err(_) => {
            let mut res = response::error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request did not arrive in full within {:?} (--request-timeout)",
                    state.request_timeout
                ),
            );
            res.headers_mut()
                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            res
        }
    }
}

/// The response for a refused request.
fn denied(d: Denied, what: &str) -> Response<Body> {
    match d {
        Denied::Unauthenticated => {
            let mut res = response::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("{what}: send a valid token as `Authorization: Bearer <token>`"),
            );
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            res
        }
        Denied::Forbidden { needs, has } => response::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs the {needs} role; this token has {has}"),
        ),
    }
}

async fn route(state: &State, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/v1/prefect/") {
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() || name.contains('/') {
            return response::not_found(&path);
        }
        if req.method() != Method::POST {
            return response::method_not_allowed("POST");
        }
        if let Err(d) = state.tokens.webhook(req.headers()) {
            return denied(d, "the Prefect intake needs the webhook token");
        }
        return intake::handle(state, name, req).await;
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/healthz" {
        return if get {
            response::json(StatusCode::OK, &json!({"status": "ok"}))
        } else {
            response::method_not_allowed("GET, HEAD")
        };
    }
    if let Some(needs) = required_role(&path, req.method())
        && let Err(d) = state.tokens.api(req.headers(), peer, needs)
    {
        return denied(d, &format!("{} {path}", req.method()));
    }
    if let Some(rest) = path.strip_prefix("/v1/dead-letters/") {
        return dead_letter(state, rest, req.method()).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/actions/").filter(|r| !r.is_empty()) {
        let method = req.method().clone();
        return actions::handle(state, Some(rest), &method, bytes::Bytes::new()).await;
    }
    match path.as_str() {
        "/v1/actions" => {
            let method = req.method().clone();
            let body = read_small_body(state, req).await;
            actions::handle(state, None, &method, body).await
        }
        "/v1/spool" if get => response::json(StatusCode::OK, &json!(state.spool.stats())),
        "/v1/dead-letters" if get => match state.spool.dead_letters() {
            Ok(list) => response::json(StatusCode::OK, &json!({"dead_letters": list})),
            Err(e) => internal(&e),
        },
        "/v1/spool" | "/v1/dead-letters" => response::method_not_allowed("GET, HEAD"),
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

/// The role an API endpoint needs; `None` for paths that are not the API.
pub fn required_role(path: &str, method: &Method) -> Option<Role> {
    let write = !(method == Method::GET || method == Method::HEAD);
    if path == "/v1/actions" || path.starts_with("/v1/actions/") {
        return Some(if write { Role::User } else { Role::Viewer });
    }
    if path == "/v1/spool" || path == "/v1/dead-letters" {
        return Some(Role::Viewer);
    }
    if let Some(rest) = path.strip_prefix("/v1/dead-letters/") {
        return Some(match *method {
            Method::DELETE => Role::Admin,
            _ if rest.ends_with("/retry") => Role::User,
            _ => Role::Viewer,
        });
    }
    None
}

/// An API request body, capped at 64 KiB (an action is a few hundred bytes).
async fn read_small_body(state: &State, req: Request<Incoming>) -> bytes::Bytes {
    use http_body_util::BodyExt;
    let limit = state.max_body.min(64 * 1024);
    http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}
