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

/// A real Prefect server from PyPI, healthy; its log is shown if the test fails.
struct Prefect {
    venv: PathBuf,
    env: Vec<(String, String)>,
    ui: String,
    home: tempfile::TempDir,
    _server: PrefectServer,
    _log: ServerLog,
}

impl Prefect {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with CSRF protection on, as Prefect recommends where its
    /// API is exposed: every change and every read by filter then needs a
    /// token.
    async fn start_csrf_protected() -> Self {
        Self::start_with(&[("PREFECT_SERVER_CSRF_PROTECTION_ENABLED", "true")]).await
    }

    async fn start_with(settings: &[(&str, &str)]) -> Self {
        let venv = tokio::task::spawn_blocking(ensure_prefect)
            .await
            .expect("install prefect");
        let home = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let ui = format!("http://127.0.0.1:{port}");
        let mut env = prefect_env(home.path(), &ui);
        env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let server = Self::server(&venv, &env, home.path(), port);
        // On any failure from here on, the Prefect server's log is shown.
        let log = ServerLog(home.path().join("server.log"));
        Self::healthy(&ui).await;
        Self {
            venv,
            env,
            ui,
            home,
            _server: server,
            _log: log,
        }
    }

    fn server(venv: &Path, env: &[(String, String)], home: &Path, port: u16) -> PrefectServer {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("server.log"))
            .expect("log file");
        PrefectServer(
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
        )
    }

    async fn healthy(ui: &str) {
        let http = client();
        crate::support::wait::holds(
            Duration::from_secs(120),
            "the Prefect server is healthy",
            || async {
                http.get(format!("{ui}/api/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
    }

    /// Stops the server; `start_again` brings it back on its port and data.
    fn stop(&mut self) {
        let _ = self._server.0.kill();
        let _ = self._server.0.wait();
    }

    async fn start_again(&mut self) {
        let port: u16 = self
            .ui
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        self._server = Self::server(&self.venv, &self.env, self.home.path(), port);
        Self::healthy(&self.ui).await;
    }

    async fn driver(&self, args: &[&str]) -> Value {
        driver(&self.venv, &self.env, args).await
    }

    /// A flow run that fails (each call its own marker, so it fails).
    async fn failing_run(&self, n: usize) -> String {
        let marker = self.home.path().join(format!("marker-{n}"));
        let out = self.driver(&["fail", marker.to_str().expect("utf-8 path")]).await;
        out["flow_run_id"].as_str().expect("run id").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prefect_server_pages_on_failure_and_resolves_on_retry() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    let prefect = Prefect::start().await;
    let ui = prefect.ui.clone();
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
    let http = client();

    prefect.driver(&["setup", &bridge.intake("oncall")]).await;
    let marker = prefect.home.path().join("second-attempt-succeeds");
    let marker = marker.to_str().expect("utf-8 path");
    let failed = prefect.driver(&["fail", marker]).await;
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
    let run = prefect_json("read run", || http.get(format!("{ui}/api/flow_runs/{run_id}"))).await;
    assert_eq!(run["state_type"], "FAILED");
    assert_eq!(trigger.body["client_url"], ui.as_str());

    let retried = prefect.driver(&["retry", &run_id, marker]).await;
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

/// The bridge is down while two flow runs fail: Prefect drops both webhooks
/// (connection refused; it never retries). Started again with
/// reconciliation, the bridge pages both within two intervals, exactly
/// once, and does not page again the run it had paged before it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_prefect_dropped_while_the_bridge_was_down_are_paged_once() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    const INTERVAL: Duration = Duration::from_secs(3);
    let mut prefect = Prefect::start_csrf_protected().await;
    let double = Double::start().await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_dir.path().join("s.redb");
    let listen = format!("127.0.0.1:{}", free_port());
    let (pd_url, action, api) = (
        double.url(),
        format!("oncall={KEY_A}"),
        format!("{}/api", prefect.ui),
    );
    let args = [
        "--pagerduty-url",
        pd_url.as_str(),
        "--action",
        action.as_str(),
        "--spool",
        spool.to_str().expect("utf-8 path"),
    ];
    let mut bridge = Bridge::serve_at(&listen, &args, &[]);
    prefect.driver(&["setup", &bridge.intake("oncall")]).await;
    let triggers_of = |run: &str| {
        let key = format!("prefect/flow-run/{run}");
        double
            .received()
            .iter()
            .filter(|r| r.dedup_key() == key && r.action() == "trigger" && r.status == 202)
            .count()
    };

    // Paged while the bridge runs.
    let before = prefect.failing_run(1).await;
    let key = format!("prefect/flow-run/{before}");
    double
        .wait_until(Duration::from_secs(60), "the page of the first run", |r| {
            r.iter().any(|r| r.dedup_key() == key && r.action() == "trigger")
        })
        .await;
    assert_eq!(bridge.terminate().code(), Some(0));

    // Dropped by Prefect: nothing listens.
    let dropped = [prefect.failing_run(2).await, prefect.failing_run(3).await];
    for run in &dropped {
        assert_eq!(triggers_of(run), 0, "nothing listened, yet {run} was paged");
    }

    // Started again, reconciling every 3 s.
    let interval = format!("{}s", INTERVAL.as_secs());
    let mut with_reconcile = args.to_vec();
    with_reconcile.extend([
        "--prefect-api-url",
        api.as_str(),
        "--reconcile-interval",
        interval.as_str(),
    ]);
    let bridge = Bridge::serve_at(&listen, &with_reconcile, &[]);
    let started = std::time::Instant::now();
    for run in &dropped {
        let key = format!("prefect/flow-run/{run}");
        double
            .wait_until(Duration::from_secs(60), "the page of a dropped run", |r| {
                r.iter()
                    .any(|r| r.dedup_key() == key && r.action() == "trigger" && r.status == 202)
            })
            .await;
    }
    let took = started.elapsed();
    assert!(
        took <= INTERVAL * 2 + Duration::from_secs(2),
        "recovered after {took:?}"
    );

    // Two more passes find the same drops: still once each, and the run
    // paged before the stop is not paged again.
    let passes = |s: &Value| s["reconcile"]["last_success"].as_str().map(str::to_owned);
    let spool_url = format!("{}/v1/spool", bridge.url());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = vec![passes(&crate::support::get_json(&spool_url).await)];
    while seen.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no two more passes: {seen:?}"
        );
        let now = passes(&crate::support::get_json(&spool_url).await);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        crate::support::wait::hold(Duration::from_millis(100), "between looks at the pass time").await;
    }
    for run in &dropped {
        assert_eq!(triggers_of(run), 1, "{run} was paged {} times", triggers_of(run));
    }
    assert_eq!(
        triggers_of(&before),
        1,
        "the run paged before the stop was paged again"
    );
    let stats = crate::support::get_json(&spool_url).await;
    assert!(stats["reconcile"]["recovered"].as_u64() >= Some(2), "{stats}");
    assert_eq!(stats["reconcile"]["failures"], 0, "{stats}");

    // Prefect goes down: reconciliation fails and backs off, the intake
    // does not notice; Prefect comes back: reconciliation resumes.
    prefect.stop();
    let failed_at = crate::support::wait::until(Duration::from_secs(30), "a failed pass", || async {
        let s = crate::support::get_json(&spool_url).await;
        (s["reconcile"]["failures"].as_u64() >= Some(1)).then(|| passes(&s))
    })
    .await;
    let failed =
        std::fs::read(crate::support::fixtures().join("examples/flow-run-failed.json")).expect("fixture");
    let (status, answer) = crate::support::post(&bridge.intake("oncall"), failed).await;
    assert_eq!(status, 202, "{answer}");
    prefect.start_again().await;
    crate::support::wait::holds(Duration::from_secs(60), "a pass succeeds again", || async {
        let s = crate::support::get_json(&spool_url).await;
        passes(&s) != failed_at && s["reconcile"]["last_error"].is_null()
    })
    .await;
    for run in &dropped {
        assert_eq!(triggers_of(run), 1, "{run} after Prefect came back");
    }
}

/// Runs `prefect check --json` against `api`; its exit code and report.
fn prefect_check(api: &str, bridge: &str) -> (Option<i32>, Value) {
    let out = Command::new(crate::support::bridge::BIN)
        .args([
            "prefect",
            "check",
            "--json",
            "--prefect-api-url",
            api,
            "--bridge-url",
            bridge,
        ])
        .output()
        .expect("run prefect check");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "prefect check printed no JSON:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// `prefect check` passes the recommended setup, and finds each problem in
/// automations broken on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefect_check_passes_a_clean_setup_and_names_each_problem() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    let prefect = Prefect::start_csrf_protected().await;
    let double = Double::start().await;
    let (pd_url, action) = (double.url(), format!("oncall={KEY_A}"));
    let bridge = Bridge::serve(&["--pagerduty-url", &pd_url, "--action", &action]);
    let api = format!("{}/api", prefect.ui);
    prefect.driver(&["setup", &bridge.intake("oncall")]).await;
    let (code, report) = tokio::task::spawn_blocking({
        let (api, url) = (api.clone(), bridge.url());
        move || prefect_check(&api, &url)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["automations_calling_the_bridge"], 1, "{report:#}");

    prefect
        .driver(&["broken", &bridge.intake("oncall"), &bridge.intake("nosuch")])
        .await;
    let (code, report) = tokio::task::spawn_blocking({
        let (api, url) = (api.clone(), bridge.url());
        move || prefect_check(&api, &url)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(1), "{report:#}");
    let problems = report["problems"].as_array().expect("problems");
    let found = |automation: &str, kind: &str| {
        problems.iter().any(|p| {
            p["automation"]
                .as_str()
                .is_some_and(|a| a.starts_with(automation))
                && p["kind"] == kind
        })
    };
    for (automation, kind) in [
        ("ppb-broken: empty payload", "payload"),
        ("ppb-broken: no recovery", "no_recovery"),
        ("ppb-broken: disabled", "disabled"),
        ("ppb-broken: unknown action", "unknown_action"),
        ("(several)", "many_on_one_event"),
    ] {
        assert!(
            found(automation, kind),
            "{automation}: {kind} not found in {report:#}"
        );
    }
    // The clean automation is not blamed for anything but sharing events.
    assert!(
        !problems
            .iter()
            .any(|p| p["automation"].as_str().is_some_and(|a| a.starts_with("ppb-e2e"))),
        "{report:#}"
    );
    // Prefect unreachable: exit 2.
    let out = Command::new(crate::support::bridge::BIN)
        .args(["prefect", "check", "--prefect-api-url", "http://127.0.0.1:9/api"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `prefect-pagerduty-bridge prefect setup …`; its stdout.
fn prefect_setup(args: &[&str]) -> String {
    let out = Command::new(crate::support::bridge::BIN)
        .args(["prefect", "setup"])
        .args(args)
        .output()
        .expect("run prefect setup");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "prefect setup {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The JSON answer to a request to Prefect's API (`build` makes it afresh
/// for each try). A busy Prefect answers 503 and means it to be retried,
/// so the test does as Prefect's own client does: it tries again a few
/// times before it fails.
async fn prefect_json(what: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Value {
    let mut last = String::new();
    let mut csrf: Option<(String, String)> = None;
    for _ in 0..10 {
        let mut req = build();
        if let Some((token, client)) = &csrf {
            req = req
                .header("Prefect-Csrf-Token", token)
                .header("Prefect-Csrf-Client", client);
        }
        match req.send().await {
            Ok(res) if [429, 502, 503].contains(&res.status().as_u16()) => {
                last = format!("{}: {}", res.status(), res.text().await.unwrap_or_default());
            }
            Ok(res) if res.status() == 403 && csrf.is_none() => {
                // A server with CSRF protection: fetch a token and go again.
                let url = res.url().clone();
                let base = &url.as_str()[..url.as_str().find("/api/").expect("an API URL") + 4];
                let client = "ppb-e2e-test".to_owned();
                let issued: Value =
                    crate::support::get_json(&format!("{base}/csrf-token?client={client}")).await;
                let token = issued["token"].as_str().expect("a CSRF token").to_owned();
                csrf = Some((token, client));
                continue;
            }
            Ok(res) => {
                let status = res.status();
                assert!(status.is_success(), "{what}: Prefect answered {status}");
                return res.json().await.expect("json");
            }
            Err(e) if e.is_connect() => last = e.to_string(),
            Err(e) => panic!("{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what}: Prefect stayed busy: {last}")
}

/// What setup could leave behind: automation names and block names.
async fn wiring(api: &str) -> (Vec<String>, Vec<String>) {
    let http = client();
    let names = |v: Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect();
        n.sort();
        n
    };
    let automations = prefect_json("automations", || {
        http.post(format!("{api}/automations/filter"))
            .json(&serde_json::json!({}))
    })
    .await;
    let blocks = prefect_json("blocks", || {
        http.post(format!("{api}/block_documents/filter"))
            .json(&serde_json::json!({"include_secrets": false}))
    })
    .await;
    (names(automations), names(blocks))
}

/// `prefect setup --wait` polls Prefect's health until its deadline: an
/// API that never comes is reported when the time is up, one that comes
/// late is used as soon as it answers (here a stand-in that answers only
/// its health check, so setup goes on to fail on its first real call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefect_setup_waits_for_the_api_until_its_deadline() {
    let setup = |port: u16, wait: &'static str| {
        let api = format!("http://127.0.0.1:{port}/api");
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let out = Command::new(crate::support::bridge::BIN)
                .args(["prefect", "setup", "--prefect-api-url", &api])
                .args(["--bridge-url", "http://127.0.0.1:9", "--action", "oncall"])
                .args(["--wait", wait])
                .output()
                .expect("run prefect setup");
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            (out.status.code(), stderr, started.elapsed())
        })
    };
    let (code, stderr, took) = setup(free_port(), "1s").await.expect("join");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did not answer within 1s"), "{stderr}");
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");

    let port = free_port();
    let waiting = setup(port, "60s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let up = std::time::Instant::now();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).await.unwrap_or(0);
            let answer = if head[..n].starts_with(b"GET /api/health ") {
                "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ntrue"
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
            };
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let (code, stderr, _) = waiting.await.expect("join");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("answered 404"),
        "setup did not go on once Prefect was up: {stderr}"
    );
    assert!(
        up.elapsed() < Duration::from_secs(10),
        "noticed Prefect after {:?}",
        up.elapsed()
    );
}

/// `prefect setup` wires an empty Prefect server so that a failing run
/// pages and its completion resolves; run again it changes nothing; with
/// `--remove` it leaves the server as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefect_setup_wires_an_empty_server_idempotently_and_removes_cleanly() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    const TOKEN: &str = "webhook-token-setup-1234";
    let prefect = Prefect::start_csrf_protected().await;
    let double = Double::start().await;
    let (pd_url, action) = (double.url(), format!("oncall={KEY_A}"));
    let bridge = Bridge::serve(&[
        "--pagerduty-url",
        &pd_url,
        "--action",
        &action,
        "--webhook-token",
        TOKEN,
    ]);
    let api = format!("{}/api", prefect.ui);
    let before = wiring(&api).await;
    let url = bridge.url();
    // Setup talks to Prefect through a gate, which can make Prefect's
    // passing troubles (a busy database answers 503) happen on cue.
    let gate = crate::support::gate::Gate::start(&prefect.ui).await;
    let gated = format!("{}/api", gate.url());
    let args = [
        "--prefect-api-url",
        gated.as_str(),
        "--bridge-url",
        url.as_str(),
        "--action",
        "oncall",
        "--webhook-token",
        TOKEN,
    ];
    let dry = tokio::task::spawn_blocking({
        let args: Vec<String> = args
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["--dry-run".to_owned()])
            .collect();
        move || prefect_setup(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("join");
    assert!(dry.contains("would be created"), "{dry}");
    assert!(
        dry.contains("POST automations/") && dry.contains("POST block_documents/"),
        "{dry}"
    );
    assert!(!dry.contains(TOKEN), "the token was printed:\n{dry}");
    assert_eq!(wiring(&api).await, before, "a dry run changed Prefect");
    let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let run = |extra: &'static [&'static str]| {
        let owned = owned.clone();
        tokio::task::spawn_blocking(move || {
            let mut a: Vec<&str> = owned.iter().map(String::as_str).collect();
            a.extend_from_slice(extra);
            prefect_setup(&a)
        })
    };
    let first = run(&[]).await.expect("join");
    assert_eq!(
        first.matches(": created").count(),
        4,
        "a block and three automations:\n{first}"
    );
    assert!(!first.contains(TOKEN), "the token was printed:\n{first}");
    // Prefect answers 503 twice and then limits the key once: setup waits
    // and tries again, as Prefect's own client does, and carries on.
    let busy = |status, retry_after| crate::support::gate::Refusal { status, retry_after };
    gate.refuse_next(&[busy(503, None), busy(503, None), busy(429, Some(1))]);
    let second = run(&[]).await.expect("join");
    assert_eq!(gate.refused(), 3, "the gate's refusals were not all met");
    assert!(second.contains("nothing changed"), "{second}");
    assert_eq!(second.matches(": unchanged").count(), 4, "{second}");

    // Wired: a failing run pages (through the webhook token), its completion resolves.
    crate::support::wait::hold(
        Duration::from_secs(3),
        "Prefect loads new automations into its trigger engine",
    )
    .await;
    let marker = prefect.home.path().join("setup-marker");
    let marker = marker.to_str().expect("utf-8 path");
    let failed = prefect.driver(&["fail", marker]).await;
    let run_id = failed["flow_run_id"].as_str().expect("run id").to_owned();
    let key = format!("prefect/flow-run/{run_id}");
    double
        .wait_until(Duration::from_secs(60), "the page of the failed run", |r| {
            r.iter().any(|r| r.dedup_key() == key && r.action() == "trigger")
        })
        .await;
    prefect.driver(&["retry", &run_id, marker]).await;
    double
        .wait_until(Duration::from_secs(60), "the resolve of the retried run", |r| {
            r.iter().any(|r| r.dedup_key() == key && r.action() == "resolve")
        })
        .await;

    let removed = run(&["--remove"]).await.expect("join");
    assert_eq!(removed.matches(": removed").count(), 4, "{removed}");
    assert_eq!(wiring(&api).await, before, "--remove left something behind");
}

/// Twenty automations fire on one failed run, each through its own action:
/// sixteen call the bridge, four an address where nothing listens (their
/// path names the bridge's actions), so Prefect drops at least four calls
/// for certain, and its shared transport may drop some of the sixteen too
/// (a call that fails closes the connections the others wait on). With
/// reconciliation, the bridge ends up having taken the event for every one
/// of the twenty actions: a repeat of the event to any of them is a
/// duplicate. Prints how many Prefect dropped and how many were recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_prefect_drops_under_fan_out_is_recovered() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    const FAN: usize = 20;
    const REFUSED: usize = 4;
    let prefect = Prefect::start().await;
    let double = Double::start().await;
    let api = format!("{}/api", prefect.ui);
    let actions: Vec<String> = (0..FAN).map(|i| format!("fan{i}={KEY_A}")).collect();
    let pd_url = double.url();
    let mut args = vec![
        "--pagerduty-url",
        pd_url.as_str(),
        "--prefect-api-url",
        api.as_str(),
        "--reconcile-interval",
        "2s",
    ];
    for a in &actions {
        args.extend(["--action", a.as_str()]);
    }
    let bridge = Bridge::serve(&args);
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    prefect
        .driver(&[
            "fanout",
            &bridge.url(),
            &(FAN - REFUSED).to_string(),
            &nowhere,
            &REFUSED.to_string(),
        ])
        .await;
    let marker = prefect.home.path().join("fan-marker");
    let failed = prefect
        .driver(&["fail", marker.to_str().expect("utf-8 path")])
        .await;
    let run = failed["flow_run_id"].as_str().expect("run id").to_owned();

    // Prefect has recorded an outcome for every one of the twenty calls.
    let http = client();
    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600)).to_string();
    let outcomes = crate::support::wait::until(
        Duration::from_secs(60),
        "Prefect records all twenty calls",
        || async {
            let v: Value = http
                .post(format!("{api}/events/filter"))
                .json(&serde_json::json!({"filter": {
                "event": {"name": ["prefect.automation.action.executed", "prefect.automation.action.failed"]},
                "occurred": {"since": since}}, "limit": 50}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let events = v["events"].as_array()?.clone();
            (events.len() >= FAN).then_some(events)
        },
    )
    .await;
    let dropped = outcomes
        .iter()
        .filter(|e| e["event"] == "prefect.automation.action.failed")
        .count();
    let triggering = outcomes[0]["related"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["prefect.resource.role"] == "triggering-event")
        })
        .and_then(|r| r["prefect.resource.id"].as_str())
        .and_then(|id| id.strip_prefix("prefect.event."))
        .expect("triggering event")
        .to_owned();

    // A pass after the drops has run.
    let spool_url = format!("{}/v1/spool", bridge.url());
    let after = jiff::Timestamp::now();
    let stats = crate::support::wait::until(
        Duration::from_secs(30),
        "a reconciliation pass after the drops",
        || async {
            let s = crate::support::get_json(&spool_url).await;
            let last: jiff::Timestamp = s["reconcile"]["last_success"].as_str()?.parse().ok()?;
            (last > after).then_some(s)
        },
    )
    .await;
    let recovered = stats["reconcile"]["recovered"].as_u64().unwrap_or(0);
    eprintln!(
        "fan-out of {FAN} ({REFUSED} to a closed port): Prefect dropped {dropped} call(s), \
         {} of them to the live bridge; reconciliation recovered {recovered}, found {} already delivered",
        dropped.saturating_sub(REFUSED),
        stats["reconcile"]["already_delivered"]
    );
    assert!(dropped >= REFUSED, "only {dropped} drops recorded");

    // The triggering event, as Prefect serves it: every action has it.
    let event = prefect_json("the triggering event", || {
        http.post(format!("{api}/events/filter"))
            .json(&serde_json::json!({"filter": {"id": {"id": [triggering]}, "occurred": {"since": since}}, "limit": 1}))
    })
    .await;
    let event = event["events"][0].to_string();
    assert!(event.contains(&run), "{event}");
    for i in 0..FAN {
        let (status, answer) = crate::support::post(&bridge.intake(&format!("fan{i}")), event.clone()).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("duplicate")),
            "action fan{i} never took the event ({dropped} dropped, {recovered} recovered): {answer}"
        );
    }
    // A drop whose request reached the bridge anyway (a read timeout) is a
    // duplicate, not a recovery.
    // The refused calls never reached the bridge, so each was recovered.
    assert!(
        (REFUSED..=dropped).contains(&(recovered as usize)),
        "recovered {recovered} of {dropped} dropped"
    );
}

/// Prefect's API answers 500 (a gate in front of a real server) while a
/// flow run's webhook is dropped: reconciliation fails and backs off, the
/// intake answers as ever, and a page for an unknown run whose names cannot
/// be looked up goes out with what it had. The API comes back: the dropped
/// run is paged once. A payload carrying only the run's id is paged with
/// its flow and run names, looked up once for two webhooks (the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefect_answering_500_delays_recovery_and_lookups_but_loses_nothing() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    const INTERVAL: Duration = Duration::from_secs(2);
    let prefect = Prefect::start().await;
    let gate = crate::support::gate::Gate::start(&prefect.ui).await;
    gate.fail(true);
    let double = Double::start().await;
    let (pd_url, oncall, names, api, interval) = (
        double.url(),
        format!("oncall={KEY_A}"),
        format!("names={}", crate::support::KEY_B),
        format!("{}/api", gate.url()),
        format!("{}s", INTERVAL.as_secs()),
    );
    let bridge = Bridge::serve(&[
        "--pagerduty-url",
        pd_url.as_str(),
        "--action",
        oncall.as_str(),
        "--action",
        names.as_str(),
        "--prefect-api-url",
        api.as_str(),
        "--reconcile-interval",
        interval.as_str(),
    ]);
    let spool_url = format!("{}/v1/spool", bridge.url());
    let failures = || async {
        crate::support::get_json(&spool_url).await["reconcile"]["failures"]
            .as_u64()
            .unwrap_or(0)
    };
    crate::support::wait::holds(Duration::from_secs(30), "a pass fails on the 500", || async {
        failures().await >= 1
    })
    .await;
    let stats = crate::support::get_json(&spool_url).await;
    let error = stats["reconcile"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("500"), "{stats}");

    // Prefect's own automations post to an address where nothing listens
    // (its path names this bridge's action): every call is dropped.
    let nowhere = format!("http://127.0.0.1:{}/v1/prefect/oncall", free_port());
    prefect.driver(&["setup", &nowhere]).await;
    let run = prefect.failing_run(1).await;
    let run_key = format!("prefect/flow-run/{run}");

    // The intake does not wait on Prefect: a webhook is taken at once, and
    // one whose names cannot be looked up is paged with what it carried.
    let failed =
        std::fs::read(crate::support::fixtures().join("examples/flow-run-failed.json")).expect("fixture");
    let (status, answer) = crate::support::post(&bridge.intake("oncall"), failed).await;
    assert_eq!(status, 202, "{answer}");
    let unknown = "6d1f6e1c-0000-4000-8000-00000000beef";
    let cloud1 = |run: &str, id: &str| {
        serde_json::json!({"flow_run_id": run, "state": "Failed", "id": id}).to_string()
    };
    let started = std::time::Instant::now();
    let (status, answer) =
        crate::support::post(&bridge.intake("names"), cloud1(unknown, "c1-event-unknown")).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        answer["summary"].as_str().map(|s| s.contains(unknown)),
        Some(true),
        "{answer}"
    );

    // While the API fails, the drop stays unrecovered.
    let seen = failures().await;
    crate::support::wait::holds(Duration::from_secs(30), "another failed pass", || async {
        failures().await > seen
    })
    .await;
    let triggers = || {
        double
            .received()
            .iter()
            .filter(|r| {
                r.dedup_key() == run_key
                    && r.action() == "trigger"
                    && r.body["routing_key"] == KEY_A
                    && r.status == 202
            })
            .count()
    };
    assert_eq!(triggers(), 0, "paged while Prefect's API failed");

    // The API is back: the dropped run is paged by the next try (the
    // backoff waits at most four intervals), once.
    gate.fail(false);
    let back = std::time::Instant::now();
    double
        .wait_until(Duration::from_secs(60), "the dropped run's page", |r| {
            r.iter().any(|r| {
                r.dedup_key() == run_key && r.action() == "trigger" && r.body["routing_key"] == KEY_A
            })
        })
        .await;
    let took = back.elapsed();
    assert!(
        took <= INTERVAL * 4 + Duration::from_secs(3),
        "recovered after {took:?}"
    );
    let passes = |s: &Value| s["reconcile"]["last_success"].as_str().map(str::to_owned);
    let first = passes(&crate::support::get_json(&spool_url).await);
    crate::support::wait::holds(Duration::from_secs(30), "one more pass", || async {
        passes(&crate::support::get_json(&spool_url).await) != first
    })
    .await;
    assert_eq!(triggers(), 1, "the dropped run was paged {} times", triggers());

    // Only the run's id: its names come from Prefect, asked once for two
    // webhooks about the run.
    for id in ["c1-event-1", "c1-event-2"] {
        let (status, answer) = crate::support::post(&bridge.intake("names"), cloud1(&run, id)).await;
        assert!(status == 202 || status == 200, "{status} {answer}");
    }
    let paged = double
        .wait_until(Duration::from_secs(30), "the named page", |r| {
            r.iter()
                .any(|r| r.dedup_key() == run_key && r.body["routing_key"] == crate::support::KEY_B)
        })
        .await;
    let page = paged
        .iter()
        .find(|r| r.dedup_key() == run_key && r.body["routing_key"] == crate::support::KEY_B)
        .expect("page");
    let summary = page.body["payload"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("ppb-e2e-flow"), "no flow name: {summary}");
    assert!(!summary.contains(&run), "the run is named by id: {summary}");
    assert_eq!(
        gate.seen("GET", &format!("/api/flow_runs/{run}")),
        1,
        "the flow run was not looked up exactly once"
    );
}

/// An automation left with Prefect's default, empty payload: the webhook
/// arrives with nothing in it and gets the fail-open page. Prefect keeps the
/// bridge's answer (`unrecognised`) in its `action.executed` event, so
/// reconciliation fetches the triggering event and pages the run properly:
/// its dedup key, its flow's name; and the run's completion, also sent
/// empty, resolves that page the same way. Each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_payload_webhook_is_paged_with_the_run_it_was_about() {
    if std::env::var_os("PPB_SKIP_PREFECT_E2E").is_some() {
        eprintln!("SKIPPED on purpose (PPB_SKIP_PREFECT_E2E is set): real Prefect end-to-end test");
        return;
    }
    let prefect = Prefect::start().await;
    let double = Double::start().await;
    let (pd_url, action, api) = (
        double.url(),
        format!("oncall={KEY_A}"),
        format!("{}/api", prefect.ui),
    );
    let bridge = Bridge::serve(&[
        "--pagerduty-url",
        pd_url.as_str(),
        "--action",
        action.as_str(),
        "--prefect-api-url",
        api.as_str(),
        "--reconcile-interval",
        "2s",
    ]);
    prefect.driver(&["empty", &bridge.intake("oncall")]).await;
    let marker = prefect.home.path().join("empty-marker");
    let marker = marker.to_str().expect("utf-8 path");
    let failed = prefect.driver(&["fail", marker]).await;
    let run = failed["flow_run_id"].as_str().expect("run id").to_owned();
    let key = format!("prefect/flow-run/{run}");
    let count = |r: &[crate::support::pagerduty::Received], action: &str| {
        r.iter()
            .filter(|r| r.dedup_key() == key && r.action() == action && r.status == 202)
            .count()
    };

    let got = double
        .wait_until(Duration::from_secs(60), "the run's own page", |r| {
            count(r, "trigger") >= 1
        })
        .await;
    assert!(
        got.iter()
            .any(|r| r.dedup_key().starts_with("prefect/unrecognised/oncall/")),
        "the empty webhook itself was not paged (fail open)"
    );
    let page = got.iter().find(|r| r.dedup_key() == key).expect("the run's page");
    assert!(page.errors.is_empty(), "{:?}", page.errors);
    let summary = page.body["payload"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("ppb-e2e-flow"), "{summary}");

    prefect.driver(&["retry", &run, marker]).await;
    double
        .wait_until(Duration::from_secs(60), "the run's resolve", |r| {
            count(r, "resolve") >= 1
        })
        .await;
    // Two more passes: still once each.
    let spool_url = format!("{}/v1/spool", bridge.url());
    let passes = |s: &Value| s["reconcile"]["last_success"].as_str().map(str::to_owned);
    for _ in 0..2 {
        let before = passes(&crate::support::get_json(&spool_url).await);
        crate::support::wait::holds(Duration::from_secs(30), "another pass", || async {
            passes(&crate::support::get_json(&spool_url).await) != before
        })
        .await;
    }
    let all = double.received();
    assert_eq!((count(&all, "trigger"), count(&all, "resolve")), (1, 1));
}
