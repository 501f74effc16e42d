//! The test suite's PagerDuty double as a program, for tests that run the
//! bridge outside `cargo test` (the container test): it listens on the
//! address given (default `127.0.0.1:0`), prints `listening <addr>`, then
//! one JSON line per request: `{"status", "errors", "body"}`, where
//! `errors` lists what the official spec and documented limits refuse.
//!
//! `cargo run --example pagerduty-double -- 0.0.0.0:18080`

// The double's own files, as `tests/it/support` has them (they name each
// other as `super::`).
#[allow(dead_code)]
#[path = "../tests/it/support/limit.rs"]
mod limit;
#[allow(dead_code)]
#[path = "../tests/it/support/pagerduty.rs"]
mod pagerduty;
#[allow(dead_code)]
#[path = "../tests/it/support/spec.rs"]
mod spec;

use std::io::Write as _;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let double = pagerduty::Double::start_on(&addr).await;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening {}", double.addr());
    let _ = out.flush();
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for r in double.received_since(seen) {
            seen += 1;
            let line = serde_json::json!({"status": r.status, "errors": r.errors, "body": r.body});
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}
