//! What to do after a send, for any sink: each sink classifies its answer
//! as a [`Delivery`]; this decides, once for all of them, whether the event
//! is done, waits and goes again, or becomes a dead letter. Per PagerDuty's
//! retry guidance (docs/pagerduty.md §2), which any HTTP sink shares:
//! - delivered: done;
//! - throttled: pause the routing key for the sink's `Retry-After` (never
//!   beyond `retry_max`: a hint of years must not silence a key), else
//!   `rate_limit_pause`, and lower its pace;
//! - failed (5xx, no answer): the key is failing; the failure that starts
//!   an outage backs off exponentially, later probes are paced by the key;
//! - rejected, or an event `max_event_age` old: a dead letter.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::backoff;

use super::Settings;
use super::pacing::{KeyState, later};
use crate::sink::Delivery;

/// What becomes of an event after one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The sink took it.
    Done {
        /// The key was failing until now: its waiting events are due.
        recovered: bool,
    },
    /// Send it again after this long.
    Retry {
        /// The wait.
        after: Duration,
        /// What to record as its last error.
        error: String,
        /// Whether the sink asked to slow down (for the log).
        throttled: bool,
    },
    /// Give up: a dead letter with this error.
    GiveUp {
        /// What to record.
        error: String,
    },
}

/// A configured rate in events per second.
pub(crate) fn per_second((n, per): (u32, Duration)) -> f64 {
    f64::from(n) / per.as_secs_f64().max(1e-9)
}

/// Decides what follows `outcome` for an event on its `attempts`-th send,
/// `age` after it was accepted, and updates its routing key's state.
pub(crate) fn after_send(
    outcome: &Delivery,
    attempts: u32,
    age: Duration,
    key: &mut KeyState,
    settings: &Settings,
    now: Instant,
    jitter: f64,
) -> Step {
    let configured = per_second(settings.rate);
    let expired = age >= settings.max_event_age;
    let gave_up = |why: &str| format!("gave up after {attempts} attempts over {age:?}: {why}");
    match outcome {
        Delivery::Delivered { .. } => Step::Done {
            recovered: key.succeeded(now, configured),
        },
        Delivery::Throttled { retry_after, status } if !expired => {
            let pause = retry_after.map_or(settings.rate_limit_pause, |d| d.min(settings.retry_max));
            key.rate_limited(now, later(now, pause), configured);
            Step::Retry {
                after: pause,
                error: format!("{status} Too Many Requests"),
                throttled: true,
            }
        }
        Delivery::Failed { detail, .. } if !expired => {
            // Only the failure that starts an outage backs off; probes of a
            // failing key are paced by the key.
            let after = if key.failed(now, settings.retry_initial) {
                backoff(attempts, settings.retry_initial, settings.retry_max, jitter)
            } else {
                Duration::ZERO
            };
            Step::Retry {
                after,
                error: detail.clone(),
                throttled: false,
            }
        }
        Delivery::Throttled { .. } => {
            key.end_probe();
            Step::GiveUp {
                error: gave_up("still rate-limited (429)"),
            }
        }
        Delivery::Failed { detail, .. } => {
            key.end_probe();
            Step::GiveUp {
                error: gave_up(detail),
            }
        }
        Delivery::Rejected { errors, .. } => {
            key.end_probe();
            Step::GiveUp {
                error: errors.join("; "),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn an_outage_backs_off_once_then_probes_and_recovers() {
        let s = settings();
        let mut key = KeyState::default();
        let now = Instant::now();
        let failed = Delivery::Failed {
            status: 503,
            detail: "503: down".into(),
        };
        let first = after_send(&failed, 3, Duration::ZERO, &mut key, &s, now, 1.0);
        assert_eq!(
            first,
            Step::Retry {
                after: Duration::from_secs(4),
                error: "503: down".into(),
                throttled: false
            }
        );
        assert!(key.is_failing());
        // While failing, one probe per retry_initial; its failure waits no more.
        assert_eq!(key.gate(now, s.rate), Err(later(now, s.retry_initial)));
        let probe = after_send(
            &failed,
            1,
            Duration::ZERO,
            &mut key,
            &s,
            now + s.retry_initial,
            1.0,
        );
        assert!(matches!(probe, Step::Retry { after, .. } if after.is_zero()));
        let ok = after_send(
            &Delivery::Delivered { status: 202 },
            1,
            Duration::ZERO,
            &mut key,
            &s,
            now + s.retry_initial * 2,
            1.0,
        );
        assert_eq!(ok, Step::Done { recovered: true });
        assert!(!key.is_failing());
    }

    #[test]
    fn a_429_pauses_the_key_for_the_hint_clamped_to_the_retry_cap() {
        let s = settings();
        let now = Instant::now();
        for (hint, pause) in [
            (None, s.rate_limit_pause),
            (Some(Duration::from_secs(7)), Duration::from_secs(7)),
            (Some(Duration::from_secs(u64::MAX / 4)), s.retry_max),
        ] {
            let mut key = KeyState::default();
            let step = after_send(
                &Delivery::Throttled {
                    status: 429,
                    retry_after: hint,
                },
                1,
                Duration::ZERO,
                &mut key,
                &s,
                now,
                0.5,
            );
            assert!(
                matches!(step, Step::Retry { after, throttled: true, .. } if after == pause),
                "{hint:?}"
            );
            assert!(key.is_paused(now));
        }
    }

    #[test]
    fn rejections_and_old_events_become_dead_letters() {
        let s = settings();
        let now = Instant::now();
        let mut key = KeyState::default();
        let rejected = Delivery::Rejected {
            status: 400,
            errors: vec!["Event object is invalid".into(), "bad".into()],
        };
        assert_eq!(
            after_send(&rejected, 1, Duration::ZERO, &mut key, &s, now, 0.5),
            Step::GiveUp {
                error: "Event object is invalid; bad".into()
            }
        );
        let failed = Delivery::Failed {
            status: 0,
            detail: "could not connect".into(),
        };
        let old = after_send(&failed, 9, s.max_event_age, &mut key, &s, now, 0.5);
        assert!(
            matches!(&old, Step::GiveUp { error } if error.contains("gave up after 9 attempts")),
            "{old:?}"
        );
    }
}
