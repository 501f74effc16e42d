//! Sends due events from the spool to PagerDuty.
//!
//! Per routing key, events go out in accept order per dedup key (a later
//! event of a dedup key waits while an earlier one is in flight or backing
//! off), paced by a token bucket that never lets a 60-second window hold more
//! than the configured rate (PagerDuty: ~120/min per integration key, over a
//! 60 s lookback; docs/pagerduty.md). Waiting for the limiter delays an event;
//! nothing is dropped. Outcomes, per PagerDuty's retry guidance:
//! - 2xx: done.
//! - 429: pause the routing key for `Retry-After` / `ratelimit-reset` when
//!   given (at most `retry_max`), else `rate_limit_pause`, and lower the
//!   key's pace to 85% of what PagerDuty took over the last second; the
//!   pace rises again with each success (about +0.25 events/s per second).
//! - 5xx, timeouts, connection errors: the routing key is failing. Its other
//!   events wait without attempts of their own while one send at a time
//!   probes it, every `retry_initial`; the first success makes every waiting
//!   event of the key due at once, so a backlog goes out as soon as
//!   PagerDuty is back. The event whose failure started it backs off
//!   exponentially (capped at `retry_max`): an event PagerDuty keeps failing
//!   on its own is not retried in a tight loop.
//! - other 4xx, or an event `max_event_age` old: a dead letter, with
//!   PagerDuty's `errors[]`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::store::{Change, Record};
use super::{Index, Spool, now_ms, open_row};
use crate::pagerduty::EventAction;
use crate::pagerduty::client::{Client, Outcome};

/// How long sends in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where events go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// PagerDuty's Events API.
    PagerDuty(Client),
    /// The log (`--dry-run`).
    DryRun,
}

/// A quota that lets no window of `per` hold more than `n` events, with up
/// to `burst` of them at once. GCRA allows `b` at once and then one per
/// period, so a window can hold `b + per/period - 1` sends on schedule.
/// Aiming that at `n - 1` (`period = per / (n - b)`, `b < n`) leaves room for
/// one send that the network delays into the next window, so what PagerDuty
/// sees over its 60 s lookback stays within `n`.
pub fn window_quota(n: u32, per: Duration, burst: u32) -> Quota {
    let n = n.max(1);
    let b = if n > 1 { burst.clamp(1, n - 1) } else { 1 };
    // Rounded up: a period a nanosecond short would fit one more send.
    let nanos = per.as_nanos().div_ceil(u128::from((n - b).max(1)));
    let period = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    let b = NonZeroU32::new(b).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(b)
}

/// `now + d`, or a day from now if that does not fit in an `Instant`.
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Lowest pace a 429 can set a routing key to, events per second.
const MIN_ADAPTIVE_RATE: f64 = 0.1;

/// What the dispatcher knows about one routing key beyond its rate limit.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// After a 429: nothing is sent before this.
    paused_until: Option<Instant>,
    /// Its sends fail (5xx, network): one probe at a time.
    failing: bool,
    /// A probe is in flight.
    probing: bool,
    /// When the next probe may go.
    next_probe: Option<Instant>,
    /// After a 429: at most this many events per second, until successes
    /// raise it back to the configured rate.
    adaptive_rate: Option<f64>,
    /// When the next send may go under `adaptive_rate`.
    next_send: Option<Instant>,
    /// Recent successes, to estimate what PagerDuty takes.
    recent: std::collections::VecDeque<Instant>,
}

impl KeyState {
    /// Whether a 429 pause holds at `now`.
    pub(super) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    /// Whether a send may go now; when not, until when it waits.
    fn gate(&self, now: Instant) -> Result<(), Instant> {
        if let Some(t) = self.paused_until.filter(|t| *t > now) {
            return Err(t);
        }
        if self.failing {
            match self.next_probe {
                _ if self.probing => return Err(later(now, Duration::from_secs(1))),
                Some(t) if t > now => return Err(t),
                _ => {}
            }
        }
        match self.next_send {
            Some(t) if t > now => Err(t),
            _ => Ok(()),
        }
    }

    /// A send was started.
    fn started(&mut self, now: Instant) {
        if self.failing {
            self.probing = true;
        }
        if let Some(rate) = self.adaptive_rate {
            let gap = Duration::from_secs_f64(1.0 / rate);
            self.next_send = Some(later(self.next_send.map_or(now, |t| t.max(now)), gap));
        }
    }

    /// PagerDuty took an event: the key is healthy, its pace may rise.
    /// Returns whether it was failing until now.
    fn succeeded(&mut self, now: Instant, configured_per_sec: f64) -> bool {
        let recovered = self.failing;
        self.failing = false;
        self.probing = false;
        self.next_probe = None;
        self.recent.push_back(now);
        while self.recent.len() > 64
            || self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if let Some(rate) = self.adaptive_rate {
            // About +0.25 events/s for every second at this pace: slow
            // enough that an overshoot costs a 429 or two every few seconds.
            let raised = rate + 0.25 / rate.max(1.0);
            self.adaptive_rate = (raised < configured_per_sec).then_some(raised);
            if self.adaptive_rate.is_none() {
                self.next_send = None;
            }
        }
        recovered
    }

    /// A 5xx or network failure. Returns whether the key was healthy until
    /// now (this failure starts an outage).
    fn failed(&mut self, now: Instant, probe_every: Duration) -> bool {
        let first = !self.failing;
        self.failing = true;
        self.probing = false;
        self.next_probe = Some(later(now, probe_every));
        first
    }

    /// A 429: pause the key until `until` (sends already in flight may bring
    /// more 429s: the latest end holds), and pace it at 85% of what
    /// PagerDuty took over the last second, or at half the pace it had.
    fn rate_limited(&mut self, now: Instant, until: Instant, configured_per_sec: f64) {
        self.probing = false;
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        let taken = self
            .recent
            .iter()
            .filter(|t| now.duration_since(**t) <= Duration::from_secs(1))
            .count() as f64;
        let current = self.adaptive_rate.unwrap_or(configured_per_sec);
        let rate = if taken >= 2.0 { 0.85 * taken } else { current / 2.0 };
        self.adaptive_rate = Some(rate.clamp(MIN_ADAPTIVE_RATE, configured_per_sec.max(MIN_ADAPTIVE_RATE)));
    }
}

/// Delay before retry number `attempt` (1-based): `initial · 2^(attempt-1)`,
/// capped at `max`, with jitter that keeps it within `[d/2, d]`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
    let d = exp.min(max);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(now_ms()) % 10_000) as f64 / 10_000.0
}

struct Work {
    id: u64,
    alert: super::AlertId,
    key: Arc<str>,
    dedup_key: Arc<str>,
    action: EventAction,
    action_name: Arc<str>,
    wire: Option<bytes::Bytes>,
}

/// Runs until `shutdown`, then lets sends in flight finish (up to a grace
/// period); whatever is undelivered stays in the spool.
pub async fn run(spool: Spool, sink: Sink, shutdown: CancellationToken) {
    let s = &spool.inner.settings;
    let per_key: DefaultKeyedRateLimiter<Arc<str>> =
        RateLimiter::keyed(window_quota(s.rate.0, s.rate.1, s.burst));
    let global: Option<DefaultDirectRateLimiter> = s
        .global_rate
        .map(|(n, per)| RateLimiter::direct(window_quota(n, per, n.min(s.burst.max(1)))));
    let mut tasks = JoinSet::new();
    let mut last_gc = Instant::now();
    loop {
        let (work, next) = select(&spool, &per_key, global.as_ref());
        for w in work {
            let spool = spool.clone();
            let sink = sink.clone();
            tasks.spawn(async move { send(&spool, &sink, w).await });
        }
        while tasks.try_join_next().is_some() {}
        if last_gc.elapsed() > Duration::from_secs(60) {
            per_key.retain_recent();
            last_gc = Instant::now();
        }
        let sleep =
            tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
        tokio::select! {
            () = spool.inner.wake.notified() => {}
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
    // durable before the process exits.
    if let Err(e) = spool.flush().await {
        tracing::error!(error = %e, "final spool flush failed");
    }
}

/// Picks what to send now; returns it and when to look again.
///
/// One pass in id order. An event may go when it is the oldest queued one of
/// its dedup key (so a trigger is never overtaken by its resolve), committed,
/// due, and its routing key is neither paused nor over its rate. The pass
/// stops early once every routing key with queued events is blocked, so a
/// long backlog held back by the rate limit costs little per pass.
fn select(
    spool: &Spool,
    per_key: &DefaultKeyedRateLimiter<Arc<str>>,
    global: Option<&DefaultDirectRateLimiter>,
) -> (Vec<Work>, Option<Instant>) {
    let max_in_flight = spool.inner.settings.max_in_flight;
    let now = Instant::now();
    let clock = per_key.clock();
    let mut idx = spool.lock();
    let mut work = Vec::new();
    let mut next: Option<Instant> = None;
    let soon = |t: Instant, next: &mut Option<Instant>| *next = Some(next.map_or(t, |n| n.min(t)));
    // Routing keys that can send nothing more this pass; there are few.
    let mut blocked: Vec<Arc<str>> = Vec::new();
    let is_blocked = |blocked: &[Arc<str>], key: &Arc<str>| blocked.iter().any(|b| **b == **key);
    let mut ids = Vec::new();
    for (id, e) in &idx.queued {
        if idx.in_flight + ids.len() >= max_in_flight || blocked.len() >= idx.per_key.len() {
            break;
        }
        // In flight or not yet on disk: it stays first of its dedup key, so
        // later events of that key wait too.
        if e.in_flight
            || !e.committed
            || e.held
            || is_blocked(&blocked, &e.key)
            || !idx.is_first_of_dedup(*id, e)
        {
            continue;
        }
        if e.due > now {
            soon(e.due, &mut next);
            continue;
        }
        if let Some(Err(until)) = idx.keys.get(&e.key).map(|k| k.gate(now)) {
            soon(until, &mut next);
            blocked.push(e.key.clone());
            continue;
        }
        if let Some(g) = global
            && let Err(not_until) = g.check()
        {
            soon(
                now + not_until.wait_time_from(governor::clock::Clock::now(clock)),
                &mut next,
            );
            break;
        }
        if let Err(not_until) = per_key.check_key(&e.key) {
            soon(
                now + not_until.wait_time_from(governor::clock::Clock::now(clock)),
                &mut next,
            );
            blocked.push(e.key.clone());
            continue;
        }
        ids.push(*id);
        if idx.keys.get(&e.key).is_some_and(|k| k.failing) {
            // The probe of a failing key: nothing else of it goes this pass.
            blocked.push(e.key.clone());
        }
    }
    idx.in_flight += ids.len();
    for id in ids {
        let Some(e) = idx.queued.get_mut(&id) else {
            continue;
        };
        e.in_flight = true;
        let w = Work {
            id,
            alert: e.alert,
            key: e.key.clone(),
            dedup_key: e.dedup_key.clone(),
            action: e.action,
            action_name: e.action_name.clone(),
            wire: e.wire.clone(),
        };
        idx.keys.entry(w.key.clone()).or_default().started(now);
        work.push(w);
    }
    (work, next)
}

async fn send(spool: &Spool, sink: &Sink, mut w: Work) {
    let client = match sink {
        Sink::PagerDuty(client) => client,
        Sink::DryRun => {
            let Some(record) = read(spool, &w) else { return };
            let event = record
                .decode_event()
                .map(|e| e.to_redacted_json())
                .unwrap_or_default();
            tracing::info!(action = %record.action, dedup_key = %w.dedup_key, event_action = %w.action,
                event = %event, "dry run: would send to PagerDuty");
            delivered(spool, &w, 0, true);
            return;
        }
    };
    // The encoded event is in memory unless the queue is long; otherwise it
    // is read as stored, as the very bytes to send. Either way a 202 needs
    // only the ids to be recorded.
    let mut stored = None;
    let body = match w.wire.take() {
        Some(body) => body,
        None => match read(spool, &w) {
            Some(record) => stored.insert(record).wire(),
            None => return,
        },
    };
    let outcome = client.send_json(body).await;
    if matches!(outcome, Outcome::Accepted { .. }) {
        delivered(spool, &w, outcome.status(), false);
        return;
    }
    // An event in flight is neither superseded nor rewritten by anyone else,
    // so a record read before the send is still current.
    if let Some(record) = stored.or_else(|| read(spool, &w)) {
        finish(spool, w, record, outcome);
    }
}

/// The stored record of `w`; `None` (and the slot released) when it is gone
/// (superseded or purged between selection and send).
fn read(spool: &Spool, w: &Work) -> Option<Record> {
    match spool.inner.store.get(w.id) {
        Ok(Some(r)) => Some(r),
        other => {
            let mut idx = spool.lock();
            idx.in_flight = idx.in_flight.saturating_sub(1);
            if let Some(k) = idx.keys.get_mut(&w.key) {
                k.probing = false;
            }
            match other {
                // Gone: superseded or purged meanwhile.
                Ok(_) => {
                    idx.remove(w.id);
                }
                Err(e) => {
                    tracing::error!(id = w.id, error = %e, "cannot read a spooled event; will try again");
                    if let Some(entry) = idx.queued.get_mut(&w.id) {
                        entry.in_flight = false;
                        entry.due = later(Instant::now(), spool.inner.settings.retry_initial);
                    }
                }
            }
            None
        }
    }
}

/// Records a 202: drops the event, marks its alert as seen by PagerDuty.
fn delivered(spool: &Spool, w: &Work, status: u16, dry_run: bool) {
    let mut change = Change::default();
    let mut idx = spool.lock();
    idx.in_flight = idx.in_flight.saturating_sub(1);
    idx.remove(w.id);
    change.delete.push(w.id);
    change.counters.delivered += 1;
    idx.counters.delivered += 1;
    let now = Instant::now();
    let configured = per_second(spool.inner.settings.rate);
    if idx
        .keys
        .entry(w.key.clone())
        .or_default()
        .succeeded(now, configured)
    {
        recovered(&mut idx, &w.key, now);
    }
    // In memory only: on restart every open alert that is not dead-lettered
    // counts as delivered (see `Spool::open`), so the row need not change.
    if w.action == EventAction::Trigger
        && let Some(open) = idx.open.get_mut(&w.alert)
    {
        open.delivered = true;
    }
    drop(idx);
    // A dry run already logged the event it would have sent.
    if !dry_run {
        tracing::info!(action = %w.action_name, routing_key = %crate::secret::redact(&w.key),
            dedup_key = %w.dedup_key, event_action = %w.action, status, "delivered to PagerDuty");
    }
    spool.submit(change);
    spool.inner.wake.notify_one();
}

/// A routing key's outage is over: every event of it waiting is due now.
fn recovered(idx: &mut Index, key: &Arc<str>, now: Instant) {
    let mut n = 0;
    for e in idx.queued.values_mut().filter(|e| e.key == *key && !e.in_flight) {
        if e.due > now {
            e.due = now;
        }
        n += 1;
    }
    tracing::info!(routing_key = %crate::secret::redact(key), waiting = n,
        "PagerDuty takes events for this routing key again; sending what waited");
}

/// A configured rate in events per second.
fn per_second((n, per): (u32, Duration)) -> f64 {
    f64::from(n) / per.as_secs_f64().max(1e-9)
}

fn finish(spool: &Spool, w: Work, mut record: Record, outcome: Outcome) {
    let settings = &spool.inner.settings;
    let dedup_key: &str = &w.dedup_key;
    let routing_key = crate::secret::redact(&w.key);
    let status = outcome.status();
    let mut change = Change::default();
    let mut idx = spool.lock();
    idx.in_flight = idx.in_flight.saturating_sub(1);
    record.attempts += 1;
    record.last_status = Some(status);
    let now = Instant::now();
    let age = Duration::from_millis(u64::try_from(now_ms() - record.accepted_ms).unwrap_or(0));
    let retry_at = |idx: &mut Index, record: &mut Record, delay: Duration, change: &mut Change| {
        if let Some(entry) = idx.queued.get_mut(&record.id) {
            entry.in_flight = false;
            entry.due = later(now, delay);
        }
        record.next_attempt_ms =
            now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        change.put.push(record.clone());
    };
    let expired = age >= settings.max_event_age;
    match &outcome {
        Outcome::Accepted { .. } => {
            // `delivered` releases the in-flight slot itself.
            idx.in_flight += 1;
            drop(idx);
            delivered(spool, &w, status, false);
            return;
        }
        Outcome::RateLimited { retry_after } if !expired => {
            // PagerDuty's hint is honoured, but never beyond the retry cap:
            // a hint of years (or 2^64 s) must not silence a key.
            let pause = retry_after.map_or(settings.rate_limit_pause, |d| d.min(settings.retry_max));
            let configured = per_second(settings.rate);
            idx.keys
                .entry(w.key.clone())
                .or_default()
                .rate_limited(now, later(now, pause), configured);
            record.last_error = Some("429 Too Many Requests".to_owned());
            tracing::warn!(action = %record.action, routing_key, dedup_key, status,
                pause_secs = pause.as_secs(), "PagerDuty rate-limited the event; pausing this routing key");
            retry_at(&mut idx, &mut record, pause, &mut change);
        }
        Outcome::ServerError { .. } | Outcome::Unreachable { .. } if !expired => {
            let key = idx.keys.entry(w.key.clone()).or_default();
            // Only the failure that starts an outage backs off; probes of a
            // failing key are paced by the key (see the module docs).
            let delay = if key.failed(now, settings.retry_initial) {
                backoff(
                    record.attempts,
                    settings.retry_initial,
                    settings.retry_max,
                    jitter(),
                )
            } else {
                Duration::ZERO
            };
            record.last_error = Some(match &outcome {
                Outcome::ServerError { detail, .. } => format!("{status}: {detail}"),
                Outcome::Unreachable { reason } => reason.clone(),
                _ => String::new(),
            });
            tracing::warn!(action = %record.action, routing_key, dedup_key, status,
                error = record.last_error.as_deref().unwrap_or_default(), attempts = record.attempts,
                retry_in_ms = delay.as_millis() as u64, "PagerDuty delivery failed; will retry");
            retry_at(&mut idx, &mut record, delay, &mut change);
        }
        _ => {
            let error = match &outcome {
                Outcome::Rejected { errors, .. } => errors.join("; "),
                Outcome::ServerError { detail, .. } => {
                    format!(
                        "gave up after {} attempts over {age:?}: {status}: {detail}",
                        record.attempts
                    )
                }
                Outcome::Unreachable { reason } => {
                    format!(
                        "gave up after {} attempts over {age:?}: {reason}",
                        record.attempts
                    )
                }
                Outcome::RateLimited { .. } => {
                    format!(
                        "gave up after {} attempts over {age:?}: still rate-limited (429)",
                        record.attempts
                    )
                }
                Outcome::Accepted { .. } => String::new(),
            };
            if let Some(k) = idx.keys.get_mut(&w.key) {
                k.probing = false;
            }
            idx.remove(record.id);
            record.last_error = Some(error.clone());
            record.dead_ms = Some(now_ms());
            change.dead_put.push(record.clone());
            change.counters.dead_lettered += 1;
            change.durable = true;
            if w.action == EventAction::Trigger
                && let Some(open) = idx.open.get_mut(&w.alert).filter(|o| !o.delivered)
            {
                open.row_dead = true;
                let open = *open;
                change.open_put.push(open_row(&w.key, &w.dedup_key, open));
            }
            idx.counters.dead_lettered += 1;
            tracing::error!(action = %record.action, routing_key, dedup_key, status, errors = %error,
                id = record.id, "PagerDuty rejected the event; moved to the dead letters");
        }
    }
    drop(idx);
    spool.submit(change);
    spool.inner.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for attempt in 1..40 {
            for j in [0.0, 0.5, 1.0] {
                let d = backoff(attempt, initial, max, j);
                let full = initial.saturating_mul(1 << (attempt - 1).min(30)).min(max);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} vs {full:?}");
            }
        }
        assert_eq!(backoff(1, initial, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, initial, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, initial, max, 1.0), max);
    }

    #[test]
    fn window_quota_leaves_room_for_one_delayed_send() {
        // Burst b at once, then one per period: the busiest window holds
        // b + per/period - 1 sends on schedule, which must be at most n - 1.
        for (n, burst) in [(120, 10), (120, 1), (120, 120), (5, 3), (1, 1)] {
            let q = window_quota(n, Duration::from_secs(60), burst);
            let period = q.replenish_interval();
            let b = q.burst_size().get();
            let in_window =
                u128::from(b) + Duration::from_secs(60).as_nanos().div_ceil(period.as_nanos()) - 1;
            let target = u128::from(n.saturating_sub(1).max(1));
            assert!(
                in_window <= target,
                "n={n} burst={burst}: {in_window} on schedule"
            );
        }
    }
}
