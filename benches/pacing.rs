//! Pacing under a flood: a burst of distinct failed runs to one routing key,
//! against a PagerDuty double that enforces the documented limit as
//! PagerDuty states it (at most N calls in any window looking back from
//! now; refused calls count too). Reports, per run: 429s, events lost or
//! sent twice, the drain time (first to last send) against the configured
//! pace (one window per N events), and the count in each whole window of
//! the drain: exact means N in every one.
//!
//! Run: `cargo bench --bench pacing`. Defaults: `PACE_EVENTS=10000`,
//! `PACE_RATE=120/1s` (PagerDuty's 120 per window with the window scaled
//! from 60 s to 1 s so that a run takes 84 s, not 84 min;
//! `PACE_RATE=120/min` runs the real thing), `PACE_BURST=10` (the
//! bridge's default), `PACE_RUNS=3`.

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bridge::Bridge;
use support::measure::{env_u64, median};
use support::pagerduty::Double;

/// A failed-run event of its own flow run.
fn event(i: u64) -> Vec<u8> {
    let path = support::fixtures().join("examples/flow-run-failed.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    v["id"] = json!(format!("30000000-0000-4000-8000-{i:012}"));
    v["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.00000000-0000-4000-8000-{i:012}"));
    v.to_string().into_bytes()
}

fn rate_of(s: &str) -> (usize, Duration) {
    let (n, per) = s.split_once('/').expect("PACE_RATE like 120/1s");
    let per = match per {
        "s" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        other => humantime::parse_duration(other).expect("PACE_RATE period"),
    };
    (n.parse().expect("PACE_RATE count"), per)
}

struct Run {
    throttled: usize,
    lost: usize,
    twice: usize,
    drain: Duration,
    windows: Vec<usize>,
    max_in_any_window: usize,
}

async fn run(events: u64, rate: &str, burst: &str) -> Run {
    let (n, per) = rate_of(rate);
    let double = Double::start().await;
    double.throttle_window(n, per);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    let (url, action) = (double.url(), format!("oncall={}", support::KEY_A));
    let bridge = Bridge::serve(&[
        "--action",
        action.as_str(),
        "--spool",
        spool.to_str().expect("utf-8"),
        "--pagerduty-url",
        url.as_str(),
        "--pagerduty-rate",
        rate,
        "--pagerduty-burst",
        burst,
        "--queue-capacity",
        "100000",
    ]);
    let http = support::client();
    let posted = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = events.div_ceil(32);
    for t in 0..32 {
        let (http, intake) = (http.clone(), bridge.intake("oncall"));
        tasks.spawn(async move {
            for i in (t * per_task)..((t + 1) * per_task).min(events) {
                let status = http
                    .post(&intake)
                    .body(event(i))
                    .send()
                    .await
                    .expect("post")
                    .status();
                assert_eq!(status.as_u16(), 202, "event {i}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("poster");
    }
    println!(
        "  {events} events accepted in {:.1} s",
        posted.elapsed().as_secs_f64()
    );
    let ideal = per.mul_f64(events as f64 / n as f64);
    let deadline = Instant::now() + ideal * 2 + Duration::from_secs(60);
    let mut delivered = HashSet::new();
    let mut seen = 0;
    while delivered.len() < events as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for r in double.received_since(seen) {
            seen += 1;
            assert!(r.errors.is_empty(), "invalid event: {:?}", r.errors);
            if r.status == 202 {
                delivered.insert(r.dedup_key().to_owned());
            }
        }
    }
    let all = double.received_since(0);
    let throttled = all.iter().filter(|r| r.status == 429).count();
    let accepted: Vec<Instant> = all.iter().filter(|r| r.status == 202).map(|r| r.at).collect();
    let twice = accepted.len() - delivered.len();
    let arrivals: Vec<Instant> = all.iter().map(|r| r.at).collect();
    let (first, last) = (arrivals[0], *arrivals.last().expect("arrivals"));
    // Whole windows from the first arrival on; the last, partial one is
    // where the queue ran out.
    let whole = (last.duration_since(first).as_nanos() / per.as_nanos()) as usize;
    let mut windows = vec![0; whole];
    for t in &arrivals {
        let w = (t.duration_since(first).as_nanos() / per.as_nanos()) as usize;
        if w < whole {
            windows[w] += 1;
        }
    }
    // The busiest window of length `per` anywhere (two pointers).
    let mut max_in_any_window = 0;
    let mut lo = 0;
    for hi in 0..arrivals.len() {
        while arrivals[hi].duration_since(arrivals[lo]) >= per {
            lo += 1;
        }
        max_in_any_window = max_in_any_window.max(hi - lo + 1);
    }
    drop(bridge);
    Run {
        throttled,
        lost: events as usize - delivered.len(),
        twice,
        drain: last.duration_since(first),
        windows,
        max_in_any_window,
    }
}

#[tokio::main]
async fn main() {
    let events = env_u64("PACE_EVENTS", 10_000);
    let runs = env_u64("PACE_RUNS", 3);
    let rate = std::env::var("PACE_RATE").unwrap_or_else(|_| "120/1s".to_owned());
    let burst = std::env::var("PACE_BURST").unwrap_or_else(|_| "10".to_owned());
    let (n, per) = rate_of(&rate);
    // The configured pace: N events a window.
    let ideal = per.mul_f64(events as f64 / n as f64);
    println!(
        "{events} events to one routing key; bridge --pagerduty-rate {rate} --pagerduty-burst {burst}; \
         the double allows {n} calls per {per:?} looking back; at exactly that pace they take {:.1} s",
        ideal.as_secs_f64()
    );
    let mut drains = Vec::new();
    let mut paces = Vec::new();
    for i in 0..runs {
        let r = run(events, &rate, &burst).await;
        let mut w = r.windows.clone();
        w.sort_unstable();
        let pace = if w.is_empty() {
            0.0
        } else {
            w.iter().sum::<usize>() as f64 / w.len() as f64
        };
        println!(
            "run {}: 429s {}, lost {}, sent twice {}, drain {:.1} s ({:.3}× ideal), \
             per whole window min/median/max {}/{}/{} over {} windows (mean {pace:.2}), busiest window {}",
            i + 1,
            r.throttled,
            r.lost,
            r.twice,
            r.drain.as_secs_f64(),
            r.drain.as_secs_f64() / ideal.as_secs_f64(),
            w.first().copied().unwrap_or(0),
            w.get(w.len() / 2).copied().unwrap_or(0),
            w.last().copied().unwrap_or(0),
            w.len(),
            r.max_in_any_window
        );
        assert_eq!(r.throttled, 0, "the double answered 429");
        assert_eq!(r.lost, 0, "events lost");
        drains.push(r.drain.as_secs_f64() / ideal.as_secs_f64());
        paces.push(pace);
    }
    println!(
        "median of {runs}: drain {:.3}× ideal, {:.2} events per whole window (configured {n})",
        median(drains),
        median(paces)
    );
}
