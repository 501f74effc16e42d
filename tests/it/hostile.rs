//! Hostile inputs through the real binary: each has a defined outcome (the
//! fail-open page, or a 4xx with a JSON error naming the problem), never a
//! 5xx, a hang or a crash, and the process stays healthy and bounded after.

use std::time::Duration;

use serde_json::Value;

use crate::support::pagerduty::Double;
use crate::support::spec::Spec;
use crate::support::{capture, serve_oncall};

/// What a case must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 202: translated (or paged as unrecognised), spec-valid at the double.
    Accepted,
    /// This 4xx with a JSON `error`.
    Client(u16),
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = "[".repeat(depth);
    s.push_str(&"]".repeat(depth));
    s.into_bytes()
}

fn event_with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&capture("failed_event_tojson")).expect("json");
    f(&mut v);
    v.to_string().into_bytes()
}

#[tokio::test]
async fn hostile_inputs_get_defined_outcomes_and_the_bridge_survives() {
    use Expect::{Accepted, Client};
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--max-body", "1MiB"]);
    let big_string = format!(
        "{{\"event\": \"prefect.flow-run.Failed\", \"x\": \"{}\"}}",
        "a".repeat(900_000)
    );
    let big_array = format!("[{}]", vec!["1"; 200_000].join(","));
    let many_keys = format!(
        "{{{}}}",
        (0..40_000)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let huge_message = event_with(|v| {
        v["resource"]["prefect.state-message"] = Value::from("m".repeat(700_000));
    });
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("empty body", vec![], Accepted),
        ("whitespace", b" \n\t ".to_vec(), Accepted),
        ("invalid UTF-8", b"\xff\xfe\xfa{".to_vec(), Accepted),
        ("UTF-8 BOM then JSON", [b"\xef\xbb\xbf".as_slice(), &capture("failed_event_tojson")].concat(), Accepted),
        ("truncated JSON", capture("failed_event_tojson")[..300].to_vec(), Accepted),
        ("nested 100k deep", nested(100_000), Accepted),
        ("nested 127 deep", nested(127), Accepted),
        ("huge number", b"{\"event\": 1e999999}".to_vec(), Accepted),
        ("huge integer", format!("{{\"n\": {}}}", "9".repeat(5000)).into_bytes(), Accepted),
        ("duplicate keys", b"{\"event\":\"a\",\"event\":\"prefect.flow-run.Failed\",\"resource\":{}}".to_vec(), Accepted),
        ("NUL bytes raw", b"\0\0\0{\"event\"\0}".to_vec(), Accepted),
        ("NUL in strings", event_with(|v| v["resource"]["prefect.resource.name"] = Value::from("a\u{0}b")), Accepted),
        ("control chars in message", event_with(|v| v["resource"]["prefect.state-message"] = Value::from("\u{1b}[31m\r\n\u{7}")), Accepted),
        ("enormous string", big_string.into_bytes(), Accepted),
        ("enormous array", big_array.into_bytes(), Accepted),
        ("40k keys", many_keys.into_bytes(), Accepted),
        ("700 KB state message", huge_message, Accepted),
        ("wrong type: event number", b"{\"event\": 5, \"resource\": {\"prefect.resource.id\": 7}}".to_vec(), Accepted),
        ("wrong type: resource string", b"{\"event\": \"prefect.flow-run.Failed\", \"resource\": \"x\"}".to_vec(), Accepted),
        ("wrong type: related object", event_with(|v| v["related"] = Value::from("nope")), Accepted),
        ("wrong type: labels numbers", event_with(|v| v["resource"]["prefect.state-type"] = Value::from(3)), Accepted),
        ("resource id without kind", event_with(|v| v["resource"]["prefect.resource.id"] = Value::from("prefect.")), Accepted),
        ("resource id 10 KB", event_with(|v| v["resource"]["prefect.resource.id"] = Value::from(format!("prefect.flow-run.{}", "x".repeat(10_000)))), Accepted),
        ("javascript link", b"{\"event\": {\"event\": \"prefect.flow-run.Failed\", \"resource\": {}}, \"flow_run_ui\": \"javascript:alert(1)\"}".to_vec(), Accepted),
        ("link with credentials", b"{\"flow_run_ui\": \"https://u:p@evil.example/runs/flow-run/1\"}".to_vec(), Accepted),
        ("bad severity", b"{\"payload\": {\"summary\": \"s\", \"severity\": \"HIGH!!\"}}".to_vec(), Accepted),
        ("summary 1 MB-ish", format!("{{\"payload\": {{\"summary\": \"{}\"}}}}", "s".repeat(800_000)).into_bytes(), Accepted),
        ("JSON string of a string of an event", serde_json::to_vec(&Value::from(serde_json::to_string(&Value::from(String::from_utf8(capture("failed_event_tojson")).expect("utf-8"))).expect("json"))).expect("json"), Accepted),
        ("top-level number", b"42".to_vec(), Accepted),
        ("top-level null", b"null".to_vec(), Accepted),
        ("python repr cut short", b"occurred=DateTime(2026, 11 event='prefect.flow-run.Failed' resource=Resource(root={'prefect.resource.id': 'prefect.flow-run.x".to_vec(), Accepted),
        ("over the body limit", vec![b'x'; 1024 * 1024 + 1], Client(413)),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let http = crate::support::client();
    let mut accepted = 0;
    for (what, body, expect) in &cases {
        let res = http
            .post(b.intake("oncall"))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        match expect {
            Accepted => {
                assert!(
                    status == 202 || (status == 200 && v["status"] == "duplicate"),
                    "{what}: {status} {v}"
                );
                if status == 202 {
                    accepted += 1;
                }
            }
            Client(code) => {
                assert_eq!(status, *code, "{what}: {v}");
                assert!(v["error"].is_string() && v["detail"].is_string(), "{what}: {v}");
            }
        }
    }
    // Requests the intake never parses.
    let raw = |req: &[u8]| crate::support::raw_exchange(b.addr, req);
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(200_000)
    );
    let answer = raw(huge_header.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "huge header: {answer}"
    );
    let answer = raw(b"GARBAGE\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "garbage request line: {answer}"
    );
    let answer = raw(b"POST /v1/prefect/../../etc/passwd HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404"), "path traversal: {answer}");
    let answer = raw(format!(
        "POST /v1/prefect/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(5000)
    )
    .as_bytes());
    assert!(answer.starts_with("HTTP/1.1 404"), "long action name: {answer}");
    let answer =
        raw(b"POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 408"),
        "chunked over limit: {answer}"
    );

    // Everything accepted reaches the double within the limits.
    let got = double
        .wait_until(Duration::from_secs(30), "every accepted case", |r| {
            r.len() >= accepted
        })
        .await;
    let spec = Spec::load();
    for r in &got {
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(spec.check_enqueue(r.body.to_string().as_bytes()).is_empty());
        for link in r.body["links"].as_array().into_iter().flatten() {
            let href = link["href"].as_str().expect("href");
            assert!(
                !href.starts_with("javascript") && !href.contains("u:p@"),
                "{href}"
            );
        }
    }
    // Still healthy, and memory stayed bounded.
    let health = crate::support::client()
        .get(format!("{}/healthz", b.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).expect("proc status");
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    assert!(hwm_kb < 256 * 1024, "peak RSS {hwm_kb} kB");
}
