//! What the bridge counts, for Prometheus: one registry, made once at start
//! and passed down to the intake, the spool's writer and delivery. Every
//! name starts `prefect_pagerduty_bridge_`. Labels carry only action names
//! (bounded by the configured actions), error codes, event actions and
//! failure reasons; never a routing key, a token or payload text.
//!
//! Counters and histograms are updated where things happen; gauges
//! (queue depth, oldest queued age, open alerts, dead letters, paused keys,
//! spool bytes, readiness) are read from the spool and delivery when scraped.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The prefix of every metric.
const PREFIX: &str = "prefect_pagerduty_bridge";

/// What became of a webhook for a configured action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Queued to be sent (202).
    Accepted,
    /// Nothing to send (200).
    Ignored,
    /// A repeat of an event already taken (200).
    Duplicate,
    /// A resolve that cancelled its queued trigger (202).
    Superseded,
    /// Refused with a 4xx or 5xx.
    Rejected,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
            Self::Superseded => "superseded",
            Self::Rejected => "rejected",
        }
    }
}

/// Why a send was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureReason {
    /// 429.
    RateLimited,
    /// Another 4xx: the event is refused.
    ClientError,
    /// 5xx or an answer that could not be read.
    ServerError,
    /// No answer: refused, reset, timed out.
    Network,
}

impl FailureReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ClientError => "client_error",
            Self::ServerError => "server_error",
            Self::Network => "network",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    action: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    action: String,
    event_action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    action: String,
    reason: &'static str,
}

/// Gauges read when scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// Undelivered events.
    pub(crate) queued: u64,
    /// Seconds since the oldest undelivered event was accepted (0 when none).
    pub(crate) oldest_queued_age: f64,
    /// Open alerts.
    pub(crate) open_alerts: u64,
    /// Dead letters.
    pub(crate) dead_letters: u64,
    /// Routing keys paused after a 429.
    pub(crate) paused_keys: u64,
    /// Size of the spool's storage, bytes.
    pub(crate) spool_bytes: u64,
    /// Whether the spool can take events.
    pub(crate) ready: bool,
}

/// The bridge's metrics; cheap to share (`Arc`).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    received: Family<ReceivedLabels, Counter>,
    rejections: Family<CodeLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    delivery_latency: Histogram,
    commit_seconds: Histogram,
    queued: Gauge,
    oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    open_alerts: Gauge,
    dead_letters: Gauge,
    paused: Gauge,
    spool_bytes: Gauge,
    ready: Gauge,
    reconcile_enabled: Gauge,
    reconcile_last_success: Gauge,
    reconcile_recovered: Counter,
    reconcile_failures: Counter,
    body_waits: Counter,
}

/// Seconds, from 1 ms to about 2 min, doubling: a commit takes milliseconds,
/// a delivery through an outage minutes.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 18)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let received = Family::default();
        let rejections = Family::default();
        let notifications = Family::default();
        let failures = Family::default();
        let delivery_latency = Histogram::new(latency_buckets());
        let commit_seconds = Histogram::new(latency_buckets());
        let (queued, open_alerts, dead_letters, paused, spool_bytes, ready) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        let oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let (reconcile_enabled, reconcile_last_success) = (Gauge::default(), Gauge::default());
        let (reconcile_recovered, reconcile_failures) = (Counter::default(), Counter::default());
        let body_waits = Counter::default();
        registry.register(
            "webhooks_received",
            "Prefect webhooks for a configured action, by what became of them",
            received.clone(),
        );
        registry.register(
            "webhook_rejections",
            "Webhooks answered 4xx or 5xx, by error code",
            rejections.clone(),
        );
        registry.register(
            "notifications",
            "Events PagerDuty took, by action and event action",
            notifications.clone(),
        );
        registry.register(
            "notifications_failed",
            "Sends PagerDuty did not take, by action and reason (a retried event counts each time)",
            failures.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From a webhook's acceptance to PagerDuty taking its event",
            delivery_latency.clone(),
        );
        registry.register(
            "spool_commit_seconds",
            "How long each spool commit (one group of decisions) took",
            commit_seconds.clone(),
        );
        registry.register(
            "queued_events",
            "Events accepted and not yet delivered",
            queued.clone(),
        );
        registry.register(
            "oldest_queued_age_seconds",
            "Age of the oldest undelivered event (0 when none)",
            oldest_age.clone(),
        );
        registry.register("open_alerts", "Alerts with an open trigger", open_alerts.clone());
        registry.register(
            "dead_letters",
            "Events PagerDuty refused or that ran out of time",
            dead_letters.clone(),
        );
        registry.register(
            "paused_routing_keys",
            "Routing keys paused after PagerDuty answered 429",
            paused.clone(),
        );
        registry.register("spool_bytes", "Size of the spool file", spool_bytes.clone());
        registry.register(
            "ready",
            "1 while the spool can take events (as /readyz answers 200), else 0",
            ready.clone(),
        );
        registry.register(
            "reconcile_enabled",
            "1 when the bridge reconciles with Prefect's API (--prefect-api-url)",
            reconcile_enabled.clone(),
        );
        registry.register(
            "reconcile_last_success_timestamp_seconds",
            "Unix time of the last reconciliation pass that read everything (0: none yet)",
            reconcile_last_success.clone(),
        );
        registry.register(
            "reconcile_recovered",
            "Webhooks Prefect dropped whose pages reconciliation queued",
            reconcile_recovered.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliation passes that could not read Prefect or store what they found",
            reconcile_failures.clone(),
        );
        registry.register(
            "webhook_body_waits",
            "Webhooks whose body waited for room in --body-memory before it was read",
            body_waits.clone(),
        );
        registry.register(
            "build",
            "The bridge's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            received,
            rejections,
            notifications,
            failures,
            delivery_latency,
            commit_seconds,
            queued,
            oldest_age,
            open_alerts,
            dead_letters,
            paused,
            spool_bytes,
            ready,
            reconcile_enabled,
            reconcile_last_success,
            reconcile_recovered,
            reconcile_failures,
            body_waits,
        }
    }

    /// A webhook's body waited for room in `--body-memory`.
    pub(crate) fn body_waited(&self) {
        self.body_waits.inc();
    }

    /// Reconciliation is on.
    pub(crate) fn reconcile_enabled(&self) {
        self.reconcile_enabled.set(1);
    }

    /// A reconciliation pass that started at `at` (unix s) read everything
    /// and recovered `recovered` pages.
    pub(crate) fn reconciled(&self, at: i64, recovered: u64) {
        self.reconcile_last_success.set(at);
        self.reconcile_recovered.inc_by(recovered);
    }

    /// A reconciliation pass failed.
    pub(crate) fn reconcile_failed(&self) {
        self.reconcile_failures.inc();
    }

    /// A shared registry.
    pub(crate) fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// A webhook for the configured action `action` ended as `outcome`.
    pub(crate) fn webhook(&self, action: &str, outcome: Outcome) {
        self.received
            .get_or_create(&ReceivedLabels {
                action: action.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A request was answered with the error `code`.
    pub(crate) fn rejection(&self, code: &'static str) {
        self.rejections.get_or_create(&CodeLabels { code }).inc();
    }

    /// PagerDuty took an event accepted `latency` ago.
    pub(crate) fn delivered(&self, action: &str, event_action: &'static str, latency: Duration) {
        self.notifications
            .get_or_create(&NotificationLabels {
                action: action.to_owned(),
                event_action,
            })
            .inc();
        self.delivery_latency.observe(latency.as_secs_f64());
    }

    /// A send was not taken.
    pub(crate) fn failed(&self, action: &str, reason: FailureReason) {
        self.failures
            .get_or_create(&FailureLabels {
                action: action.to_owned(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A spool commit took `took`.
    pub(crate) fn commit(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges set from `now`.
    pub(crate) fn encode(&self, now: &Snapshot) -> String {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.queued.set(int(now.queued));
        self.oldest_age.set(now.oldest_queued_age);
        self.open_alerts.set(int(now.open_alerts));
        self.dead_letters.set(int(now.dead_letters));
        self.paused.set(int(now.paused_keys));
        self.spool_bytes.set(int(now.spool_bytes));
        self.ready.set(i64::from(now.ready));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_labels_bounded() {
        let m = Metrics::new();
        m.webhook("oncall", Outcome::Accepted);
        m.webhook("oncall", Outcome::Accepted);
        m.rejection("payload_too_large");
        m.delivered("oncall", "trigger", Duration::from_millis(3));
        m.failed("oncall", FailureReason::RateLimited);
        let text = m.encode(&Snapshot {
            queued: 2,
            oldest_queued_age: 1.5,
            ready: true,
            ..Snapshot::default()
        });
        for line in [
            r#"prefect_pagerduty_bridge_webhooks_received_total{action="oncall",outcome="accepted"} 2"#,
            r#"prefect_pagerduty_bridge_webhook_rejections_total{code="payload_too_large"} 1"#,
            r#"prefect_pagerduty_bridge_notifications_total{action="oncall",event_action="trigger"} 1"#,
            r#"prefect_pagerduty_bridge_notifications_failed_total{action="oncall",reason="rate_limited"} 1"#,
            "prefect_pagerduty_bridge_delivery_latency_seconds_count 1",
            "prefect_pagerduty_bridge_queued_events 2",
            "prefect_pagerduty_bridge_oldest_queued_age_seconds 1.5",
            "prefect_pagerduty_bridge_ready 1",
            "prefect_pagerduty_bridge_dead_letters 0",
            r#"prefect_pagerduty_bridge_build_info{version=""#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("prefect_pagerduty_bridge_"), "{line}");
        }
    }
}
