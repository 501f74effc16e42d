//! How tests wait: on a condition, with a deadline, never on a bare sleep.
//! A scenario that needs time to pass (a client idle for a second, an
//! outage of three) says so with [`hold`].

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use super::bridge::Bridge;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`; panics naming `what` after `within`.
pub async fn until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// As [`until`], for a condition that is just true or false.
pub async fn holds<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until(within, what, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await;
}

/// Lets `d` pass, because the scenario is about time passing (an idle
/// client, an outage, a disk frozen for longer than a timeout); `why` says so.
pub async fn hold(d: Duration, why: &str) {
    debug_assert!(!why.is_empty());
    tokio::time::sleep(d).await;
}

/// The spool figures of a bridge whose API answers loopback clients.
pub async fn spool_stats(b: &Bridge) -> Value {
    super::get_json(&format!("{}/v1/spool", b.url())).await
}

/// Waits until the bridge has nothing queued or in flight: from then on it
/// sends nothing more unless asked.
pub async fn drained(b: &Bridge, within: Duration) -> Value {
    until(within, "the spool is drained", || async {
        let s = spool_stats(b).await;
        (s["queued"] == 0 && s["in_flight"] == 0).then_some(s)
    })
    .await
}
