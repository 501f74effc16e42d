//! Shared test support: the PagerDuty double, the spec check, the bridge
//! process, fixtures and an HTTP client.

#![allow(dead_code)]

pub mod bridge;
pub mod gate;
pub mod limit;
pub mod measure;
pub mod pagerduty;
pub mod proxy;
pub mod spec;
pub mod wait;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A 32-character integration key, as PagerDuty issues them.
pub const KEY_A: &str = "R0UTINGKEYAAAAAAAAAAAAAAAAAAAAAA";
/// Another one.
pub const KEY_B: &str = "R0UTINGKEYBBBBBBBBBBBBBBBBBBBBBB";

/// `fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One captured request: its raw body and `X-PREFECT-EVENT-ID`, if any.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Raw body bytes.
    pub body: Vec<u8>,
    /// `X-PREFECT-EVENT-ID` header.
    pub event_id: Option<String>,
}

/// The requests in a capture file: Prefect 3 captures are lists of requests
/// with a raw `body`; Prefect 1 samples are `{headers, body}` objects.
pub fn captures(path: &Path) -> Vec<Capture> {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    match v {
        Value::Array(requests) => requests
            .iter()
            .map(|r| Capture {
                body: r["body"].as_str().expect("raw body").as_bytes().to_vec(),
                event_id: r["headers"].as_array().and_then(|h| {
                    h.iter().find_map(|pair| {
                        let pair = pair.as_array()?;
                        (pair.first()?.as_str()?.eq_ignore_ascii_case("x-prefect-event-id"))
                            .then(|| pair.get(1)?.as_str().map(str::to_owned))?
                    })
                }),
            })
            .collect(),
        Value::Object(o) => vec![Capture {
            body: o["body"].to_string().into_bytes(),
            event_id: o["headers"]["X-PREFECT-EVENT-ID"].as_str().map(str::to_owned),
        }],
        _ => panic!("unexpected fixture shape in {}", path.display()),
    }
}

/// The first request of a Prefect 3 capture, by scenario name.
pub fn capture(name: &str) -> Vec<u8> {
    captures(&fixtures().join(format!("prefect/captures/{name}.json")))
        .remove(0)
        .body
}

/// A client builder, with the ring provider installed (reqwest is built
/// without one).
pub fn client_builder() -> reqwest::ClientBuilder {
    limit::arm();
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// An HTTP client for talking to the bridge.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

/// Posts `body` with no Content-Type, as Prefect's call-webhook does.
pub async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let res = client().post(url).body(body).send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is not JSON: {text:?}")),
    )
}

/// A flow-run event of `body` moved to another state, as a new Prefect
/// event with its own id (each state change is one).
pub fn with_state(body: &[u8], kind: &str, name: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).expect("event JSON");
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    v["id"] = Value::from(format!("{id}-{name}"));
    v["event"] = Value::from(format!("prefect.flow-run.{name}"));
    v["resource"]["prefect.state-type"] = Value::from(kind);
    v["resource"]["prefect.state-name"] = Value::from(name);
    v["payload"]["validated_state"] = serde_json::json!({"type": kind, "name": name});
    v.to_string().into_bytes()
}

/// The bridge on a free port, sending to `double`, with the action
/// `oncall` on [`KEY_A`], plus `extra` flags.
pub fn serve_oncall(double: &pagerduty::Double, extra: &[&str]) -> bridge::Bridge {
    let url = double.url();
    let action = format!("oncall={KEY_A}");
    let mut args = vec!["--pagerduty-url", &url, "--action", &action];
    args.extend_from_slice(extra);
    bridge::Bridge::serve(&args)
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("JSON answer")
}

/// The status of a GET of `url`.
pub async fn get_status(url: &str) -> u16 {
    client().get(url).send().await.expect("get").status().as_u16()
}

/// GETs `url` and returns the answer's text (`/metrics`, say).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

/// Writes `request` as raw bytes on a new connection to `addr` and returns
/// what the first read answers (empty when the server closed without a
/// word), for requests no HTTP client would send. Waits at most 5 s.
pub fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = vec![0; 8192];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
