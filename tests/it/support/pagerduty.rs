//! A PagerDuty Events API v2 double: a real HTTP server on loopback that
//! checks every request against the official spec and the documented limits
//! ([`super::spec`]) and answers as PagerDuty does: 202 with a dedup key, 400
//! with `errors`, 429, or 5xx, as a test scripts it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::spec::Spec;

/// How the double answers a valid event.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 202 Accepted.
    Accept,
    /// 429, with `Retry-After: <secs>` when given.
    RateLimit(Option<u64>),
    /// 429 with this exact `Retry-After` value (an HTTP date, a huge number).
    RateLimitHeader(String),
    /// Any other status (500, 503, …) with PagerDuty's error body.
    Status(u16),
    /// 400 with these `errors`, as PagerDuty answers an event it refuses
    /// for reasons the spec cannot show (a disabled integration, say).
    Reject(Vec<String>),
}

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The parsed body (`Null` when it was not JSON).
    pub body: Value,
    /// Spec and limit violations; empty when valid.
    pub errors: Vec<String>,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// `event_action`.
    pub fn action(&self) -> &str {
        self.body["event_action"].as_str().unwrap_or_default()
    }

    /// `dedup_key`.
    pub fn dedup_key(&self) -> &str {
        self.body["dedup_key"].as_str().unwrap_or_default()
    }
}

#[derive(Debug)]
struct Shared {
    spec: Spec,
    received: Mutex<Vec<Received>>,
    default: Mutex<Reply>,
    script: Mutex<VecDeque<Reply>>,
    delay: Mutex<Duration>,
    /// PagerDuty's rate limit, when a test sets one.
    throttle: Mutex<Option<Throttle>>,
    /// Keep counts only, not what was received (a long benchmark).
    counts_only: std::sync::atomic::AtomicBool,
    tally: Mutex<Tally>,
    notify: Notify,
}

/// How many requests were answered what.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// All requests.
    pub received: usize,
    /// Answered 202.
    pub accepted: usize,
    /// Refused by the spec or the documented limits.
    pub invalid: usize,
}

/// PagerDuty's rate limit per routing key, as a test sets it.
#[derive(Debug)]
enum Throttle {
    /// A token bucket: `per_sec` a second, bursts of `burst`.
    Bucket {
        per_sec: f64,
        burst: f64,
        buckets: std::collections::HashMap<String, (f64, Instant)>,
    },
    /// As PagerDuty documents it: at most `n` calls in any window of `per`
    /// looking back from now. Every valid call counts, refused ones too.
    Window {
        n: usize,
        per: Duration,
        calls: std::collections::HashMap<String, VecDeque<Instant>>,
    },
}

impl Throttle {
    fn take(&mut self, key: &str) -> bool {
        let now = Instant::now();
        match self {
            Self::Bucket {
                per_sec,
                burst,
                buckets,
            } => {
                let (tokens, last) = buckets.entry(key.to_owned()).or_insert((*burst, now));
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * *per_sec).min(*burst);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            Self::Window { n, per, calls } => {
                let calls = calls.entry(key.to_owned()).or_default();
                while calls.front().is_some_and(|t| now.duration_since(*t) >= *per) {
                    calls.pop_front();
                }
                let ok = calls.len() < *n;
                calls.push_back(now);
                ok
            }
        }
    }
}

/// A running double; stops when dropped.
#[derive(Debug)]
pub struct Double {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Double {
    /// Starts on a free loopback port, answering 202.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr` (`0.0.0.0:<port>` for containers to reach it).
    pub async fn start_on(addr: &str) -> Self {
        super::limit::arm();
        let listener = TcpListener::bind(addr).await.expect("bind double");
        let addr = listener.local_addr().expect("double addr");
        let shared = Arc::new(Shared {
            spec: Spec::load(),
            received: Mutex::new(Vec::new()),
            default: Mutex::new(Reply::Accept),
            script: Mutex::new(VecDeque::new()),
            delay: Mutex::new(Duration::ZERO),
            throttle: Mutex::new(None),
            counts_only: std::sync::atomic::AtomicBool::new(false),
            tally: Mutex::new(Tally::default()),
            notify: Notify::new(),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// The base URL to give the bridge as `--pagerduty-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How valid events are answered from now on.
    pub fn set_reply(&self, reply: Reply) {
        *self.shared.default.lock().expect("lock") = reply;
    }

    /// Answers the next valid events with these, then the default again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().expect("lock").extend(replies);
    }

    /// From now on, each routing key may send `per_sec` events a second
    /// with bursts of `burst`; beyond that a valid event gets 429 without
    /// `Retry-After`.
    pub fn throttle(&self, per_sec: f64, burst: f64) {
        *self.shared.throttle.lock().expect("lock") = Some(Throttle::Bucket {
            per_sec,
            burst,
            buckets: std::collections::HashMap::new(),
        });
    }

    /// From now on, a valid event gets 429 when its routing key already
    /// made `n` calls in the `per` before it (PagerDuty's documented limit:
    /// ~120 per 60 s looking back from now). Refused calls count too.
    pub fn throttle_window(&self, n: usize, per: Duration) {
        *self.shared.throttle.lock().expect("lock") = Some(Throttle::Window {
            n,
            per,
            calls: std::collections::HashMap::new(),
        });
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().expect("lock") = delay;
    }

    /// How many requests were received, without copying them.
    pub fn count(&self) -> usize {
        self.shared.received.lock().expect("lock").len()
    }

    /// From now on keeps only the [`Tally`], not the requests (a long
    /// benchmark would fill memory with them).
    pub fn keep_counts_only(&self) {
        self.shared
            .counts_only
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many requests were answered what, since the start.
    pub fn tally(&self) -> Tally {
        *self.shared.tally.lock().expect("lock")
    }

    /// What was received from index `from` on.
    pub fn received_since(&self, from: usize) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .expect("lock")
            .get(from..)
            .map(<[Received]>::to_vec)
            .unwrap_or_default()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Events answered 202 so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.status == 202).collect()
    }

    /// Waits until `pred` holds for what was received, or panics after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            let seen = self.received();
            if pred(&seen) {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen = self.received();
                if pred(&seen) {
                    return seen;
                }
                panic!(
                    "timed out waiting for {what}; the double received {} request(s): {:#?}",
                    seen.len(),
                    seen
                );
            }
        }
    }

    /// Waits until `n` events were answered 202.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, &format!("{n} accepted event(s)"), |r| {
            r.iter().filter(|r| r.status == 202).count() >= n
        })
        .await
        .into_iter()
        .filter(|r| r.status == 202)
        .collect()
    }
}

async fn answer(state: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/v2/enqueue" || req.method() != hyper::Method::POST {
        return reply(404, json!({"status": "not found", "message": "Not Found"}), None);
    }
    let content_type_ok = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let raw = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = *state.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (body, mut errors) = match serde_json::from_slice::<Value>(&raw) {
        Ok(body) => {
            let errors = state.spec.check_parsed(raw.len(), &body);
            (body, errors)
        }
        Err(e) => (Value::Null, vec![format!("JSON parse error: {e}")]),
    };
    if !content_type_ok {
        errors.push("Content-Type must be application/json".to_owned());
    }
    let (status, response, retry_after) = if !errors.is_empty() {
        (
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
            None,
        )
    } else if state
        .throttle
        .lock()
        .expect("lock")
        .as_mut()
        .is_some_and(|t| !t.take(body["routing_key"].as_str().unwrap_or_default()))
    {
        (
            429,
            json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."}),
            None,
        )
    } else {
        let next = state.script.lock().expect("lock").pop_front();
        match next.unwrap_or_else(|| state.default.lock().expect("lock").clone()) {
            Reply::Accept => {
                let key = body["dedup_key"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{:032x}", rand_u128()));
                (
                    202,
                    json!({"status": "success", "message": "Event processed", "dedup_key": key}),
                    None,
                )
            }
            Reply::RateLimit(after) => (
                429,
                json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."}),
                after.map(|s| s.to_string()),
            ),
            Reply::RateLimitHeader(value) => (
                429,
                json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."}),
                Some(value),
            ),
            Reply::Reject(errors) => (
                400,
                json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
                None,
            ),
            Reply::Status(code) => (
                code,
                json!({"status": "error", "message": "Internal Server Error"}),
                None,
            ),
        }
    };
    {
        let mut tally = state.tally.lock().expect("lock");
        tally.received += 1;
        tally.accepted += usize::from(status == 202);
        tally.invalid += usize::from(!errors.is_empty());
    }
    if !state.counts_only.load(std::sync::atomic::Ordering::Relaxed) {
        state.received.lock().expect("lock").push(Received {
            body,
            errors,
            status,
            at: Instant::now(),
        });
    }
    state.notify.notify_waiters();
    reply(status, response, retry_after)
}

fn reply(status: u16, body: Value, retry_after: Option<String>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    res.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    if let Some(value) = retry_after {
        res.headers_mut()
            .insert("retry-after", value.parse().expect("header"));
    }
    res
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let s = RandomState::new();
    (u128::from(s.hash_one(1u8)) << 64) | u128::from(s.hash_one(2u8))
}
