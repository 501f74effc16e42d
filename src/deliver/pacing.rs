//! Pacing per routing key: a token bucket at the configured rate that
//! spreads sends out, a log of recent sends that keeps PagerDuty's
//! lookback window at the configured count exactly, and what each key has
//! learned from its answers (a 429 pause and a lowered pace, an outage
//! probed by one send at a time).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use tokio::time::Instant;

/// A quota that lets no window of `per` hold more than `n` events, with up
/// to `burst` of them at once. GCRA allows `b` at once and then one per
/// period, so a window can hold `b + per/period - 1` sends on schedule.
/// Aiming that at `n - 1` (`period = per / (n - b)`, `b < n`) leaves room for
/// one send that the network delays into the next window, so what PagerDuty
/// sees over its 60 s lookback stays within `n`.
pub(crate) fn window_quota(n: u32, per: Duration, burst: u32) -> Quota {
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

/// A quota of exactly `n` events per `per`, up to `burst` of them at once:
/// it spreads a key's sends out; the exact cap on PagerDuty's window is
/// [`KeyState`]'s log of sends, which this alone could not give (GCRA lets
/// a window hold `burst - 1` more than `n`).
pub(crate) fn pace_quota(n: u32, per: Duration, burst: u32) -> Quota {
    let n = n.max(1);
    let nanos = per.as_nanos().div_ceil(u128::from(n));
    let period = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    let b = NonZeroU32::new(burst.clamp(1, n)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(b)
}

/// Largest rate count whose sends are logged one by one (8 bytes each, per
/// key); above it only the token bucket paces, as PagerDuty's own limit is
/// far below it.
const WINDOW_LOG_MAX: u32 = 10_000;

/// `now + d`, or a day from now if that does not fit in an `Instant`.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Lowest pace a 429 can set a routing key to, events per second.
const MIN_ADAPTIVE_RATE: f64 = 0.1;

/// What the dispatcher knows about one routing key beyond its rate limit.
#[derive(Debug, Default)]
pub(crate) struct KeyState {
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
    /// Sends started and not yet answered.
    in_flight: u32,
    /// When each answered send leaves PagerDuty's lookback window, oldest
    /// first: its answer time plus the window. PagerDuty counted the call
    /// at some moment between its start and its answer, so a send started
    /// after this time cannot share a window with it, however the network
    /// delayed either; fewer than `n` of these plus the sends in flight
    /// means one more fits.
    window: std::collections::VecDeque<Instant>,
}

impl KeyState {
    /// Whether its sends fail (an outage being probed).
    pub(crate) fn is_failing(&self) -> bool {
        self.failing
    }

    /// A probe ended without an answer (its event was gone, or could not
    /// be read): another may go.
    pub(crate) fn end_probe(&mut self) {
        self.probing = false;
    }

    /// Whether a 429 pause holds at `now`.
    pub(crate) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    /// Whether a send may go now under a rate of `n` per `per`; when not,
    /// until when it waits.
    pub(crate) fn gate(&self, now: Instant, (n, per): (u32, Duration)) -> Result<(), Instant> {
        if let Some(t) = self.paused_until.filter(|t| *t > now) {
            return Err(t);
        }
        if n <= WINDOW_LOG_MAX {
            let left = self.window.partition_point(|t| *t <= now);
            let counted = self.window.len() - left + self.in_flight as usize;
            if counted >= n as usize {
                // Full of sends in flight: their answers wake the dispatcher.
                return Err(self.window.get(left).copied().unwrap_or_else(|| later(now, per)));
            }
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
    pub(crate) fn started(&mut self, now: Instant) {
        self.in_flight += 1;
        if self.failing {
            self.probing = true;
        }
        if let Some(rate) = self.adaptive_rate {
            let gap = Duration::from_secs_f64(1.0 / rate);
            self.next_send = Some(later(self.next_send.map_or(now, |t| t.max(now)), gap));
        }
    }

    /// A send ended with an answer (any status) or a network error at
    /// `now`: it counts in PagerDuty's window until `now + per`.
    pub(crate) fn ended(&mut self, now: Instant, per: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        while self.window.front().is_some_and(|t| *t <= now) {
            self.window.pop_front();
        }
        if self.window.len() < WINDOW_LOG_MAX as usize {
            self.window.push_back(later(now, per));
        }
    }

    /// A selected send never went out (its event was gone).
    pub(crate) fn unsent(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// PagerDuty took an event: the key is healthy, its pace may rise.
    /// Returns whether it was failing until now.
    pub(crate) fn succeeded(&mut self, now: Instant, configured_per_sec: f64) -> bool {
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
    pub(crate) fn failed(&mut self, now: Instant, probe_every: Duration) -> bool {
        let first = !self.failing;
        self.failing = true;
        self.probing = false;
        self.next_probe = Some(later(now, probe_every));
        first
    }

    /// A 429: pause the key until `until` (sends already in flight may bring
    /// more 429s: the latest end holds), and pace it at 85% of what
    /// PagerDuty took over the last second, or at half the pace it had.
    pub(crate) fn rate_limited(&mut self, now: Instant, until: Instant, configured_per_sec: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_exactly_n_sends_counted_to_their_answers() {
        let per = Duration::from_secs(60);
        let rate = (3, per);
        let t0 = Instant::now();
        let mut k = KeyState::default();
        for _ in 0..3 {
            assert!(k.gate(t0, rate).is_ok());
            k.started(t0);
        }
        // Three in flight: none more, whatever the time.
        assert!(k.gate(t0 + Duration::from_secs(600), rate).is_err());
        let answered = t0 + Duration::from_millis(40);
        k.ended(answered, per);
        assert_eq!(k.gate(answered, rate), Err(answered + per));
        assert_eq!(
            k.gate(answered + per - Duration::from_nanos(1), rate),
            Err(answered + per)
        );
        assert!(k.gate(answered + per, rate).is_ok());
        // A send that never went out frees its place at once.
        k.unsent();
        assert!(k.gate(answered, rate).is_ok());
        k.started(answered);
        assert!(k.gate(answered, rate).is_err());
    }

    #[test]
    fn pace_quota_is_the_configured_rate() {
        let q = pace_quota(120, Duration::from_secs(60), 10);
        assert_eq!(q.replenish_interval(), Duration::from_millis(500));
        assert_eq!(q.burst_size().get(), 10);
        assert_eq!(
            pace_quota(120, Duration::from_secs(60), 500).burst_size().get(),
            120
        );
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
