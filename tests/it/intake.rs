//! Behaviour through the real binary on loopback: each payload kind becomes
//! the right event at the PagerDuty double; resolves only after a trigger;
//! errors are JSON; routing keys never reach the log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bridge::Bridge;
use crate::support::pagerduty::{Double, Reply};
use crate::support::spec::Spec;
use crate::support::{KEY_A, KEY_B, capture, captures, client, fixtures, post, serve_oncall, with_state};

const WAIT: Duration = Duration::from_secs(15);

fn bridge(double: &Double, extra: &[&str]) -> Bridge {
    let mut args = vec!["--prefect-ui-url", "http://127.0.0.1:4200"];
    args.extend_from_slice(extra);
    serve_oncall(double, &args)
}

#[tokio::test]
async fn each_payload_kind_reaches_the_double_as_the_right_event() {
    let double = Double::start().await;
    let b = bridge(&double, &[]);
    let cloud1 = captures(&fixtures().join("prefect/cloud1/flow_run_state_failed.json")).remove(0);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "event",
            capture("failed_event_tojson"),
            "prefect/flow-run/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e",
            "error",
        ),
        (
            "envelope",
            capture("proactive_on_trigger"),
            "prefect/flow-run/7510093c-29d0-41a0-8fb4-c7a2b1a714d8",
            "warning",
        ),
        (
            "wrapper",
            capture("work_pool_not_ready"),
            "prefect/work-pool/bc9ecfd5-c78b-48b1-9be2-d18f66fbc4f8",
            "error",
        ),
        (
            "notification",
            capture("notify_event_json_200"),
            "prefect/flow-run/1b4ab277-939b-457a-a321-d1a6aed8192f",
            "error",
        ),
        (
            "cloud1",
            cloud1.body,
            "prefect/flow-run/3c9e8f7a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
            "error",
        ),
        (
            "crashed",
            capture("crashed_event_tojson"),
            "prefect/flow-run/13a2ec68-fdec-4caf-97b3-bf8a0a6a11ed",
            "critical",
        ),
    ];
    for (what, body, dedup_key, _) in &cases {
        let (status, answer) = post(&b.intake("oncall"), body.clone()).await;
        assert_eq!(status, 202, "{what}: {answer}");
        assert_eq!(answer["status"], "accepted", "{what}");
        assert_eq!(answer["event_action"], "trigger", "{what}");
        assert_eq!(answer["dedup_key"], *dedup_key, "{what}");
    }
    let got = double.wait_accepted(cases.len(), WAIT).await;
    let spec = Spec::load();
    for (what, _, dedup_key, severity) in &cases {
        let r = got
            .iter()
            .find(|r| r.dedup_key() == *dedup_key)
            .unwrap_or_else(|| panic!("{what}: no event with {dedup_key} at the double"));
        assert!(r.errors.is_empty(), "{what}: {:?}", r.errors);
        assert!(spec.check_enqueue(r.body.to_string().as_bytes()).is_empty());
        assert_eq!(r.body["routing_key"], KEY_A, "{what}");
        assert_eq!(r.body["payload"]["severity"], *severity, "{what}");
        assert!(
            r.body["payload"].get("links").is_none(),
            "{what}: links belong at the top level"
        );
        assert_eq!(r.body["client"], "Prefect");
    }
    let failed = got
        .iter()
        .find(|r| r.dedup_key().ends_with("39eed61c-5f3c-4e8c-8dbe-05b23d4c268e"))
        .expect("failed");
    assert_eq!(
        failed.body["links"][0],
        json!({"href": "http://127.0.0.1:4200/runs/flow-run/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e",
               "text": "Flow run hysterical-harrier"})
    );
    assert_eq!(failed.body["payload"]["timestamp"], "2026-11-28T08:36:31.998336Z");
    assert_eq!(
        failed.body["payload"]["custom_details"]["state"]["type"],
        "FAILED"
    );
}

#[tokio::test]
async fn empty_and_unknown_bodies_still_page() {
    let double = Double::start().await;
    let b = bridge(&double, &[]);
    for body in [
        &b""[..],
        b"not json at all",
        b"{\"what\": 1}",
        b"[1,2,3]",
        b"\xff\xfe",
    ] {
        let (status, answer) = post(&b.intake("oncall"), body.to_vec()).await;
        assert_eq!(status, 202, "{body:?}: {answer}");
        assert_eq!(answer["event_action"], "trigger");
        assert_eq!(answer["payload_format"], "unrecognised");
    }
    let got = double.wait_accepted(4, WAIT).await;
    for r in &got {
        let summary = r.body["payload"]["summary"].as_str().expect("summary");
        assert!(summary.contains("not recognised"), "{summary}");
        assert!(summary.contains("{{ event | tojson }}"), "{summary}");
        assert_eq!(r.body["payload"]["severity"], "error");
    }
}

#[tokio::test]
async fn resolves_go_out_only_after_a_trigger_on_the_same_key() {
    let double = Double::start().await;
    let crit = format!("crit={KEY_B}:critical");
    let b = bridge(&double, &["--action", &crit]);
    let completed = capture("completed_event_tojson");
    let failed = with_state(&completed, "FAILED", "Failed");
    let running = with_state(&completed, "RUNNING", "Running");

    // A green run with no open alert: nothing to resolve, nothing sent.
    let (status, answer) = post(
        &b.intake("oncall"),
        with_state(&completed, "COMPLETED", "Completed"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ignored");

    // Failure through key A; recovery through key B must not resolve it.
    assert_eq!(post(&b.intake("oncall"), failed.clone()).await.0, 202);
    double.wait_accepted(1, WAIT).await;
    let (status, answer) = post(&b.intake("crit"), completed.clone()).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")));
    // RUNNING does not fix a failure.
    assert_eq!(post(&b.intake("oncall"), running.clone()).await.0, 200);
    // COMPLETED does.
    let (status, answer) = post(&b.intake("oncall"), completed.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["event_action"], "resolve");
    // Once (a second Completed event for the run finds nothing open).
    let (status, answer) = post(&b.intake("oncall"), with_state(&completed, "COMPLETED", "Cached")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")));

    let got = double.wait_accepted(2, WAIT).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!((got[0].action(), got[1].action()), ("trigger", "resolve"));
    assert_eq!(got[0].dedup_key(), got[1].dedup_key());
    assert_eq!(got[1].body["routing_key"], KEY_A);
    assert!(got[1].body.get("payload").is_none());
}

#[tokio::test]
async fn running_resolves_a_late_alert_and_fixed_severity_wins() {
    let double = Double::start().await;
    let crit = format!("crit={KEY_B}:critical");
    let b = bridge(&double, &["--action", &crit]);
    let late = capture("late_reactive");
    let running = with_state(&late, "RUNNING", "Running");
    let (status, answer) = post(&b.intake("crit"), late).await;
    assert_eq!(status, 202);
    assert_eq!(
        answer["severity"], "critical",
        "the action's fixed severity overrides auto"
    );
    double.wait_accepted(1, WAIT).await;
    let (status, answer) = post(&b.intake("crit"), running).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["event_action"], "resolve");
    let got = double.wait_accepted(2, WAIT).await;
    assert_eq!((got[0].action(), got[1].action()), ("trigger", "resolve"));
    assert_eq!(got[1].body["routing_key"], KEY_B);
}

#[tokio::test]
async fn a_new_work_pool_does_not_page_at_high_urgency() {
    let double = Double::start().await;
    let b = bridge(&double, &[]);
    let catalog: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("prefect/events_catalog.json")).expect("read"),
    )
    .expect("json");
    let created_not_ready = catalog["prefect.work-pool.not-ready"]["example"].to_string();
    let (status, answer) = post(&b.intake("oncall"), created_not_ready).await;
    assert_eq!(status, 202);
    assert_eq!(answer["severity"], "info", "{answer}");
    // The same pool going not-ready after it was ready pages at high urgency.
    let (_, answer) = post(&b.intake("oncall"), capture("work_pool_not_ready")).await;
    assert_eq!(answer["severity"], "error");
    double.wait_accepted(2, WAIT).await;
    // And `ready` resolves it.
    let (status, answer) = post(&b.intake("oncall"), capture("work_pool_ready")).await;
    assert_eq!((status, answer["event_action"].as_str()), (202, Some("resolve")));
    double.wait_accepted(3, WAIT).await;
}

#[tokio::test]
async fn http_errors_are_json_and_name_the_problem() {
    let double = Double::start().await;
    let b = bridge(&double, &["--max-body", "1KiB"]);
    let (status, answer) = post(&b.intake("nope"), "{}").await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"], "unknown_action");
    assert!(
        answer["detail"].as_str().expect("detail").contains("oncall"),
        "{answer}"
    );
    assert_eq!(answer["actions"], json!(["oncall"]));

    let res = client().get(b.intake("oncall")).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "method_not_allowed");

    let (status, answer) = post(&b.intake("oncall"), vec![b'x'; 4096]).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");

    let res = client()
        .get(format!("{}/nowhere", b.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 404);
    let body: Value = res.json().await.expect("json");
    assert!(body["detail"].is_string());

    let res = client()
        .get(format!("{}/healthz", b.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 200);

    let res = client()
        .get(format!("{}/v1/actions", b.url()))
        .send()
        .await
        .expect("get");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["actions"][0]["name"], "oncall");
    assert_eq!(body["actions"][0]["routing_key"], format!("…{}", &KEY_A[28..]));
    assert!(double.received().is_empty(), "no error case may send anything");
}

#[tokio::test]
async fn dry_run_sends_nothing_and_logs_the_event() {
    let double = Double::start().await;
    let b = bridge(&double, &["--dry-run"]);
    let (status, _) = post(&b.intake("oncall"), capture("failed_event_tojson")).await;
    assert_eq!(status, 202);
    crate::support::wait::holds(WAIT, "a dry-run log line", || async {
        b.logs().iter().any(|l| l.contains("dry run"))
    })
    .await;
    assert!(
        !b.logs().iter().any(|l| l.contains("delivered to PagerDuty")),
        "a dry run must not claim a delivery"
    );
    assert!(double.received().is_empty());
}

#[tokio::test]
async fn delivery_outcomes_are_logged_without_the_routing_key() {
    let double = Double::start().await;
    double.script([Reply::Status(500), Reply::RateLimit(Some(1))]);
    let b = bridge(&double, &["--rate-limit-pause", "1s"]);
    post(&b.intake("oncall"), capture("failed_event_tojson")).await;
    post(&b.intake("oncall"), capture("crashed_event_tojson")).await;
    post(&b.intake("oncall"), capture("late_reactive")).await;
    double.wait_until(WAIT, "3 requests", |r| r.len() >= 3).await;
    let logs = crate::support::wait::until(WAIT, "every outcome is logged", || async {
        let logs = b.logs().join("\n");
        (logs.contains("will retry")
            && logs.contains("rate-limited")
            && logs.contains("delivered to PagerDuty"))
        .then_some(logs)
    })
    .await;
    assert!(!logs.contains(KEY_A), "the full routing key is in the log");
    assert!(
        logs.contains(&KEY_A[28..]),
        "the last four characters identify the key"
    );
}

/// The double must be able to say no: the spec check is not a rubber stamp.
#[tokio::test]
async fn the_double_rejects_what_pagerduty_rejects() {
    let double = Double::start().await;
    let url = format!("{}/v2/enqueue", double.url());
    let good = json!({"routing_key": KEY_A, "event_action": "trigger", "dedup_key": "k",
                      "payload": {"summary": "s", "source": "x", "severity": "error"}});
    let mut cases = vec![
        (
            "summary",
            json!({"payload": {"summary": "x".repeat(1025), "source": "x", "severity": "error"}}),
        ),
        (
            "severity",
            json!({"payload": {"summary": "s", "source": "x", "severity": "high"}}),
        ),
        ("dedup", json!({"dedup_key": "k".repeat(256)})),
        ("action", json!({"event_action": "open"})),
        (
            "links in payload",
            json!({"payload": {"summary": "s", "source": "x", "severity": "info", "links": []}}),
        ),
        ("source", json!({"payload": {"summary": "s", "severity": "info"}})),
        ("routing key", json!({"routing_key": "short"})),
    ];
    cases.push((
        "resolve without key",
        json!({"event_action": "resolve", "dedup_key": null}),
    ));
    let c = client();
    let res = c.post(&url).json(&good).send().await.expect("post");
    assert_eq!(res.status().as_u16(), 202);
    for (what, patch) in cases {
        let mut body = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                body.as_object_mut().expect("object").remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let res = c.post(&url).json(&body).send().await.expect("post");
        assert_eq!(res.status().as_u16(), 400, "{what} should be rejected");
        let answer: Value = res.json().await.expect("json");
        assert!(!answer["errors"].as_array().expect("errors").is_empty(), "{what}");
    }
}

/// `--body-memory` holds one largest body here: a second webhook is not
/// read while the first one's bytes are still coming, and is answered as
/// soon as they have come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_waits_its_turn_for_the_body_memory_and_is_then_taken() {
    use std::io::{Read as _, Write as _};
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--max-body", "1MB", "--body-memory", "1MB"]);
    // A real event padded with spaces (still JSON) to 1,000,000 bytes, all
    // of the budget, sent in two halves.
    let mut large: Value = serde_json::from_slice(&capture("failed_event_tojson")).expect("json");
    large["id"] = json!("large-body-event");
    large["resource"]["prefect.resource.id"] = json!("prefect.flow-run.large");
    let mut large = large.to_string().into_bytes();
    large.resize(1_000_000, b' ');
    let mut slow = std::net::TcpStream::connect(b.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        slow,
        "POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        large.len()
    )
    .expect("head");
    slow.write_all(&large[..500_000]).expect("first half");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let small = tokio::spawn({
        let url = b.intake("oncall");
        async move { post(&url, capture("failed_event_tojson")).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !small.is_finished(),
        "read while the large body held all of --body-memory"
    );

    slow.write_all(&large[500_000..]).expect("second half");
    let mut answer = vec![0; 4096];
    let n = slow.read(&mut answer).expect("answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), small)
        .await
        .expect("answered once the large body was done")
        .expect("join");
    assert_eq!(status, 202, "{body}");
    double
        .wait_until(Duration::from_secs(10), "both events", |r| r.len() >= 2)
        .await;
    let metrics = crate::support::get_text(&format!("{}/metrics", b.url())).await;
    assert!(
        metrics.contains("prefect_pagerduty_bridge_webhook_body_waits_total 1\n"),
        "the small webhook's wait is counted, the large one's reservation is not: {metrics}"
    );

    // A body that says it is larger than --max-body is refused before it
    // is read, and reserves nothing.
    let answer = crate::support::raw_exchange(
        b.addr,
        b"POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}
