//! Delivery under PagerDuty faults: the real bridge binary (release build)
//! against the PagerDuty double on loopback.
//!
//! - **Outage**: the double answers 500 for 20 s while 200 events arrive
//!   (10 a second), then 202 again. Reports how long after recovery the last
//!   page landed, and the failed attempts per second during the outage.
//! - **Throttle**: the double lets each routing key send 10 events/s (token
//!   bucket, burst 10) and answers 429 without `Retry-After` beyond that; the
//!   bridge's own pacing is raised out of the way (100,000/min) and 300
//!   events arrive at once. Reports the delivery rate and the share of
//!   attempts answered 429.
//!
//! Run: `cargo bench --bench recovery` (`RECOVERY_RUNS=3` for medians of
//! three; `RECOVERY_ONLY=outage|throttle` for one part).

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use support::bridge::{BIN, Bridge};
use support::measure::{env_u64, median};
use support::pagerduty::{Double, Reply};

/// A failed-run event of its own run and event id.
fn event(n: usize) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&support::capture("failed_event_tojson")).expect("json");
    v["id"] = serde_json::json!(format!("10000000-0000-4000-8000-{n:012}"));
    v["resource"]["prefect.resource.id"] =
        serde_json::json!(format!("prefect.flow-run.00000000-0000-4000-8000-{n:012}"));
    v.to_string().into_bytes()
}

/// One outage: (seconds from recovery to the last page, failed attempts per
/// second during the outage).
async fn outage() -> (f64, f64) {
    const EVENTS: usize = 200;
    let outage = Duration::from_secs(20);
    let double = Double::start().await;
    double.set_reply(Reply::Status(500));
    let b = support::serve_oncall(&double, &["--pagerduty-rate", "100000/min"]);
    let started = Instant::now();
    for n in 0..EVENTS {
        let (status, body) = support::post(&b.intake("oncall"), event(n)).await;
        assert_eq!(status, 202, "{body}");
        let next = started + outage.mul_f64((n + 1) as f64 / EVENTS as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    tokio::time::sleep_until((started + outage).into()).await;
    let failed = double.received().iter().filter(|r| r.status == 500).count();
    double.set_reply(Reply::Accept);
    let recovered = Instant::now();
    let got = double.wait_accepted(EVENTS, Duration::from_secs(600)).await;
    let last = got.iter().map(|r| r.at).max().expect("events");
    let distinct: std::collections::HashSet<&str> = got.iter().map(|r| r.dedup_key()).collect();
    assert_eq!(distinct.len(), EVENTS, "every event delivered once");
    drop(b);
    (
        last.saturating_duration_since(recovered).as_secs_f64(),
        failed as f64 / outage.as_secs_f64(),
    )
}

/// One throttled burst: (events delivered per second, share of attempts
/// answered 429).
async fn throttle() -> (f64, f64) {
    const EVENTS: usize = 300;
    let double = Double::start().await;
    double.throttle(10.0, 10.0);
    let b: Bridge = support::serve_oncall(&double, &["--pagerduty-rate", "100000/min"]);
    let mut tasks = Vec::new();
    for n in 0..EVENTS {
        let url = b.intake("oncall");
        tasks.push(tokio::spawn(async move { support::post(&url, event(n)).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("post").0, 202);
    }
    let got = double.wait_accepted(EVENTS, Duration::from_secs(600)).await;
    let all = double.received();
    let first = all.iter().map(|r| r.at).min().expect("events");
    let last = got.iter().map(|r| r.at).max().expect("events");
    let limited = all.iter().filter(|r| r.status == 429).count();
    drop(b);
    (
        EVENTS as f64 / last.duration_since(first).as_secs_f64(),
        limited as f64 / all.len() as f64,
    )
}

fn main() {
    let runs = env_u64("RECOVERY_RUNS", 1).max(1) as usize;
    let only = std::env::var("RECOVERY_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        println!("recovery benchmark: {BIN}; {runs} run(s), medians across runs\n");
        if only.is_empty() || only == "outage" {
            let (mut late, mut failing) = (Vec::new(), Vec::new());
            for run in 1..=runs {
                let (l, f) = outage().await;
                println!("outage run {run}: last page {l:.2} s after recovery; {f:.2} failed attempts/s during the 20 s outage");
                late.push(l);
                failing.push(f);
            }
            println!(
                "outage: last page {:.2} s after recovery (target < 2 s); {:.2} failed attempts/s per key (target <= 2)\n",
                median(late),
                median(failing)
            );
        }
        if only.is_empty() || only == "throttle" {
            let (mut rate, mut limited) = (Vec::new(), Vec::new());
            for run in 1..=runs {
                let (r, l) = throttle().await;
                println!("throttle run {run}: {r:.2} events/s delivered; {:.1}% of attempts answered 429", l * 100.0);
                rate.push(r);
                limited.push(l);
            }
            println!(
                "throttle: {:.2} events/s (target >= 8); {:.1}% answered 429 (target <= 5%)",
                median(rate),
                median(limited) * 100.0
            );
        }
    });
}
