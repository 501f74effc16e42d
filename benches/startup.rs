//! Start-up with a large backlog: 1,000 queued events of ~500 KB each
//! (PagerDuty unreachable while they arrived), then a restart on that
//! spool. Reports, as medians of `STARTUP_RUNS` (default 3) restarts: spawn
//! → ready, and the new process's peak RSS (VmHWM) once ready.
//!
//! Run: `cargo bench --bench startup` (`STARTUP_EVENTS=1000`,
//! `STARTUP_BODY_KB=495`, `PPB_BRIDGE_BIN=<binary>` to measure another
//! build on the same spool). `STARTUP_OPEN=1000000` first opens that many
//! alerts (delivered, so nothing of them is queued); the filler's peak RSS
//! is the bridge's memory while they were opened. `STARTUP_EVENTS=1000000
//! STARTUP_BODY_KB=0` queues a million ordinary events the same way; the
//! filler's peak RSS is then the bridge's memory with them queued.

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bridge::Bridge;
use support::measure::{DELIVER_EVERYTHING, env_u64, median, rss_kb};

/// A failed-run event whose state message makes it about `kb` KB.
fn big_event(i: u64, kb: u64) -> Vec<u8> {
    static FIXTURE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let mut v = FIXTURE
        .get_or_init(|| {
            let path = support::fixtures().join("examples/flow-run-failed.json");
            serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
        })
        .clone();
    v["id"] = json!(format!("20000000-0000-4000-8000-{i:012}"));
    v["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.00000000-0000-4000-8000-{i:012}"));
    v["resource"]["prefect.state-message"] = json!("x".repeat(usize::try_from(kb * 1000).unwrap_or(0)));
    v.to_string().into_bytes()
}

/// Opens `n` alerts (distinct failed runs, delivered to a double that takes
/// them) in the spool at `spool`, 32 posts at a time.
async fn open_alerts(spool: &str, action: &str, n: u64) {
    let double = support::pagerduty::Double::start().await;
    double.keep_counts_only();
    let url = double.url();
    let mut args = vec![
        "--action",
        action,
        "--spool",
        spool,
        "--pagerduty-url",
        url.as_str(),
    ];
    args.extend(DELIVER_EVERYTHING);
    let filler = Bridge::serve(&args);
    let started = Instant::now();
    post_all(filler.intake("oncall"), 1_000_000_000, n, 0).await;
    let stats_url = format!("{}/v1/spool", filler.url());
    while support::get_json(&stats_url).await["queued"].as_u64() != Some(0) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = support::get_json(&stats_url).await;
    println!(
        "{} alerts opened in {:.0} s; filler peak RSS {:.1} MiB; spool file {:.0} MB",
        stats["open_alerts"],
        started.elapsed().as_secs_f64(),
        rss_kb(filler.pid(), "VmHWM:") as f64 / 1024.0,
        std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    let mut filler = filler;
    assert_eq!(filler.terminate().code(), Some(0));
}

/// Posts `n` events of `kb` KB (distinct failed runs from number `first`
/// on), 32 at a time; each must be answered 202.
async fn post_all(intake: String, first: u64, n: u64, kb: u64) {
    let http = support::client();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (http, intake, next) = (http.clone(), intake.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let status = http.post(&intake).body(big_event(first + i, kb)).send().await;
                assert_eq!(status.expect("post").status().as_u16(), 202, "event {i}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("poster");
    }
}

#[tokio::main]
async fn main() {
    let events = env_u64("STARTUP_EVENTS", 1000);
    let kb = env_u64("STARTUP_BODY_KB", 495);
    let runs = env_u64("STARTUP_RUNS", 3);
    let open = env_u64("STARTUP_OPEN", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    let spool_arg = spool.to_str().expect("utf-8").to_owned();
    let action = format!("oncall={}", support::KEY_A);
    let capacity = (events + 1).max(100_000).to_string();
    // Nothing listens on port 9: every send fails, then waits 10 minutes.
    let args = [
        "--action",
        action.as_str(),
        "--spool",
        spool_arg.as_str(),
        "--pagerduty-url",
        "http://127.0.0.1:9",
        "--retry-initial-interval",
        "10m",
        "--retry-max-interval",
        "10m",
        "--queue-capacity",
        capacity.as_str(),
    ];
    if open > 0 {
        open_alerts(&spool_arg, &action, open).await;
    }
    if events > 0 {
        let filler = Bridge::serve(&args);
        let started = Instant::now();
        post_all(filler.intake("oncall"), 0, events, kb).await;
        let stats = support::get_json(&format!("{}/v1/spool", filler.url())).await;
        println!(
            "backlog: {} events of ~{kb} KB accepted in {:.1} s; queued {}; spool file {:.0} MB; \
             filler peak RSS {:.1} MiB",
            events,
            started.elapsed().as_secs_f64(),
            stats["queued"],
            std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
            rss_kb(filler.pid(), "VmHWM:") as f64 / 1024.0
        );
        assert_eq!(
            stats["queued"].as_u64(),
            Some(events),
            "the backlog is not all queued"
        );
        let mut filler = filler;
        assert_eq!(filler.terminate().code(), Some(0));
    }
    let (mut ready, mut peak) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let spawned = Instant::now();
        let b = Bridge::serve(&args);
        let to_ready = spawned.elapsed();
        // What start-up touched is in VmHWM; a moment more for the
        // dispatcher's first look at the queue.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let hwm = rss_kb(b.pid(), "VmHWM:") as f64 / 1024.0;
        let stats = support::get_json(&format!("{}/v1/spool", b.url())).await;
        let (queued, open_now) = (stats["queued"].clone(), stats["open_alerts"].clone());
        println!(
            "run {}: ready {:.0} ms after spawn, peak RSS {:.1} MiB, queued {queued}, open {open_now}",
            run + 1,
            to_ready.as_secs_f64() * 1000.0,
            hwm
        );
        ready.push(to_ready.as_secs_f64() * 1000.0);
        peak.push(hwm);
        let mut b = b;
        assert_eq!(b.terminate().code(), Some(0));
    }
    println!(
        "start-up with {open} open, {events} queued of ~{kb} KB: spawn → ready median {:.0} ms, peak RSS median {:.1} MiB",
        median(ready),
        median(peak)
    );
}
