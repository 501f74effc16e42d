//! Idempotency on Prefect event ids: a bounded cache of recently accepted
//! (action, event id) pairs.
//!
//! `send-notification` resends the same body four times within 0.3 s on any
//! non-2xx (FACTS §9), and Prefect 1 retries on a non-200; the event id is the
//! same each time (a flow-run event's id is its state id), so a repeat is
//! answered `200 {"status":"duplicate"}` and sends nothing.

use std::time::Duration;

use moka::sync::Cache;

/// The recently-seen cache.
#[derive(Debug, Clone)]
pub struct Seen {
    cache: Cache<(String, String), ()>,
}

impl Seen {
    /// A cache holding up to `capacity` pairs for `ttl` each.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
        }
    }

    /// Claims the pair; returns false when it was seen within the TTL.
    /// Claiming is atomic, so of two identical concurrent requests one wins.
    pub fn claim(&self, action: &str, event_id: &str) -> bool {
        self.cache
            .entry((action.to_owned(), event_id.to_owned()))
            .or_insert(())
            .is_fresh()
    }

    /// Gives a claim back (the event could not be accepted after all).
    pub fn release(&self, action: &str, event_id: &str) {
        self.cache.invalidate(&(action.to_owned(), event_id.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_claimed_once_per_action_until_released() {
        let seen = Seen::new(Duration::from_secs(60), 100);
        assert!(seen.claim("a", "e1"));
        assert!(!seen.claim("a", "e1"));
        assert!(seen.claim("b", "e1"), "another action is another pair");
        seen.release("a", "e1");
        assert!(seen.claim("a", "e1"));
    }

    #[test]
    fn claims_expire() {
        let seen = Seen::new(Duration::from_millis(50), 100);
        assert!(seen.claim("a", "e1"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(seen.claim("a", "e1"));
    }
}
