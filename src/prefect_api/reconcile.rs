//! Recovering the webhooks Prefect dropped. Prefect's `call-webhook` makes
//! one attempt: a refused connection, a timeout or its own transport race
//! loses the page, and Prefect records it as a
//! `prefect.automation.action.failed` event (a non-2xx answer as
//! `action.executed` with its `status_code`; docs/prefect.md §5, §8). A
//! call that arrived with an empty body (Prefect's default payload) or one
//! the bridge could not read is recovered the same way: the bridge's answer,
//! which Prefect keeps in `action.executed`, says `unrecognised`, and the
//! triggering event gives the page the run's details the body lacked.
//!
//! Every interval, this reads those events since its checkpoint (less an
//! overlap, for events written late), keeps the call-webhook ones whose
//! block posts to one of this bridge's actions, fetches each triggering
//! event and hands it to the spool exactly as the webhook would have: same
//! action, same translation, same idempotency, so a page that did arrive is
//! a duplicate and is not sent twice. The checkpoint is stored in the spool.
//! When Prefect cannot be read it backs off; the intake never waits on it.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Error;
use super::lookup::Lookups;
use crate::actions::Actions;
use crate::metrics::Metrics;
use crate::spool::{AcceptError, Accepted, Spool};

/// The events that record a webhook Prefect did not deliver.
const FAILED: &str = "prefect.automation.action.failed";
const EXECUTED: &str = "prefect.automation.action.executed";
/// Events written this long after they occurred are still found.
const OVERLAP: Duration = Duration::from_secs(120);
/// The longest wait between tries while Prefect cannot be read (or
/// [`BACKOFF_INTERVALS`] intervals, if that is shorter): once Prefect is
/// back, what it dropped is paged within this.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const BACKOFF_INTERVALS: u32 = 4;

/// How reconciliation runs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Between passes.
    pub(crate) interval: Duration,
    /// How far back the first pass looks (and at most any pass).
    pub(crate) lookback: Duration,
}

/// What reconciliation has done, for `/v1/spool`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Status {
    /// When the last pass that read everything ended, RFC 3339.
    pub(crate) last_success: Option<String>,
    /// Pages Prefect dropped that were recovered, since start.
    pub(crate) recovered: u64,
    /// Dropped webhooks found that the bridge already had (duplicates).
    pub(crate) already_delivered: u64,
    /// Dropped webhooks with nothing to send (a recovery with nothing open).
    pub(crate) nothing_to_send: u64,
    /// Passes that failed, since start.
    pub(crate) failures: u64,
    /// The last failure, while it lasts.
    pub(crate) last_error: Option<String>,
}

/// Shared reconciliation status.
pub(crate) type SharedStatus = Arc<Mutex<Status>>;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pass {
    recovered: u64,
    duplicates: u64,
    nothing: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Prefect(#[from] Error),
    #[error("the spool did not take a recovered event: {0}")]
    Spool(#[from] AcceptError),
    #[error("the checkpoint could not be stored: {0}")]
    Checkpoint(#[from] crate::spool::Error),
}

/// The reconciler.
#[derive(Debug)]
pub(crate) struct Reconciler {
    /// Prefect's API, through the shared cache (blocks, names).
    pub(crate) lookups: Lookups,
    /// Routing keys read again from their files.
    action_keys: crate::rotation::ActionKeys,
    pub(crate) settings: Settings,
    pub(crate) spool: Spool,
    pub(crate) actions: Arc<RwLock<Actions>>,
    pub(crate) options: crate::translate::Options,
    pub(crate) status: SharedStatus,
    pub(crate) metrics: Arc<Metrics>,
}

impl Reconciler {
    /// A reconciler; [`Reconciler::run`] starts it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        lookups: Lookups,
        action_keys: crate::rotation::ActionKeys,
        settings: Settings,
        spool: Spool,
        actions: Arc<RwLock<Actions>>,
        options: crate::translate::Options,
        status: SharedStatus,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            lookups,
            action_keys,
            settings,
            spool,
            actions,
            options,
            status,
            metrics,
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a pass now, then every interval (backing off while Prefect
    /// cannot be read), until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
            let started = jiff::Timestamp::now();
            // Stopping mid-pass is safe: what was recovered is committed,
            // and the checkpoint moves only after a whole pass.
            let result = tokio::select! {
                r = self.pass(started) => r,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(pass) => {
                    wait = self.settings.interval;
                    if pass.recovered > 0 {
                        tracing::warn!(
                            recovered = pass.recovered,
                            already_delivered = pass.duplicates,
                            "recovered webhooks Prefect dropped; their pages are queued"
                        );
                    }
                    self.metrics.reconciled(started.as_second(), pass.recovered);
                    let mut s = self.status();
                    s.last_success = Some(started.to_string());
                    s.recovered += pass.recovered;
                    s.already_delivered += pass.duplicates;
                    s.nothing_to_send += pass.nothing;
                    s.last_error = None;
                }
                Err(e) => {
                    wait = if wait.is_zero() {
                        self.settings.interval
                    } else {
                        (wait * 2).min(
                            MAX_BACKOFF
                                .min(self.settings.interval * BACKOFF_INTERVALS)
                                .max(self.settings.interval),
                        )
                    };
                    tracing::warn!(error = %e, retry_in_secs = wait.as_secs(),
                        "reconciliation with Prefect failed; will try again");
                    self.metrics.reconcile_failed();
                    let mut s = self.status();
                    s.failures += 1;
                    s.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// Reads every dropped webhook since the checkpoint and recovers it;
    /// moves the checkpoint to `now` only when all of them were handled.
    async fn pass(&self, now: jiff::Timestamp) -> Result<Pass, PassError> {
        let earliest = now.as_millisecond() - millis(self.settings.lookback);
        let since_ms = match self.spool.checkpoint() {
            Some(at) => (at - millis(OVERLAP)).max(earliest),
            None => earliest,
        };
        let since = jiff::Timestamp::from_millisecond(since_ms).unwrap_or(now);
        let mut done = Pass::default();
        let client = self.lookups.client();
        let mut page = client.events(&[FAILED, EXECUTED], since, now).await?;
        loop {
            for event in &page.events {
                match self.recover(event, since).await? {
                    Some(Accepted::Queued { .. }) => done.recovered += 1,
                    Some(Accepted::Duplicate) => done.duplicates += 1,
                    Some(_) => done.nothing += 1,
                    None => {}
                }
            }
            match page.next_page.take() {
                Some(next) => page = client.next(&next).await?,
                None => break,
            }
        }
        self.spool.save_checkpoint(now.as_millisecond()).await?;
        Ok(done)
    }

    /// Handles one action event: `None` when it is not a dropped webhook to
    /// this bridge, else what the spool made of its triggering event.
    async fn recover(&self, event: &Value, since: jiff::Timestamp) -> Result<Option<Accepted>, PassError> {
        let payload = &event["payload"];
        if payload["action_type"] != "call-webhook" {
            return Ok(None);
        }
        if event["event"] == EXECUTED && delivered_readably(payload) {
            return Ok(None);
        }
        let (Some(block), Some(triggering)) = (
            related(event, "block", "prefect.block-document."),
            related(event, "triggering-event", "prefect.event."),
        ) else {
            return Ok(None);
        };
        let Some(name) = self.lookups.action_of_block(&block).await? else {
            return Ok(None);
        };
        let Some(action) = self
            .actions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .cloned()
            .map(|a| self.action_keys.current(a))
        else {
            return Ok(None);
        };
        // The triggering event came before the action that failed.
        let look_from = since
            .checked_sub(jiff::SignedDuration::from_secs(86_400))
            .unwrap_or(since);
        let Some(triggering) = self.lookups.client().event(&triggering, look_from).await? else {
            tracing::warn!(event = %crate::logging::escape(&triggering),
                "a dropped webhook's triggering event is gone from Prefect; it cannot be recovered");
            return Ok(None);
        };
        // As `{{ event | tojson }}` would have sent it.
        let body = serde_json::to_vec(&triggering).unwrap_or_default();
        let mut n = crate::prefect::parse(&body, None);
        self.lookups.enrich(&mut n).await;
        let event_id = n.envelope_event_id.clone().or_else(|| n.event_id.clone());
        let t = crate::translate::translate(n, &action, &self.options);
        let accepted = self.spool.accept(&action.name, &t, event_id.as_deref()).await?;
        if let Accepted::Queued { id } = accepted {
            let automation = self.automation_of(event).await;
            tracing::info!(action = %action.name, dedup_key = %t.dedup_key, spool_id = id,
                automation = %crate::logging::escape(automation.as_deref().unwrap_or_default()),
                prefect_event_id = %crate::logging::escape(event_id.as_deref().unwrap_or_default()),
                "recovered a webhook Prefect dropped");
        }
        Ok(Some(accepted))
    }

    /// The name of the automation whose action failed (for the log line
    /// that says what was recovered): from the event, else looked up.
    async fn automation_of(&self, event: &Value) -> Option<String> {
        let resource = &event["resource"];
        if let Some(name) = resource["prefect.resource.name"].as_str() {
            return Some(name.to_owned());
        }
        let id = resource["prefect.resource.id"]
            .as_str()?
            .strip_prefix("prefect.automation.")?;
        self.lookups.automation_name(id).await.ok().flatten()
    }
}

/// Whether an executed call-webhook reached the bridge with a body it could
/// read: a 2xx whose answer (as Prefect kept it) does not say the payload
/// was unrecognised. An empty body (Prefect's default payload) or an
/// unreadable template got a fail-open page without the run's details; the
/// triggering event, fetched from Prefect, gives the real one.
fn delivered_readably(payload: &Value) -> bool {
    let success = payload["status_code"]
        .as_u64()
        .is_some_and(|s| (200..300).contains(&s));
    let unreadable = payload["response_body"]
        .as_str()
        .is_some_and(|b| b.contains(r#""payload_format":"unrecognised""#));
    success && !unreadable
}

/// The id of an event's related resource with `role`, without `prefix`.
fn related(event: &Value, role: &str, prefix: &str) -> Option<String> {
    event["related"].as_array()?.iter().find_map(|r| {
        (r["prefect.resource.role"] == role)
            .then(|| {
                r["prefect.resource.id"]
                    .as_str()?
                    .strip_prefix(prefix)
                    .map(str::to_owned)
            })
            .flatten()
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_says_unrecognised_is_not_a_delivery() {
        let ok = serde_json::json!({"status_code": 202,
            "response_body": r#"{"status":"accepted","payload_format":"prefect-event"}"#});
        assert!(delivered_readably(&ok));
        let empty = serde_json::json!({"status_code": 202,
            "response_body": r#"{"status":"accepted","action":"oncall","payload_format":"unrecognised"}"#});
        assert!(!delivered_readably(&empty));
        assert!(!delivered_readably(&serde_json::json!({"status_code": 500})));
        assert!(!delivered_readably(&serde_json::json!({})));
    }

    #[test]
    fn related_resources_are_found_by_role() {
        let e = serde_json::json!({"related": [
            {"prefect.resource.id": "prefect.block-document.b1", "prefect.resource.role": "block"},
            {"prefect.resource.id": "prefect.event.e1", "prefect.resource.role": "triggering-event"},
            {"prefect.resource.id": "prefect.event.e0", "prefect.resource.role": "automation-triggered-event"}
        ]});
        assert_eq!(
            related(&e, "block", "prefect.block-document.").as_deref(),
            Some("b1")
        );
        assert_eq!(
            related(&e, "triggering-event", "prefect.event.").as_deref(),
            Some("e1")
        );
        assert_eq!(related(&e, "flow", "prefect.flow."), None);
        assert_eq!(related(&serde_json::json!({}), "block", ""), None);
    }
}
