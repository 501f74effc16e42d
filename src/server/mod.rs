//! The HTTP server: accepts connections (plain or TLS), bounds them (per
//! client and overall, idle and first-request deadlines), and hands each
//! request to its [`routes::Route`]. The route table, with who may call
//! each route, is in [`routes`]; every error's status and body in [`error`].

mod actions;
pub(crate) mod auth;
pub mod budget;
mod error;
mod intake;
mod response;
mod routes;
pub(crate) mod tls;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::net::{IpAddr, SocketAddr};

use governor::DefaultKeyedRateLimiter;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::actions::Actions;
use crate::spool::Spool;
use crate::translate;
use auth::Tokens;
use error::ApiError;
use response::Body;
use routes::{Access, Route};

/// Longest a client may take to send its request head (less when
/// `--request-timeout` is shorter).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long requests in flight may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may wait for a slot once idle ones were asked
/// to close, before it is closed itself.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How long an idle connection asked to close may take over it (an HTTP/2
/// GOAWAY) before it is dropped: it has no request to finish.
const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(250);
/// How long a connection must have been idle (or handshaking) before it can
/// be closed to make room: a new connection whose request is still on its
/// way is not idle, it is just young.
const SHED_MIN_IDLE: Duration = Duration::from_secs(1);
/// While a connection waits for a slot, how often idle connections are asked
/// again to close: busy ones become idle as their requests finish.
const SHED_EVERY: Duration = Duration::from_millis(50);

/// What every request handler shares.
#[derive(Debug)]
pub struct State {
    /// Actions by name; API-created ones come and go at run time (shared
    /// with reconciliation).
    pub actions: Arc<std::sync::RwLock<Actions>>,
    /// The `--action` routing keys read again from their files.
    pub(crate) action_keys: crate::rotation::ActionKeys,
    /// Names given with `--action` (not deletable over the API).
    pub fixed_actions: std::collections::HashSet<String>,
    /// Translation options.
    pub options: translate::Options,
    /// The durable outbox.
    pub spool: Spool,
    /// Body limit in bytes.
    pub max_body: usize,
    /// Memory for all bodies in hand at once.
    pub body_budget: budget::BodyBudget,
    /// Webhook and API tokens.
    pub tokens: Tokens,
    /// Whole-request time limit.
    pub request_timeout: Duration,
    /// What delivery knows per routing key (for `/v1/spool`).
    pub keys: crate::deliver::Keys,
    /// What is counted, for `/metrics`.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// What reconciliation with Prefect has done, when it runs.
    pub reconcile: Option<crate::prefect_api::reconcile::SharedStatus>,
    /// Prefect lookups, to name what a payload left unnamed.
    pub lookups: Option<crate::prefect_api::lookup::Lookups>,
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

    /// The action called `name`, with its routing key as of now.
    pub(crate) fn action(&self, name: &str) -> Option<crate::actions::Action> {
        let action = self.actions().get(name).cloned()?;
        Some(self.action_keys.current(action))
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
    /// Most connections at once from one client IP.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Serve `GET /metrics` alone, without a token (`--metrics-listen`, for
    /// a scraper beside the bridge); everything else is 404.
    pub metrics_only: bool,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("idle_timeout", &self.idle_timeout)
            .field("metrics_only", &self.metrics_only)
            .finish()
    }
}

/// What one connection has done, for its idle deadline: whatever the
/// protocol (HTTP/1, h2c, h2 over TLS), a connection is idle while it has no
/// request in flight, and one idle too long is closed, so that a peer that
/// connects and sends nothing (or only an HTTP/2 preface, or only PINGs)
/// cannot hold a slot.
#[derive(Debug)]
struct Activity {
    started: std::time::Instant,
    /// Requests in flight.
    active: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `started` to the last request start or end.
    last: std::sync::atomic::AtomicU64,
    /// Whether a request was ever made on it.
    used: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            active: 0.into(),
            last: 0.into(),
            used: false.into(),
        }
    }

    fn touch(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Relaxed);
    }

    /// How long it has been idle; `None` while a request is in flight.
    fn idle_for(&self) -> Option<Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.active.load(Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        activity.active.fetch_add(1, Relaxed);
        activity.used.store(true, Relaxed);
        activity.touch();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Connections per client IP: open, and waiting for a place.
#[derive(Debug, Default)]
struct PerIp {
    peers: std::sync::Mutex<std::collections::HashMap<IpAddr, Peer>>,
    /// Told whenever a connection closes.
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Peer {
    open: usize,
    waiting: usize,
    /// Asks this peer's idle connections to close.
    shed: Arc<tokio::sync::Notify>,
}

/// One connection's place in [`PerIp`], given back when dropped.
struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, Peer>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a connection from `ip`. At the cap, the peer's idle
    /// connections are asked to close and this waits up to `wait` for one;
    /// at most a quarter of the cap may wait at once, so that one peer cannot
    /// fill the room where every new connection waits.
    async fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        cap: usize,
        wait: Duration,
    ) -> Option<(IpSlot, Arc<tokio::sync::Notify>)> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut waiting = false;
        let outcome = loop {
            let freed = self.freed.notified();
            {
                let mut peers = self.lock();
                let peer = peers.entry(ip).or_default();
                if peer.open < cap {
                    peer.open += 1;
                    break Some((IpSlot(self.clone(), ip), peer.shed.clone()));
                }
                if !waiting {
                    if peer.waiting >= (cap / 4).max(1) {
                        break None;
                    }
                    peer.waiting += 1;
                    waiting = true;
                }
                peer.shed.notify_waiters();
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break None;
            }
            let _ = tokio::time::timeout_at(deadline.min(now + SHED_EVERY), freed).await;
        };
        if waiting {
            let mut peers = self.lock();
            if let Some(peer) = peers.get_mut(&ip) {
                peer.waiting -= 1;
            }
            peers.retain(|_, p| p.open > 0 || p.waiting > 0);
        }
        outcome
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut peers = self.0.lock();
        if let Some(peer) = peers.get_mut(&self.1) {
            peer.open -= 1;
            if peer.open == 0 && peer.waiting == 0 {
                peers.remove(&self.1);
            }
        }
        drop(peers);
        self.0.freed.notify_waiters();
    }
}

/// Serves until `shutdown` is cancelled, then lets requests in flight finish.
pub async fn run(listen: Listen, state: Arc<State>, shutdown: CancellationToken) {
    let Listen {
        listener,
        tls,
        max_connections,
        max_connections_per_ip,
        idle_timeout,
        metrics_only,
    } = listen;
    let slots = Arc::new(Semaphore::new(max_connections));
    let pending = Arc::new(Semaphore::new(max_connections));
    let per_ip = Arc::new(PerIp::default());
    // Told when every slot is taken: idle connections close to make room.
    let shed = Arc::new(tokio::sync::Notify::new());
    let tracker = tokio_util::task::TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slowloris: a client gets at most this long to send its request head,
    // and a new connection this long to start its first request.
    let header_timeout = HEADER_READ_TIMEOUT.min(state.request_timeout);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Prefect's heads are a few hundred bytes; bound what a client can
        // make us buffer (a longer head gets 431).
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let deadlines = Deadlines {
        first: header_timeout,
        idle: idle_timeout.max(Duration::from_millis(100)),
    };
    loop {
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
        // Connections waiting for a place are bounded too: past that, closed.
        let Ok(waiting) = pending.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer.ip(), "connection refused: too many are waiting for a slot");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let state = state.clone();
        let service = {
            let activity = activity.clone();
            service_fn(move |req| {
                let state = state.clone();
                let in_flight = InFlight::new(&activity);
                async move {
                    let res = if metrics_only {
                        metrics_alone(&state, &req)
                    } else {
                        timed(&state, req, peer).await
                    };
                    drop(in_flight);
                    Ok::<_, Infallible>(res)
                }
            })
        };
        let (builder, tls, shutdown, shed) = (builder.clone(), tls.clone(), shutdown.clone(), shed.clone());
        let (slots, per_ip) = (slots.clone(), per_ip.clone());
        tracker.spawn(async move {
            let Some((ip_slot, peer_shed)) = per_ip.take(peer.ip(), max_connections_per_ip, SLOT_WAIT).await else {
                tracing::warn!(peer = %peer.ip(), limit = max_connections_per_ip,
                    "connection refused: this client has too many open (--max-connections-per-ip)");
                return;
            };
            let Some(permit) = slot(&slots, &shed).await else {
                tracing::warn!(peer = %peer.ip(), "connection refused: every slot is busy (--max-connections)");
                return;
            };
            drop(waiting);
            let _slots = (permit, ip_slot);
            let sheds = [&*shed, &*peer_shed];
            match tls {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    drive(conn, &activity, deadlines, &shutdown, sheds).await;
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                    tokio::pin!(handshake);
                    let started = tokio::time::Instant::now();
                    let stream = loop {
                        tokio::select! {
                            r = &mut handshake => match r {
                                Ok(Ok(s)) => break s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            },
                            () = shutdown.cancelled() => return,
                            // A stalled handshake is idle too: it makes room.
                            () = shed.notified() => {}
                            () = peer_shed.notified() => {}
                        }
                        if started.elapsed() >= SHED_MIN_IDLE {
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    drive(conn, &activity, deadlines, &shutdown, sheds).await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    tokio::select! {
        () = tracker.wait() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("requests still in flight after the drain timeout"),
    }
}

/// A connection slot; at the cap, idle connections are asked (again and
/// again) to close, for up to [`SLOT_WAIT`].
async fn slot(
    slots: &Arc<Semaphore>,
    shed: &tokio::sync::Notify,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    loop {
        match slots.clone().try_acquire_owned() {
            Ok(p) => return Some(p),
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        shed.notify_waiters();
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        let wait = slots.clone().acquire_owned();
        if let Ok(Ok(p)) = tokio::time::timeout_at(deadline.min(now + SHED_EVERY), wait).await {
            return Some(p);
        }
    }
}

/// When an idle connection is closed.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// Before its first request starts.
    first: Duration,
    /// Between requests.
    idle: Duration,
}

/// Serves one connection until it ends, closing it when it has been idle
/// past its deadline, when idle connections are asked to make room, or at
/// shutdown (after the requests in flight finish).
async fn drive<C>(
    conn: C,
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: &CancellationToken,
    [shed, peer_shed]: [&tokio::sync::Notify; 2],
) where
    C: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>
        + GracefulConnection,
{
    tokio::pin!(conn);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let limit = if activity.used.load(std::sync::atomic::Ordering::Relaxed) {
            deadlines.idle
        } else {
            deadlines.first
        };
        let check = match (closing, activity.idle_for()) {
            (Some(at), _) => at,
            (None, Some(idle)) => tokio::time::Instant::now() + limit.saturating_sub(idle),
            (None, None) => tokio::time::Instant::now() + limit,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(check) => {
                if closing.is_some() {
                    // It did not finish closing: drop it.
                    return;
                }
                if activity.idle_for().is_some_and(|idle| idle >= limit) {
                    conn.as_mut().graceful_close();
                    closing = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                }
            }
            () = shed.notified(), if closing.is_none() => closing = close_if_idle(conn.as_mut(), activity),
            () = peer_shed.notified(), if closing.is_none() => closing = close_if_idle(conn.as_mut(), activity),
            () = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_close();
                closing = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
        }
    }
}

/// Asked to make room: closes the connection if it has no request in
/// flight; returns when it must be gone by.
fn close_if_idle<C: GracefulConnection>(
    conn: std::pin::Pin<&mut C>,
    activity: &Activity,
) -> Option<tokio::time::Instant> {
    if activity.idle_for()? < SHED_MIN_IDLE {
        return None;
    }
    conn.graceful_close();
    Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE)
}

/// A connection that can be asked to finish its requests and close.
trait GracefulConnection {
    fn graceful_close(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConnection for auto::Connection<'static, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: auto::HttpServerConnExec<S::Future, Body>,
{
    fn graceful_close(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Applies the per-client-IP rate limit and the whole-request time limit
/// (slow bodies included), then routes.
async fn timed<B>(state: &State, req: Request<B>, peer: SocketAddr) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // Webhook answers are counted by outcome (metrics).
    let webhook = req.uri().path().starts_with("/v1/prefect/");
    if let Some(limiter) = &state.ingress
        && let Err(not_until) = limiter.check_key(&peer.ip())
    {
        let retry_after = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
        let e = ApiError::RateLimited {
            client: peer.ip(),
            retry_after,
        };
        if webhook {
            state.metrics.rejection(e.code());
        }
        return e.into_response();
    }
    // The intake bounds its own body read: once an event reaches the spool
    // its answer is worth waiting for (it is applied either way).
    let result = if webhook {
        route(state, req, peer.ip()).await
    } else {
        tokio::time::timeout(state.request_timeout, route(state, req, peer.ip()))
            .await
            .unwrap_or_else(|_| Err(state.timed_out()))
    };
    result.unwrap_or_else(|e| {
        if webhook {
            state.metrics.rejection(e.code());
        }
        e.into_response()
    })
}

impl State {
    /// `/v1/spool`: the spool's figures.
    fn stats(&self) -> crate::spool::Stats {
        let mut stats = self.spool.stats();
        stats.paused_keys = self.keys.paused();
        stats
    }

    /// `/metrics`: counters as counted, gauges as they are now.
    fn metrics_response(&self) -> Response<Body> {
        let mut now = self.spool.gauges();
        now.paused_keys = self.keys.paused() as u64;
        response::text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.encode(&now),
        )
    }

    /// The error for an action name that is not configured.
    pub(crate) fn unknown_action(&self, name: &str) -> ApiError {
        ApiError::UnknownAction {
            name: name.to_owned(),
            known: self.actions().names().into_iter().map(str::to_owned).collect(),
        }
    }

    /// The error for a request that did not arrive in full in time.
    pub(crate) fn timed_out(&self) -> ApiError {
        ApiError::RequestTimeout {
            limit: self.request_timeout,
        }
    }
}

/// `--metrics-listen`: `GET /metrics` and nothing else.
fn metrics_alone<B>(state: &State, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    match Route::parse(req.method(), path) {
        Ok(Route::Metrics) => state.metrics_response(),
        Err(e @ ApiError::MethodNotAllowed { .. }) if path == "/metrics" => e.into_response(),
        _ => ApiError::NotFound {
            path: path.to_owned(),
        }
        .into_response(),
    }
}

/// Finds the route, checks its access, runs its handler.
async fn route<B>(state: &State, req: Request<B>, peer: IpAddr) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let route = Route::parse(&method, &path)?;
    let denied = match route.access() {
        Access::Public => None,
        Access::Webhook => state
            .tokens
            .webhook(req.headers())
            .err()
            .map(|d| ApiError::denied(d, "the Prefect intake needs the webhook token".to_owned())),
        Access::Api(needs) => state
            .tokens
            .api(req.headers(), peer, needs)
            .err()
            .map(|d| ApiError::denied(d, format!("{method} {path}"))),
    };
    if let Some(e) = denied {
        return Err(e);
    }
    match route {
        Route::Intake { action } => intake::handle(state, action, req).await,
        Route::Health => Ok(response::json(StatusCode::OK, &json!({"status": "ok"}))),
        Route::Metrics => Ok(state.metrics_response()),
        Route::Ready => match state.spool.unready() {
            Some(reason) => Err(ApiError::NotReady { reason }),
            None => Ok(response::json(StatusCode::OK, &json!({"status": "ready"}))),
        },
        Route::ListActions => Ok(actions::list(state)),
        Route::CreateAction => actions::create(state, &read_small_body(state, req).await).await,
        Route::DeleteAction { name } => actions::delete(state, name).await,
        Route::TestAction { name } => actions::test(state, name).await,
        Route::SpoolStats => {
            let mut stats = json!(state.stats());
            if let Some(status) = &state.reconcile {
                let status = status
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                stats["reconcile"] = json!(status);
            }
            Ok(response::json(StatusCode::OK, &stats))
        }
        Route::ListDeadLetters => {
            let list = state.spool.dead_letters()?;
            Ok(response::json(StatusCode::OK, &json!({"dead_letters": list})))
        }
        Route::RetryDeadLetter { id } => {
            let id = dead_letter_id(id)?;
            match state.spool.retry_dead_letter(id).await? {
                Some(new_id) => Ok(response::json(
                    StatusCode::ACCEPTED,
                    &json!({"status": "queued", "id": new_id, "was": id}),
                )),
                None => Err(no_such_dead_letter(id)),
            }
        }
        Route::PurgeDeadLetter { id } => {
            let id = dead_letter_id(id)?;
            if state.spool.purge_dead_letter(id).await? {
                Ok(response::json(
                    StatusCode::OK,
                    &json!({"status": "purged", "id": id}),
                ))
            } else {
                Err(no_such_dead_letter(id))
            }
        }
    }
}

fn dead_letter_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::Missing {
        code: "not_found",
        detail: format!("{id:?} is not a dead letter id"),
    })
}

fn no_such_dead_letter(id: u64) -> ApiError {
    ApiError::Missing {
        code: "no_such_dead_letter",
        detail: format!("no dead letter {id}"),
    }
}

/// An API request body, capped at 64 KiB (an action is a few hundred bytes).
async fn read_small_body<B>(state: &State, req: Request<B>) -> bytes::Bytes
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    let limit = state.max_body.min(64 * 1024);
    http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}
