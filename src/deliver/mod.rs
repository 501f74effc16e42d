//! Delivery: takes due events from the spool and sends them through a
//! [`Sink`], paced per routing key, and settles each with the spool.
//!
//! Per routing key, events go out in accept order per alert (a later event
//! of an alert waits while an earlier one is in flight or backing off),
//! paced by a token bucket at the configured rate and capped by a log of
//! recent sends, so that PagerDuty's lookback window (~120/min per
//! integration key over 60 s; docs/pagerduty.md) holds the configured count
//! and never more. Waiting for the limiter delays an
//! event; nothing is dropped. What follows each answer is [`policy`]'s call;
//! what each key has learned (429 pauses, a lowered pace, an outage being
//! probed) is [`pacing`]'s.
//!
//! While a routing key fails (5xx, timeouts, connection errors), its other
//! events wait without attempts of their own while one send at a time
//! probes it, every `retry_initial`; the first success makes every waiting
//! event of the key due at once, so a backlog goes out as soon as PagerDuty
//! is back.

mod pacing;
mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use pacing::KeyState;
use pacing::pace_quota;
pub(crate) use pacing::window_quota;
use policy::Step;

use crate::metrics::{FailureReason, Metrics};
use crate::sink::{Delivery, Outbound, Sink};
use crate::spool::{Admit, Due, Spool, now_ms};
use crate::store::Record;

/// How long sends in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How delivery paces and retries.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Most sends in flight.
    pub(crate) max_in_flight: usize,
    /// Per routing key: at most `rate.0` events per `rate.1`.
    pub(crate) rate: (u32, Duration),
    /// Events allowed at once per routing key (within `rate`).
    pub(crate) burst: u32,
    /// Optional cap over all keys (account limit).
    pub(crate) global_rate: Option<(u32, Duration)>,
    /// Pause of a routing key after a 429 without a hint.
    pub(crate) rate_limit_pause: Duration,
    /// First retry delay after a 5xx or network error; the probe interval.
    pub(crate) retry_initial: Duration,
    /// Cap on the retry delay and on a 429's hint.
    pub(crate) retry_max: Duration,
    /// Give up (dead letter) on events older than this.
    pub(crate) max_event_age: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            rate: (120, Duration::from_secs(60)),
            burst: 10,
            global_rate: None,
            rate_limit_pause: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_event_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// What delivery knows per routing key; shared with the server for figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keys(Arc<Mutex<HashMap<Arc<str>, KeyState>>>);

impl Keys {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, KeyState>> {
        // No critical section can panic half-way; poisoning is ignored.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routing keys paused after a 429 now.
    pub(crate) fn paused(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|k| k.is_paused(now)).count()
    }
}

/// Sends until `shutdown`, then lets sends in flight finish (up to a grace
/// period); whatever is undelivered stays in the spool.
pub(crate) async fn run<S: Sink>(
    spool: Spool,
    sink: S,
    settings: Settings,
    keys: Keys,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let sink = Arc::new(sink);
    let settings = Arc::new(settings);
    let per_key: DefaultKeyedRateLimiter<Arc<str>> =
        RateLimiter::keyed(pace_quota(settings.rate.0, settings.rate.1, settings.burst));
    let global: Option<DefaultDirectRateLimiter> = settings
        .global_rate
        .map(|(n, per)| RateLimiter::direct(window_quota(n, per, n.min(settings.burst.max(1)))));
    let mut tasks = JoinSet::new();
    let mut last_gc = Instant::now();
    loop {
        let (work, next) = select(&spool, &keys, &settings, &per_key, global.as_ref());
        for due in work {
            let (spool, sink, settings, keys, metrics) = (
                spool.clone(),
                sink.clone(),
                settings.clone(),
                keys.clone(),
                metrics.clone(),
            );
            tasks.spawn(async move { send(&spool, &*sink, &settings, &keys, &metrics, due).await });
        }
        while tasks.try_join_next().is_some() {}
        if last_gc.elapsed() > Duration::from_secs(60) {
            per_key.retain_recent();
            last_gc = Instant::now();
        }
        let sleep =
            tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
        tokio::select! {
            () = spool.changed() => {}
            () = sleep => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = shutdown.cancelled() => break,
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            "sends still in flight at shutdown were cut; they stay in the spool and go out next start"
        );
    }
    // Acks and retry bookkeeping may sit in non-durable commits; make them
    // durable, and close the file, before the process exits.
    if let Err(e) = spool.close().await {
        tracing::error!(error = %e, "final spool flush failed");
    }
}

/// Asks the spool for what may go now, admitting each routing key by its
/// state (paused, probing, paced) and the rate limiters.
fn select(
    spool: &Spool,
    keys: &Keys,
    settings: &Settings,
    per_key: &DefaultKeyedRateLimiter<Arc<str>>,
    global: Option<&DefaultDirectRateLimiter>,
) -> (Vec<Due>, Option<Instant>) {
    let now = Instant::now();
    let clock = per_key.clock();
    let wait =
        |not_until: governor::NotUntil<_>| now + not_until.wait_time_from(governor::clock::Clock::now(clock));
    let mut states = keys.lock();
    spool.take_due(settings.max_in_flight, |key| {
        if let Some(Err(until)) = states.get(key).map(|k| k.gate(now, settings.rate)) {
            return Admit::Wait(until);
        }
        if let Some(g) = global
            && let Err(not_until) = g.check()
        {
            return Admit::Stop(wait(not_until));
        }
        if let Err(not_until) = per_key.check_key(key) {
            return Admit::Wait(wait(not_until));
        }
        // Counted at once: the next event of this key in the same pass
        // must see this send in the window.
        let state = states.entry(key.clone()).or_default();
        state.started(now);
        // The probe of a failing key: nothing else of it goes this pass.
        if state.is_failing() {
            Admit::GoAlone
        } else {
            Admit::Go
        }
    })
}

async fn send<S: Sink>(
    spool: &Spool,
    sink: &S,
    settings: &Settings,
    keys: &Keys,
    metrics: &Metrics,
    mut due: Due,
) {
    // The body is in memory unless the queue is long; otherwise it is read
    // as stored. Either way a success needs only the ids to be recorded.
    let mut stored = None;
    let body = match due.wire.take() {
        Some(body) => body,
        None => match read(spool, keys, settings, &due).await {
            Some(record) => stored.insert(record).wire(),
            None => {
                if let Some(k) = keys.lock().get_mut(&due.key) {
                    k.unsent();
                }
                return;
            }
        },
    };
    let outcome = sink
        .send(Outbound {
            body,
            kind: due.kind,
            action: &due.action_name,
            dedup_key: &due.dedup_key,
            event_action: due.action.as_str(),
        })
        .await;
    keys.lock()
        .entry(due.key.clone())
        .or_default()
        .ended(Instant::now(), settings.rate.1);
    let routing_key = crate::secret::redact(&due.key);
    let status = outcome.status();
    if let Delivery::Delivered { .. } = outcome {
        let recovered = keys
            .lock()
            .entry(due.key.clone())
            .or_default()
            .succeeded(Instant::now(), policy::per_second(settings.rate));
        spool.delivered(&due);
        let latency = Duration::from_millis(u64::try_from(now_ms() - due.accepted_ms).unwrap_or(0));
        metrics.delivered(&due.action_name, due.action.as_str(), latency);
        tracing::info!(action = %due.action_name, routing_key, dedup_key = %due.dedup_key,
            event_action = %due.action, status, "delivered to {}", sink.name());
        if recovered {
            let waiting = spool.make_due(&due.key);
            tracing::info!(
                routing_key,
                waiting,
                "{} takes events for this routing key again; sending what waited",
                sink.name()
            );
        }
        return;
    }
    metrics.failed(
        &due.action_name,
        match &outcome {
            Delivery::Throttled { .. } => FailureReason::RateLimited,
            Delivery::Rejected { .. } => FailureReason::ClientError,
            Delivery::Failed { status: 0, .. } => FailureReason::Network,
            Delivery::Failed { .. } | Delivery::Delivered { .. } => FailureReason::ServerError,
        },
    );
    // An event in flight is neither superseded nor rewritten by anyone else,
    // so a record read before the send is still current. One sent before its
    // commit ended is read once it has (none if that commit failed: its
    // webhook got 503, and what was tried is all there is).
    let record = match stored {
        Some(r) => Some(r),
        None => read(spool, keys, settings, &due).await,
    };
    let Some(mut record) = record else {
        return;
    };
    record.attempts += 1;
    record.last_status = Some(status);
    let age = Duration::from_millis(u64::try_from(now_ms() - record.accepted_ms).unwrap_or(0));
    let step = {
        let mut states = keys.lock();
        let key = states.entry(due.key.clone()).or_default();
        policy::after_send(
            &outcome,
            record.attempts,
            age,
            key,
            settings,
            Instant::now(),
            crate::backoff::jitter(),
        )
    };
    settle(spool, &due, record, step, &routing_key, status, sink.name());
}

fn settle(
    spool: &Spool,
    due: &Due,
    mut record: Record,
    step: Step,
    routing_key: &str,
    status: u16,
    sink: &str,
) {
    let dedup_key: &str = &due.dedup_key;
    match step {
        Step::Done { .. } => spool.delivered(due),
        Step::Retry {
            after,
            error,
            throttled,
        } => {
            if throttled {
                tracing::warn!(action = %record.action, routing_key, dedup_key, status,
                    pause_secs = after.as_secs(), "{sink} rate-limited the event; pausing this routing key");
            } else {
                tracing::warn!(action = %record.action, routing_key, dedup_key, status,
                    error = %error, attempts = record.attempts,
                    retry_in_ms = after.as_millis() as u64, "delivery to {sink} failed; will retry");
            }
            record.last_error = Some(error);
            spool.retry_later(due, record, after);
        }
        Step::GiveUp { error } => {
            tracing::error!(action = %record.action, routing_key, dedup_key, status, errors = %error,
                id = record.id, "{sink} refused the event, or it ran out of time; moved to the dead letters");
            record.last_error = Some(error);
            spool.dead_letter(due, record);
        }
    }
}

/// The stored record of `due`; `None` (and its slot given back) when it is
/// gone (superseded or purged between selection and send) or unreadable.
async fn read(spool: &Spool, keys: &Keys, settings: &Settings, due: &Due) -> Option<Record> {
    match spool.record(due).await {
        Ok(Some(r)) => Some(r),
        other => {
            if let Some(k) = keys.lock().get_mut(&due.key) {
                k.end_probe();
            }
            match other {
                Ok(_) => spool.release(due, None),
                Err(e) => {
                    tracing::error!(id = due.id, error = %e, "cannot read a spooled event; will try again");
                    spool.release(due, Some(settings.retry_initial));
                }
            }
            None
        }
    }
}
