//! A gate in front of a real server: a loopback HTTP proxy that passes each
//! request through, or answers 500 itself while the test says so (Prefect's
//! API failing while the Prefect server behind it is fine), or answers the
//! next few requests with a status Prefect's server sends for a passing
//! trouble (503 for a busy database). It counts the requests it saw by
//! method and path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One answer the gate gives instead of passing a request on.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    /// Its status.
    pub status: u16,
    /// Its `Retry-After`, in seconds.
    pub retry_after: Option<u32>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    failing: AtomicBool,
    /// Requests still to refuse, with what.
    refusals: Mutex<Vec<Refusal>>,
    refused: AtomicUsize,
    seen: Mutex<HashMap<String, usize>>,
    http: reqwest::Client,
}

/// The gate; it stops when dropped with the test's runtime.
#[derive(Debug, Clone)]
pub struct Gate {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Gate {
    /// A gate to `upstream` (scheme, host and port), passing requests.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            failing: AtomicBool::new(false),
            refusals: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
            seen: Mutex::new(HashMap::new()),
            http: super::client(),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(s.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answer every request 500 (or pass them again).
    pub fn fail(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Answers the next requests with `refusals`, in order, then passes
    /// them again.
    pub fn refuse_next(&self, refusals: &[Refusal]) {
        let mut queue = self.shared.refusals.lock().expect("lock");
        queue.extend(refusals.iter().rev());
    }

    /// How many requests were refused as [`Self::refuse_next`] asked.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// How many requests `METHOD /path` (no query) the gate saw.
    pub fn seen(&self, method: &str, path: &str) -> usize {
        let seen = self.shared.seen.lock().expect("lock");
        seen.get(&format!("{method} {path}")).copied().unwrap_or(0)
    }
}

/// The gate's own answer, shaped as Prefect's server words its errors
/// (`{"exception_message": "Service Unavailable"}` for a 503).
fn refused(Refusal { status, retry_after }: Refusal) -> Response<Full<Bytes>> {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("refused by the test gate");
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(secs) = retry_after {
        b = b.header("retry-after", secs);
    }
    b.body(Full::new(Bytes::from(
        serde_json::json!({ "exception_message": reason }).to_string(),
    )))
    .expect("response")
}

async fn answer(
    s: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    *s.seen
        .lock()
        .expect("lock")
        .entry(format!("{} {}", parts.method, parts.uri.path()))
        .or_default() += 1;
    let refusal = if s.failing.load(Ordering::SeqCst) {
        Some(Refusal {
            status: 500,
            retry_after: None,
        })
    } else {
        let next = s.refusals.lock().expect("lock").pop();
        if next.is_some() {
            s.refused.fetch_add(1, Ordering::SeqCst);
        }
        next
    };
    if let Some(refusal) = refusal {
        return Ok(refused(refusal));
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = s
        .http
        .request(parts.method.clone(), format!("{}{path}", s.upstream))
        .body(body);
    // The Host header goes through: Prefect builds `next_page` from it, and
    // the bridge follows only pages under the URL it was given.
    for (name, value) in &parts.headers {
        if name != "content-length" {
            out = out.header(name, value);
        }
    }
    let response = match out.send().await {
        Ok(r) => {
            let status = r.status();
            let kind = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut b = Response::builder().status(status);
            if let Some(kind) = kind {
                b = b.header("content-type", kind);
            }
            b.body(Full::new(bytes)).expect("response")
        }
        Err(e) => Response::builder()
            .status(502)
            .body(Full::new(Bytes::from(e.to_string())))
            .expect("response"),
    };
    Ok(response)
}
