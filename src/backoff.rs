//! The wait between tries of one request, shared by delivery to PagerDuty
//! and the client of Prefect's API: exponential, capped, with jitter so
//! that many waiters do not wake together.

use std::time::Duration;

/// Delay before retry number `attempt` (1-based): `initial · 2^(attempt-1)`,
/// capped at `max`, with jitter in `[0, 1]` keeping it within `[d/2, d]`.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
    let d = exp.min(max);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in `[0, 1)` that differs from call to call (std's hasher
/// keys are random per process and per call), to spread retries.
pub(crate) fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (RandomState::new().hash_one(now) % 10_000) as f64 / 10_000.0
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
    fn jitter_stays_in_its_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        assert!(draws.iter().any(|j| *j != draws[0]), "{draws:?}");
    }
}
