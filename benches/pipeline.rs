//! The webhook handler's pure work, without sockets or the spool: a real
//! captured Prefect payload (a failed-run event, an automation, a firing)
//! parsed, translated and encoded as the
//! PagerDuty body, per event. Reports the median of several passes in
//! nanoseconds per event, so a change to `prefect` or `translate` can be
//! compared on its own (run both builds; the load benchmark measures the
//! whole service).
//!
//! Run: `cargo bench --bench pipeline` (`PIPELINE_EVENTS`, `PIPELINE_RUNS`,
//! `PIPELINE_ONLY=<capture name>`, `PIPELINE_PHASE=parse|whole`,
//! `PIPELINE_UI_URL=http://127.0.0.1:4200` for links as `--prefect-ui-url` makes them).
//! `benches/instructions.sh` counts instructions per event instead of time.

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Instant;

use prefect_pagerduty_bridge::actions::Action;
use prefect_pagerduty_bridge::prefect;
use prefect_pagerduty_bridge::secret::Secret;
use prefect_pagerduty_bridge::translate::{self, Options};
use support::measure::{env_u64, median};

fn main() {
    let events = env_u64("PIPELINE_EVENTS", 50_000);
    let runs = env_u64("PIPELINE_RUNS", 7).max(1);
    let action = Action {
        name: "bench".to_owned(),
        routing_key: Secret::new(support::KEY_A),
        severity: None,
    };
    // With a Prefect UI base, as `--prefect-ui-url` gives, each trigger
    // also gets its links back to Prefect.
    let options = Options {
        ui_base: std::env::var("PIPELINE_UI_URL")
            .ok()
            .and_then(|u| url::Url::parse(&u).ok()),
        ..Options::default()
    };
    let only = std::env::var("PIPELINE_ONLY").unwrap_or_default();
    // `parse` or `whole` runs only that loop (for counting instructions).
    let phase = std::env::var("PIPELINE_PHASE").unwrap_or_default();
    let names = ["failed_event_tojson", "failed_automation_tojson", "failed_firing"];
    for name in names.into_iter().filter(|n| only.is_empty() || only == *n) {
        let body = support::capture(name);
        let (mut parse, mut whole) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            for _ in 0..events * u64::from(phase != "whole") {
                black_box(prefect::parse(black_box(&body), None));
            }
            parse.push(t.elapsed().as_nanos() as f64 / events as f64);
            let t = Instant::now();
            for _ in 0..events * u64::from(phase != "parse") {
                let n = prefect::parse(black_box(&body), None);
                let tr = translate::translate(n, &action, &options);
                black_box(serde_json::to_vec(&tr.event).expect("encodes"));
            }
            whole.push(t.elapsed().as_nanos() as f64 / events as f64);
        }
        println!(
            "{name} ({} bytes): parse {:.0} ns/event, parse + translate + encode {:.0} ns/event (median of {runs} passes of {events})",
            body.len(),
            median(parse),
            median(whole)
        );
    }
}
