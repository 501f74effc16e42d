//! End to end with a real Prefect 3 server from PyPI: a Webhook block and an
//! automation post the README's recommended payload to the real bridge; a
//! flow fails and the PagerDuty double receives a trigger whose link opens the
//! failed run; the run is retried to Completed (as Prefect's Retry button
//! does) and the double receives the resolve.
//!
//! Prefect is installed into `target/prefect-venv` on first use (`.ci/run`
//! does it up front). The test needs Python 3; it fails without it unless
//! `PPB_SKIP_PREFECT_E2E=1` says to skip it on purpose.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::bridge::Bridge;
use crate::support::pagerduty::Double;
use crate::support::{KEY_A, client};

/// A Prefect server process; killed on drop.
struct PrefectServer(Child);

/// Prints the Prefect server's log when the test fails while it is held.
struct ServerLog(PathBuf);

impl Drop for ServerLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the Prefect server's log:\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

impl Drop for PrefectServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/prefect-venv")
}

/// Installs Prefect 3 into the venv unless it is there already.
fn ensure_prefect() -> PathBuf {
    let venv = venv();
    let prefect = venv.join("bin/prefect");
    if prefect.exists() {
        return venv;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 -m venv failed: the Prefect end-to-end test needs Python 3 (see .ci/run)"
    );
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "prefect>=3,<4"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pip install prefect failed");
    venv
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn prefect_env(home: &Path, ui: &str) -> Vec<(String, String)> {
    [
        ("PREFECT_HOME", home.display().to_string()),
        ("PREFECT_API_URL", format!("{ui}/api")),
        ("PREFECT_UI_URL", ui.to_owned()),
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false".to_owned()),
        ("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false".to_owned()),
        ("DO_NOT_TRACK", "1".to_owned()),
        ("PREFECT_LOGGING_LEVEL", "WARNING".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs the driver script; returns the JSON object on its last stdout line.
async fn driver(venv: &Path, env: &[(String, String)], args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/prefect_e2e.py");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(script).args(args).envs(env.iter().map(|(k, v)| (k, v)));
    let what = args.join(" ");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver {what} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("driver {what} printed no JSON: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prefect_server_pages_on_failure_and_resolves_on_retry() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    let venv = tokio::task::spawn_blocking(ensure_prefect)
        .await
        .expect("install prefect");
    let home = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let ui = format!("http://127.0.0.1:{port}");
    let env = prefect_env(home.path(), &ui);

    let double = Double::start().await;
    let action = format!("oncall={KEY_A}");
    let pd_url = double.url();
    let bridge = Bridge::serve(&[
        "--pagerduty-url",
        &pd_url,
        "--action",
        &action,
        "--prefect-ui-url",
        &ui,
    ]);

    let log = std::fs::File::create(home.path().join("server.log")).expect("log file");
    let _server = PrefectServer(
        Command::new(venv.join("bin/prefect"))
            .args([
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start prefect server"),
    );
    let http = client();
    let healthy = crate::support::wait::until(
        Duration::from_secs(120),
        "the Prefect server is healthy",
        || async {
            let ok = http
                .get(format!("{ui}/api/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            Some(ok).filter(|ok| *ok)
        },
    );
    // On any failure from here on, the Prefect server's log is shown.
    let _log = ServerLog(home.path().join("server.log"));
    healthy.await;

    driver(&venv, &env, &["setup", &bridge.intake("oncall")]).await;
    let marker = home.path().join("second-attempt-succeeds");
    let marker = marker.to_str().expect("utf-8 path");
    let failed = driver(&venv, &env, &["fail", marker]).await;
    let run_id = failed["flow_run_id"].as_str().expect("run id").to_owned();
    let dedup_key = format!("prefect/flow-run/{run_id}");

    let seen = double
        .wait_until(Duration::from_secs(60), "the trigger for the failed run", |r| {
            r.iter()
                .any(|r| r.dedup_key() == dedup_key && r.action() == "trigger")
        })
        .await;
    let trigger = seen
        .iter()
        .find(|r| r.dedup_key() == dedup_key)
        .expect("trigger")
        .clone();
    assert!(trigger.errors.is_empty(), "{:?}", trigger.errors);
    assert_eq!(trigger.status, 202);
    assert_eq!(trigger.body["payload"]["severity"], "error");
    let summary = trigger.body["payload"]["summary"].as_str().expect("summary");
    assert!(
        summary.contains("ppb-e2e-flow/") && summary.contains("entered Failed"),
        "{summary}"
    );
    assert!(
        summary.contains("first attempt fails"),
        "the state message is in the summary: {summary}"
    );
    let link = &trigger.body["links"][0];
    let href = link["href"].as_str().expect("href");
    assert_eq!(href, format!("{ui}/runs/flow-run/{run_id}"));
    assert!(link["text"].as_str().expect("text").starts_with("Flow run "));
    // The link opens the run's page: Prefect serves its UI for a browser
    // navigation there, and the API behind the page knows the run as failed.
    let page = http
        .get(href)
        .header("accept", "text/html")
        .send()
        .await
        .expect("open link");
    assert!(page.status().is_success(), "{href} answered {}", page.status());
    assert!(
        page.text().await.expect("page").contains("<html"),
        "{href} is not the Prefect UI"
    );
    let run: Value = http
        .get(format!("{ui}/api/flow_runs/{run_id}"))
        .send()
        .await
        .expect("read run")
        .json()
        .await
        .expect("json");
    assert_eq!(run["state_type"], "FAILED");
    assert_eq!(trigger.body["client_url"], ui.as_str());

    let retried = driver(&venv, &env, &["retry", &run_id, marker]).await;
    assert_eq!(retried["state"], "Completed");
    let seen = double
        .wait_until(Duration::from_secs(60), "the resolve for the retried run", |r| {
            r.iter()
                .any(|r| r.dedup_key() == dedup_key && r.action() == "resolve")
        })
        .await;
    let for_run: Vec<_> = seen.iter().filter(|r| r.dedup_key() == dedup_key).collect();
    assert_eq!(
        for_run.iter().map(|r| r.action()).collect::<Vec<_>>(),
        ["trigger", "resolve"],
        "Running after a failure must not resolve; Completed must, once"
    );
    assert_eq!(for_run[1].body["routing_key"], KEY_A);
}
