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

/// A routing key and a webhook token read from files are read again after
/// `--secret-refresh`: rewriting the files (as a rotated Kubernetes Secret
/// does) takes effect without a restart; a file that then disappears keeps
/// the last good values, and the bridge logs an error.
#[tokio::test]
async fn keys_and_tokens_rotate_from_their_files_without_a_restart() {
    use crate::support::{KEY_A, KEY_B, fixtures};
    let double = Double::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_file, token_file) = (dir.path().join("pd-key"), dir.path().join("token"));
    std::fs::write(&key_file, KEY_A).expect("key");
    std::fs::write(&token_file, "first-token-0001\n").expect("token");
    let action = format!("oncall=file:{}", key_file.display());
    let token = format!("file:{}", token_file.display());
    let pd_url = double.url();
    let bridge = Bridge::serve(&[
        "--pagerduty-url",
        &pd_url,
        "--action",
        &action,
        "--webhook-token",
        &token,
        "--secret-refresh",
        "1s",
    ]);
    let failed = std::fs::read(fixtures().join("examples/flow-run-failed.json")).expect("fixture");
    let send = |token: &'static str, body: Vec<u8>| {
        let url = bridge.intake("oncall");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }
    };
    assert_eq!(send("first-token-0001", failed.clone()).await, 202);
    double
        .wait_until(Duration::from_secs(10), "the first page", |r| {
            r.iter().any(|r| r.body["routing_key"] == KEY_A)
        })
        .await;

    std::fs::write(&key_file, format!("{KEY_B}\n")).expect("key");
    std::fs::write(&token_file, "second-token-0002").expect("token");
    // A repeat of the first event is a duplicate (200, nothing sent): it
    // shows which token opens the intake.
    crate::support::wait::holds(Duration::from_secs(10), "the new token opens the intake", || {
        let probe = send("second-token-0002", failed.clone());
        async move { probe.await == 200 }
    })
    .await;
    assert_eq!(
        send("first-token-0001", failed.clone()).await,
        401,
        "the old token still opens it"
    );

    let other_run = String::from_utf8(failed.clone())
        .expect("utf-8")
        .replace("prefect.flow-run.", "prefect.flow-run.0")
        .replace("\"id\": \"", "\"id\": \"0");
    assert_eq!(send("second-token-0002", other_run.into_bytes()).await, 202);
    double
        .wait_until(Duration::from_secs(10), "a page with the new key", |r| {
            r.iter().any(|r| r.body["routing_key"] == KEY_B)
        })
        .await;

    // The files go away: the last good values stay, and it is logged when
    // they are next needed.
    std::fs::remove_file(&key_file).expect("rm");
    std::fs::remove_file(&token_file).expect("rm");
    crate::support::wait::holds(Duration::from_secs(10), "the unreadable file is logged", || {
        let probe = send("second-token-0002", failed.clone());
        let logs = &bridge;
        async move {
            probe.await;
            logs.logs().iter().any(|l| l.contains("could not be read again"))
        }
    })
    .await;
    assert_eq!(send("second-token-0002", failed.clone()).await, 200);
    let key_b = double
        .received()
        .iter()
        .filter(|r| r.body["routing_key"] == KEY_B)
        .count();
    assert_eq!(key_b, 1, "one event with the new key");
}
