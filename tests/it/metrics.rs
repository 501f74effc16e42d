//! `/metrics` through the real binary: exact values after a scripted
//! sequence, the dashboard's queries against a real answer, the alert rules
//! through promtool, and a real Prometheus scraping the bridge and firing
//! the dead-letter alert.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bridge::Bridge;
use crate::support::pagerduty::{Double, Reply};
use crate::support::{KEY_A, capture, client, post, serve_oncall, wait, with_state};

const WAIT: Duration = Duration::from_secs(30);

/// The samples of a text exposition, by name and labels as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(url: &str) -> String {
    let res = client().get(url).send().await.expect("scrape");
    assert_eq!(res.status().as_u16(), 200);
    let kind = res.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    res.text().await.expect("text")
}

/// The failed-run capture as run `i`, with its own run and event id.
fn run(i: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&capture("failed_event_tojson")).expect("json");
    v["id"] = json!(format!("20000000-0000-4000-8000-{i:012}"));
    v["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.00000000-0000-4000-8000-{i:012}"));
    v.to_string().into_bytes()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// A scripted sequence: two triggers delivered (one after a 429), a
/// duplicate, an ignored recovery, a trigger PagerDuty refuses (a dead
/// letter), a body too large, an unknown action.
async fn scripted(double: &Double, b: &Bridge) {
    double.script([Reply::RateLimit(None)]);
    assert_eq!(post(&b.intake("oncall"), run(1)).await.0, 202);
    double.wait_accepted(1, WAIT).await;
    let (status, answer) = post(&b.intake("oncall"), run(1)).await;
    assert_eq!(answer["status"], "duplicate", "{status} {answer}");
    let (status, answer) = post(&b.intake("oncall"), with_state(&run(2), "COMPLETED", "Completed")).await;
    assert_eq!(answer["status"], "ignored", "{status} {answer}");
    double.set_reply(Reply::Reject(vec!["Integration disabled".into()]));
    assert_eq!(post(&b.intake("oncall"), run(3)).await.0, 202);
    wait::holds(WAIT, "a dead letter", || async {
        wait::spool_stats(b).await["dead_letters"] == 1
    })
    .await;
    double.set_reply(Reply::Accept);
    assert_eq!(post(&b.intake("oncall"), run(4)).await.0, 202);
    double.wait_accepted(2, WAIT).await;
    assert_eq!(post(&b.intake("oncall"), vec![b' '; 70 * 1024]).await.0, 413);
    assert_eq!(post(&b.intake("nosuch"), run(5)).await.0, 404);
    wait::drained(b, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_and_gauge_has_its_expected_value() {
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--rate-limit-pause", "100ms", "--max-body", "64KiB"]);
    scripted(&double, &b).await;
    // The 429 pause is over; nothing else is waiting.
    wait::holds(WAIT, "no key is paused", || async {
        wait::spool_stats(&b).await["paused_keys"] == 0
    })
    .await;
    let text = scrape(&format!("{}/metrics", b.url())).await;
    let got = samples(&text);
    let p = "prefect_pagerduty_bridge_";
    let expect = [
        (
            format!(r#"{p}webhooks_received_total{{action="oncall",outcome="accepted"}}"#),
            3.0,
        ),
        (
            format!(r#"{p}webhooks_received_total{{action="oncall",outcome="duplicate"}}"#),
            1.0,
        ),
        (
            format!(r#"{p}webhooks_received_total{{action="oncall",outcome="ignored"}}"#),
            1.0,
        ),
        (
            format!(r#"{p}webhooks_received_total{{action="oncall",outcome="rejected"}}"#),
            1.0,
        ),
        (
            format!(r#"{p}webhook_rejections_total{{code="payload_too_large"}}"#),
            1.0,
        ),
        (
            format!(r#"{p}webhook_rejections_total{{code="unknown_action"}}"#),
            1.0,
        ),
        (
            format!(r#"{p}notifications_total{{action="oncall",event_action="trigger"}}"#),
            2.0,
        ),
        (
            format!(r#"{p}notifications_failed_total{{action="oncall",reason="rate_limited"}}"#),
            1.0,
        ),
        (
            format!(r#"{p}notifications_failed_total{{action="oncall",reason="client_error"}}"#),
            1.0,
        ),
        (format!("{p}delivery_latency_seconds_count"), 2.0),
        (format!("{p}queued_events"), 0.0),
        (format!("{p}oldest_queued_age_seconds"), 0.0),
        // Runs 1 and 4, and run 3 whose trigger died (as /v1/spool counts).
        (format!("{p}open_alerts"), 3.0),
        (format!("{p}dead_letters"), 1.0),
        (format!("{p}paused_routing_keys"), 0.0),
        (format!("{p}ready"), 1.0),
    ];
    for (name, value) in &expect {
        assert_eq!(got.get(name), Some(value), "{name} in\n{text}");
    }
    // Nothing else was counted: no other outcome, code or reason.
    let counted = |prefix: &str| got.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(counted(&format!("{p}webhooks_received_total{{")), 4, "{text}");
    assert_eq!(counted(&format!("{p}webhook_rejections_total{{")), 2, "{text}");
    assert_eq!(counted(&format!("{p}notifications_failed_total{{")), 2, "{text}");
    assert!(got[&format!("{p}spool_commit_seconds_count")] >= 4.0, "{text}");
    assert!(got[&format!("{p}spool_bytes")] > 0.0, "{text}");
    assert!(
        got.keys()
            .any(|k| k.starts_with(&format!(r#"{p}build_info{{version=""#))),
        "{text}"
    );
    // Labels carry no routing key and no payload text.
    assert!(!text.contains(&KEY_A[..28]), "{text}");
    assert!(
        !text.contains("boom from lab") && !text.contains("nosuch"),
        "{text}"
    );

    // Every metric the dashboard queries is in a real answer.
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(root().join("deploy/grafana/dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find(p) {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        assert!(
            got.keys()
                .any(|k| k == &name || k.starts_with(&format!("{name}{{"))),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
}

#[tokio::test]
async fn metrics_need_the_viewer_role_and_are_served_alone_on_the_metrics_address() {
    let double = Double::start().await;
    let port = free_port();
    let metrics_at = format!("127.0.0.1:{port}");
    let b = serve_oncall(
        &double,
        &[
            "--api-token",
            "viewer:viewer-token-123",
            "--metrics-listen",
            &metrics_at,
        ],
    );
    let url = format!("{}/metrics", b.url());
    assert_eq!(
        client().get(&url).send().await.expect("get").status().as_u16(),
        401
    );
    let res = client()
        .get(&url)
        .bearer_auth("viewer-token-123")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 200);
    // The metrics address: /metrics without a token, nothing else.
    let alone = scrape(&format!("http://{metrics_at}/metrics")).await;
    assert!(alone.contains("prefect_pagerduty_bridge_ready 1"), "{alone}");
    for path in ["/v1/spool", "/v1/actions", "/healthz", "/v1/prefect/oncall"] {
        let res = client()
            .get(format!("http://{metrics_at}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 404, "{path}");
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `promtool`, when installed (CI installs Debian's `prometheus`).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())?;
    Some(found)
}

fn skip(what: &str) {
    assert!(
        std::env::var_os("CI_REQUIRE_PROMETHEUS").is_none(),
        "{what} is required here (CI_REQUIRE_PROMETHEUS) but not installed"
    );
    eprintln!("skipped: {what} is not installed (apt-get install prometheus)");
}

#[test]
fn the_alert_rules_pass_promtool() {
    let Some(promtool) = tool("promtool") else {
        return skip("promtool");
    };
    let dir = root().join("deploy/prometheus");
    for args in [
        &["check", "rules", "rules.yaml"][..],
        &["test", "rules", "rules.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A running Prometheus; killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_bridge_and_fires_the_dead_letter_alert() {
    let Some(prometheus) = tool("prometheus") else {
        return skip("prometheus");
    };
    let double = Double::start().await;
    let metrics_port = free_port();
    let b = serve_oncall(
        &double,
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    let rules = root().join("deploy/prometheus/rules.yaml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: prefect-pagerduty-bridge\n    \
             static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
        ),
    )
    .expect("config");
    let web = free_port();
    let _server = Prometheus(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let api = format!("http://127.0.0.1:{web}");
    wait::holds(WAIT, "Prometheus is ready", || async {
        client()
            .get(format!("{api}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    // A dead letter.
    double.set_reply(Reply::Reject(vec!["Integration disabled".into()]));
    assert_eq!(post(&b.intake("oncall"), run(9)).await.0, 202);
    let query = |q: &'static str| {
        let api = api.clone();
        async move {
            let url = url::Url::parse_with_params(&format!("{api}/api/v1/query"), &[("query", q)]).ok()?;
            let v: Value = client().get(url).send().await.ok()?.json().await.ok()?;
            v["data"]["result"][0]["value"][1].as_str().map(str::to_owned)
        }
    };
    wait::holds(WAIT, "Prometheus has the bridge's dead letter", || async {
        query("prefect_pagerduty_bridge_dead_letters").await.as_deref() == Some("1")
    })
    .await;
    assert_eq!(
        query(r#"up{job="prefect-pagerduty-bridge"}"#).await.as_deref(),
        Some("1")
    );
    assert_eq!(
        query(r#"prefect_pagerduty_bridge_notifications_failed_total{reason="client_error"}"#)
            .await
            .as_deref(),
        Some("1")
    );
    let firing = wait::until(WAIT, "the dead-letter alert fires", || async {
        let v: Value = client()
            .get(format!("{api}/api/v1/alerts"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "PrefectPagerDutyBridgeDeadLetters" && a["state"] == "firing"
            })
            .cloned()
    })
    .await;
    assert_eq!(firing["labels"]["severity"], "warning", "{firing}");
}
