//! Secrets stay secret: a full run with routing keys and tokens given every
//! way (flag, env:, file:), then every log line, every response body and
//! `--help` is scanned for each secret. At most the last four characters
//! may show.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::bridge::{BIN, Bridge};
use crate::support::pagerduty::{Double, Reply};
use crate::support::{capture, client};

/// How long the bridge may take to settle after the double has its requests.
const WAIT_SETTLED: Duration = Duration::from_secs(20);
const KEY_FLAG: &str = "FLAGKEY0SECRET00000000000000ab12";
const KEY_ENV: &str = "ENVKEY00SECRET00000000000000cd34";
const KEY_FILE: &str = "FILEKEY0SECRET00000000000000ef56";
const KEY_API: &str = "APIKEY00SECRET00000000000000gh78";
const WEBHOOK_TOKEN: &str = "webhook-token-SECRET-9876";
const ADMIN_TOKEN: &str = "admin-token-SECRET-5432";

#[tokio::test]
async fn no_secret_appears_in_logs_responses_or_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY_FILE).expect("write");
    let double = Double::start().await;
    double.script([
        Reply::Reject(vec!["rejected".into()]),
        Reply::Status(500),
        Reply::RateLimit(None),
    ]);
    let b = Bridge::serve_with_env(
        &[
            "--pagerduty-url",
            &double.url(),
            "--action",
            &format!("flag={KEY_FLAG}:critical"),
            "--action",
            "env=env:PPB_TEST_KEY",
            "--action",
            &format!("file=file:{}", key_file.display()),
            "--webhook-token",
            WEBHOOK_TOKEN,
            "--api-token",
            &format!("admin:{ADMIN_TOKEN}"),
            "--rate-limit-pause",
            "1s",
            "--retry-initial-interval",
            "100ms",
        ],
        &[("PPB_TEST_KEY", KEY_ENV)],
    );
    let http = client();
    let mut bodies = Vec::new();
    let hook = |action: &str, body: Vec<u8>, token: &str| {
        http.post(format!("{}/v1/prefect/{action}", b.url()))
            .bearer_auth(token)
            .body(body)
            .send()
    };
    for action in ["flag", "env", "file", "nope"] {
        let res = hook(action, capture("failed_event_tojson"), WEBHOOK_TOKEN)
            .await
            .expect("post");
        bodies.push(res.text().await.expect("text"));
    }
    let res = hook("flag", capture("crashed_event_tojson"), "wrong-token")
        .await
        .expect("post");
    bodies.push(res.text().await.expect("text"));
    let res = http
        .post(format!("{}/v1/actions", b.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "api", "routing_key": KEY_API}))
        .send()
        .await
        .expect("create");
    bodies.push(res.text().await.expect("text"));
    let res = http
        .post(format!("{}/v1/actions/api/test", b.url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("test");
    bodies.push(res.text().await.expect("text"));
    double
        .wait_until(
            Duration::from_secs(20),
            "deliveries, rejections and retries",
            |r| r.len() >= 6,
        )
        .await;
    // Settled: nothing queued or in flight (the API needs the admin token here).
    crate::support::wait::holds(WAIT_SETTLED, "the bridge has settled", || async {
        let res = http
            .get(format!("{}/v1/spool", b.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("spool");
        let s: serde_json::Value = res.json().await.expect("json");
        s["queued"] == 0 && s["in_flight"] == 0
    })
    .await;
    for path in [
        "/v1/actions",
        "/v1/dead-letters",
        "/v1/spool",
        "/healthz",
        "/metrics",
    ] {
        let res = http
            .get(format!("{}{path}", b.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("get");
        bodies.push(res.text().await.expect("text"));
    }
    let res = http
        .get(format!("{}/v1/actions", b.url()))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("get");
    bodies.push(res.text().await.expect("text"));

    // --help, with the secrets in the environment it would show.
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .env("PPB_ACTIONS", format!("x={KEY_FLAG}"))
        .env("PPB_WEBHOOK_TOKENS", WEBHOOK_TOKEN)
        .env("PPB_API_TOKENS", format!("admin:{ADMIN_TOKEN}"))
        .output()
        .expect("help");
    bodies.push(String::from_utf8_lossy(&help.stdout).to_string());
    // A startup error that involves a key.
    let bad = Command::new(BIN)
        .args(["serve", "--action", &format!("bad name={KEY_FLAG}")])
        .output()
        .expect("bad");
    bodies.push(String::from_utf8_lossy(&bad.stderr).to_string());
    let bad = Command::new(BIN)
        .args(["serve", "--action", KEY_FLAG])
        .output()
        .expect("bad");
    bodies.push(String::from_utf8_lossy(&bad.stderr).to_string());

    let logs = b.logs().join("\n");
    assert!(
        logs.contains("delivered to PagerDuty") && logs.contains("dead letters"),
        "the run did not cover enough:\n{logs}"
    );
    let everything = format!("{logs}\n{}", bodies.join("\n"));
    for secret in [KEY_FLAG, KEY_ENV, KEY_FILE, KEY_API, WEBHOOK_TOKEN, ADMIN_TOKEN] {
        // Anything longer than the last four characters is a leak.
        let tell = &secret[..secret.len() - 4];
        assert!(!everything.contains(tell), "{secret} leaked:\n{everything}");
    }
    // The redacted form is there, so keys stay identifiable.
    assert!(logs.contains(&format!("…{}", &KEY_FLAG[KEY_FLAG.len() - 4..])));
}
