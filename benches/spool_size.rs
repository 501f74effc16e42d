//! The spool file over a long run: flow runs that fail and then complete
//! (a trigger, then its resolve), posted by `SIZE_CONC` clients as fast as
//! the bridge takes them, with the PagerDuty double answering 202, until
//! `SIZE_EVENTS` events have been accepted. Every `SIZE_SAMPLE_SECS` it
//! prints the file's size beside what the spool held (queued events, open
//! alerts); at the end, the largest file against the file at the high-water
//! mark of what it held (the first sample where queued + open peaked), and
//! the size after a clean stop.
//!
//! Run: `cargo bench --bench spool_size` (`SIZE_EVENTS=10000000`,
//! `SIZE_CONC=64`, `SIZE_SAMPLE_SECS=30`, `SIZE_RUNS=1`). With `SIZE_PAUSE=N`
//! the first N events are failures only and the double answers 500 to
//! them, so that a backlog of N builds (and N alerts stay open) and then
//! drains under the steady run.

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bridge::Bridge;
use support::measure::{DELIVER_EVERYTHING, connect, env_u64, median};
use support::pagerduty::{Double, Reply};

/// The body of a failed (or completed) event of run `run`, as bytes.
struct Bodies {
    failed: Value,
    completed: Value,
}

impl Bodies {
    fn load() -> Self {
        let read = |name: &str| -> Value {
            let path = support::fixtures().join("examples").join(name);
            serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
        };
        Self {
            failed: read("flow-run-failed.json"),
            completed: read("flow-run-completed.json"),
        }
    }

    fn body(&self, run: u64, failed: bool) -> bytes::Bytes {
        let mut v = if failed {
            self.failed.clone()
        } else {
            self.completed.clone()
        };
        let kind = if failed { 4 } else { 5 };
        v["id"] = json!(format!("{kind}0000000-0000-4000-8000-{run:012}"));
        v["resource"]["prefect.resource.id"] =
            json!(format!("prefect.flow-run.00000000-0000-4000-8000-{run:012}"));
        bytes::Bytes::from(v.to_string())
    }
}

/// Posts one body; whether the bridge took it (202, or 200 for a resolve
/// that found its trigger already superseded or nothing open).
async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: &str,
    path: &str,
    body: bytes::Bytes,
) -> bool {
    use http_body_util::BodyExt;
    let req = hyper::Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(body))
        .expect("request");
    if sender.ready().await.is_err() {
        *sender = connect(addr).await;
        return false;
    }
    match sender.send_request(req).await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.into_body().collect().await;
            ok
        }
        Err(_) => {
            *sender = connect(addr).await;
            false
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

struct Run {
    hwm_file: u64,
    max_file: u64,
    end_file: u64,
    stopped_file: u64,
    events: u64,
    secs: f64,
}

async fn run(events: u64, conc: u64, sample: Duration, pause: u64) -> Run {
    let double = Double::start().await;
    double.keep_counts_only();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    let (url, action) = (double.url(), format!("size={}", support::KEY_A));
    let mut args = vec![
        "--action",
        action.as_str(),
        "--spool",
        spool.to_str().expect("utf-8"),
        "--pagerduty-url",
        url.as_str(),
        "--queue-capacity",
        "1000000",
        "--retry-initial-interval",
        "1s",
    ];
    args.extend(DELIVER_EVERYTHING);
    let mut bridge = Bridge::serve(&args);
    if pause > 0 {
        double.set_reply(Reply::Status(500));
    }
    let parsed = url::Url::parse(&bridge.intake("size")).expect("url");
    let addr = format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed.port().expect("port")
    );
    let path = parsed.path().to_owned();
    let bodies = Arc::new(Bodies::load());
    let next_run = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (addr, path, bodies, next_run, accepted) = (
            addr.clone(),
            path.clone(),
            bodies.clone(),
            next_run.clone(),
            accepted.clone(),
        );
        tasks.spawn(async move {
            let mut sender = connect(&addr).await;
            while accepted.load(Ordering::Relaxed) < events {
                let run = next_run.fetch_add(1, Ordering::Relaxed);
                // The resolve follows its own trigger, on this connection;
                // while the backlog builds, runs only fail.
                let backlog = accepted.load(Ordering::Relaxed) < pause;
                for failed in [true, false].into_iter().take(if backlog { 1 } else { 2 }) {
                    while !post(&mut sender, &addr, &path, bodies.body(run, failed)).await {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let stats_url = format!("{}/v1/spool", bridge.url());
    let size = || std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0);
    let (mut held_max, mut hwm_file, mut max_file) = (0, 0, 0);
    let mut resumed = pause == 0;
    let mut last = Instant::now();
    loop {
        let done = tasks.is_empty();
        tokio::time::sleep(Duration::from_millis(250)).await;
        while tasks.try_join_next().is_some() {}
        let n = accepted.load(Ordering::Relaxed);
        if !resumed && n >= pause {
            double.set_reply(Reply::Accept);
            resumed = true;
        }
        let file = size();
        max_file = max_file.max(file);
        if last.elapsed() >= sample || done {
            last = Instant::now();
            let s = support::get_json(&stats_url).await;
            let held = s["queued"].as_u64().unwrap_or(0) + s["open_alerts"].as_u64().unwrap_or(0);
            if held > held_max {
                held_max = held;
                hwm_file = file;
            }
            println!(
                "  {:>6.0} s  accepted {n:>9}  delivered {:>9}  queued {:>7}  open {:>7}  file {:>8.1} MB",
                started.elapsed().as_secs_f64(),
                s["delivered"],
                s["queued"],
                s["open_alerts"],
                mb(file)
            );
        }
        if done {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // Let the queue drain before the clean stop.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && support::get_json(&stats_url).await["queued"].as_u64() != Some(0) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end_file = size();
    max_file = max_file.max(end_file);
    assert_eq!(bridge.terminate().code(), Some(0));
    let stopped_file = size();
    for line in bridge.logs().iter().filter(|l| l.contains("compacted")) {
        println!("  bridge: {line}");
    }
    let tally = double.tally();
    assert_eq!(tally.invalid, 0, "the double refused events as invalid");
    Run {
        hwm_file: hwm_file.max(1),
        max_file: max_file.max(stopped_file),
        end_file,
        stopped_file,
        events: accepted.load(Ordering::Relaxed),
        secs,
    }
}

#[tokio::main]
async fn main() {
    let events = env_u64("SIZE_EVENTS", 10_000_000);
    let conc = env_u64("SIZE_CONC", 64);
    let runs = env_u64("SIZE_RUNS", 1);
    let sample = Duration::from_secs(env_u64("SIZE_SAMPLE_SECS", 30));
    let pause = env_u64("SIZE_PAUSE", 0);
    let mut ratios = Vec::new();
    for i in 0..runs {
        println!(
            "run {}: {events} events (failed, then completed, per run), {conc} clients",
            i + 1
        );
        let r = run(events, conc, sample, pause).await;
        let ratio = r.max_file as f64 / r.hwm_file as f64;
        println!(
            "run {}: {} events in {:.0} s ({:.0}/s); file at the high-water mark {:.1} MB, largest {:.1} MB \
             ({ratio:.2}×), drained {:.1} MB, after a clean stop {:.1} MB",
            i + 1,
            r.events,
            r.secs,
            r.events as f64 / r.secs,
            mb(r.hwm_file),
            mb(r.max_file),
            mb(r.end_file),
            mb(r.stopped_file)
        );
        ratios.push(ratio);
    }
    println!(
        "median of {runs}: largest file / file at the high-water mark {:.2}×",
        median(ratios)
    );
}
