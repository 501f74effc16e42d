//! Load benchmark: the real bridge binary (release build, spool on and
//! fsync'd) over loopback, the PagerDuty double answering 202, the per-key
//! rate limit raised. Reports, per concurrency 1 / 16 / 128: accepted
//! events/s and the p50 / p99 of the 202; at an offered 1,000 events/s: the
//! end-to-end latency (POST sent → event at the double) and anything
//! missing; peak and idle RSS; start to ready.
//!
//! Run: `cargo bench --bench load` (`LOAD_SECS=10` for longer phases,
//! `LOAD_RUNS=3` to repeat and report medians, `LOAD_CONC=128` and
//! `LOAD_ONLY=closed|open` to run part of it). Client, double and bridge
//! share this machine's cores, so the figures are for the whole setup.

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::sync::Arc;

// The load generator and the double share the machine with the bridge; the
// bridge's allocator keeps their share of the CPU down too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use support::KEY_A;
use support::bridge::{BIN, Bridge};
use support::measure::{DELIVER_EVERYTHING, connect, env_u64, median, rss_kb};
use support::pagerduty::Double;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A Prefect failed-run event, unique per `n` (own run and event id).
struct Bodies {
    head: String,
    mid: String,
    tail: String,
}

impl Bodies {
    fn new() -> Self {
        let raw = String::from_utf8(support::capture("failed_event_tojson")).expect("utf-8");
        let run = "39eed61c-5f3c-4e8c-8dbe-05b23d4c268e";
        let id = "01a2214c-827e-7f4d-8af1-2c04918bd893";
        let (head, rest) = raw.split_once(id).expect("event id");
        let (mid, tail) = rest.split_once(run).expect("run id");
        Self {
            head: head.to_owned(),
            mid: mid.to_owned(),
            tail: tail.to_owned(),
        }
    }

    fn body(&self, n: u64) -> (String, String) {
        let run = format!("00000000-0000-4000-8000-{n:012}");
        let body = format!(
            "{}10000000-0000-4000-8000-{n:012}{}{run}{}",
            self.head, self.mid, self.tail
        );
        (body, format!("prefect/flow-run/{run}"))
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces: utime and stime
    // are the 12th and 13th of them, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn start(double: &Double) -> Bridge {
    let extra = std::env::var("LOAD_BRIDGE_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    let (url, action) = (double.url(), format!("bench={KEY_A}"));
    let defaults: Vec<(&str, &str)> = [("--pagerduty-url", url.as_str()), ("--action", action.as_str())]
        .into_iter()
        .chain(DELIVER_EVERYTHING.chunks(2).map(|pair| (pair[0], pair[1])))
        .collect();
    // LOAD_BRIDGE_ARGS may replace any of these.
    let mut args: Vec<&str> = defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|(flag, value)| [*flag, *value])
        .collect();
    args.extend(extra);
    Bridge::serve(&args)
}

struct Closed {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

async fn closed_loop(
    url: &str,
    bodies: &Arc<Bodies>,
    next: &Arc<std::sync::atomic::AtomicU64>,
    c: usize,
    secs: u64,
) -> Closed {
    let parsed = url::Url::parse(url).expect("url");
    let addr = format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed.port().expect("port")
    );
    let path = parsed.path().to_owned();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (addr, path, bodies, next) = (addr.clone(), path.clone(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            let mut sender = connect(&addr).await;
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (body, _) = bodies.body(n);
                let req = hyper::Request::post(path.as_str())
                    .header("host", addr.as_str())
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .expect("request");
                let t = Instant::now();
                if sender.ready().await.is_err() {
                    sender = connect(&addr).await;
                    errors += 1;
                    continue;
                }
                match sender.send_request(req).await {
                    Ok(r) => {
                        use http_body_util::BodyExt;
                        let accepted = r.status().as_u16() == 202;
                        let _ = r.into_body().collect().await;
                        if accepted {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        sender = connect(&addr).await;
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        });
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (lat, e) = r.expect("task");
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    Closed {
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
    }
}

struct Open {
    p50: Duration,
    p99: Duration,
    missing: usize,
    sent: usize,
}

async fn open_loop(
    url: &str,
    double: &Double,
    bodies: &Arc<Bodies>,
    next: &Arc<std::sync::atomic::AtomicU64>,
    rate: u64,
    secs: u64,
) -> Open {
    let client = support::client();
    let before = double.count();
    let total = rate * secs;
    let mut sent_at = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..total {
        tick.tick().await;
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (body, key) = bodies.body(n);
        sent_at.insert(key, Instant::now());
        let (client, url) = (client.clone(), url.to_owned());
        tasks.spawn(async move {
            client
                .post(&url)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    while tasks.join_next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = double.count() - before;
        if got >= sent_at.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = double.received_since(before);
    let mut lat = Vec::new();
    for r in &received {
        if let Some(t0) = sent_at.get(r.dedup_key()) {
            lat.push(r.at.duration_since(*t0));
        }
    }
    lat.sort();
    Open {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        missing: sent_at.len() - lat.len(),
        sent: sent_at.len(),
    }
}

fn main() {
    let secs = env_u64("LOAD_SECS", 5);
    let runs = env_u64("LOAD_RUNS", 1).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        println!("load benchmark: {BIN}");
        println!("phases of {secs} s, {runs} run(s); medians across runs\n");
        let bodies = Arc::new(Bodies::new());
        let next = Arc::new(std::sync::atomic::AtomicU64::new(1));

        // Start to ready, five starts.
        let mut ready = Vec::new();
        for _ in 0..5 {
            let double = Double::start().await;
            let t = Instant::now();
            let b = start(&double);
            let client = support::client();
            loop {
                if client.get(format!("{}/healthz", b.url())).send().await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            ready.push(ms(t.elapsed()));
        }

        type Row = (usize, Vec<f64>, Vec<f64>, Vec<f64>, usize);
        let mut table: Vec<Row> = std::env::var("LOAD_CONC")
                .unwrap_or_else(|_| "1,16,128".to_owned())
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .map(|c| (c, vec![], vec![], vec![], 0))
                .collect();
        let (mut e2e50, mut e2e99, mut missing, mut peak, mut idle) = (vec![], vec![], 0, vec![], vec![]);
        for _ in 0..runs {
            let double = Double::start().await;
            let b = start(&double);
            tokio::time::sleep(Duration::from_millis(300)).await;
            idle.push(rss_kb(b.pid(), "VmRSS:") as f64 / 1024.0);
            let url = b.intake("bench");
            let only = std::env::var("LOAD_ONLY").unwrap_or_default();
            for row in table.iter_mut().filter(|_| only.is_empty() || only == "closed") {
                let (b0, h0) = (cpu_secs(&b.pid().to_string()), cpu_secs("self"));
                let r = closed_loop(&url, &bodies, &next, row.0, secs).await;
                let (b1, h1) = (cpu_secs(&b.pid().to_string()), cpu_secs("self"));
                let n = r.rate * secs as f64;
                let spool: serde_json::Value = support::client()
                    .get(format!("{}/v1/spool", b.url()))
                    .send()
                    .await
                    .expect("spool stats")
                    .json()
                    .await
                    .expect("json");
                println!("c={}: {:.0}/s; CPU per accepted event: bridge {:.0} µs, client + double {:.0} µs; RSS {:.1} MiB, peak {:.1} MiB; still queued {}, open alerts {}",
                    row.0, r.rate, (b1 - b0) * 1e6 / n, (h1 - h0) * 1e6 / n,
                    rss_kb(b.pid(), "VmRSS:") as f64 / 1024.0, rss_kb(b.pid(), "VmHWM:") as f64 / 1024.0,
                    spool["queued"], spool["open_alerts"]);
                row.1.push(r.rate);
                row.2.push(ms(r.p50));
                row.3.push(ms(r.p99));
                row.4 += r.errors;
            }
            // Let the closed-loop backlog drain so it does not count against
            // the open-loop latency.
            let spool = format!("{}/v1/spool", b.url());
            let client = support::client();
            for _ in 0..600 {
                let v: serde_json::Value = client.get(&spool).send().await.expect("stats").json().await.expect("json");
                if v["queued"] == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !(only.is_empty() || only == "open") {
                continue;
            }
            let o = open_loop(&url, &double, &bodies, &next, 1000, secs).await;
            e2e50.push(ms(o.p50));
            e2e99.push(ms(o.p99));
            missing += o.missing;
            let _ = o.sent;
            peak.push(rss_kb(b.pid(), "VmHWM:") as f64 / 1024.0);
        }
        // A phase left out by LOAD_ONLY prints nothing, not a row of NaN.
        if table.iter().any(|row| !row.1.is_empty()) {
            println!("| concurrency | accepted events/s | 202 p50 | 202 p99 | non-202 |");
            println!("|---|---|---|---|---|");
            for (c, rate, p50, p99, errors) in table {
                println!("| {c} | {:.0} | {:.2} ms | {:.2} ms | {errors} |", median(rate), median(p50), median(p99));
            }
            println!();
        }
        if !e2e99.is_empty() {
            println!("offered 1000 events/s for {secs} s: end-to-end (POST sent → at the double) p50 {:.2} ms, p99 {:.2} ms, missing {missing}",
                median(e2e50), median(e2e99));
            println!("RSS: idle {:.1} MiB, peak {:.1} MiB", median(idle), median(peak));
        } else {
            println!("RSS: idle {:.1} MiB", median(idle));
        }
        println!("start to ready (spawn → first /healthz answer), median of 5: {:.1} ms", median(ready));
    });
}
