//! Idempotency on Prefect event ids: the recently accepted (action, event
//! id) pairs.
//!
//! `send-notification` resends the same body four times within 0.3 s on any
//! non-2xx, and Prefect 1 retries on a non-200 (docs/prefect.md); the event
//! id is the same each time (a flow-run event's id is its state id), so a
//! repeat is answered `200 {"status":"duplicate"}` and sends nothing.
//!
//! The set lives with the spool's index and is only touched by the spool's
//! writer thread, which decides a repeat in the same order as everything
//! else; each claim is also written to the spool, so a repeat after a
//! restart is still a repeat.
//!
//! Why not a general cache such as moka: measured in the load benchmark, a
//! moka entry cost about 270 bytes, so the default 100,000 pairs took ~27 MB,
//! most of the memory budget. Here a pair is a 16-byte digest and an 8-byte
//! time in one of two hash maps (generations): about 30 bytes each.

use std::collections::HashMap;
use std::time::Duration;

/// How long and how many pairs are remembered.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a claim holds.
    pub ttl: Duration,
    /// Most pairs remembered; past it the oldest are forgotten first.
    pub capacity: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            capacity: 100_000,
        }
    }
}

impl Limits {
    /// The TTL in milliseconds.
    pub fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The capacity as a count.
    pub fn capacity(&self) -> usize {
        usize::try_from(self.capacity).unwrap_or(usize::MAX).max(2)
    }
}

/// The recently-seen set. Times are unix milliseconds.
#[derive(Debug, Default)]
pub struct Seen {
    ttl_ms: u64,
    /// Most pairs per generation: two generations hold at most the capacity.
    per_generation: usize,
    current: HashMap<u128, u64>,
    current_started: u64,
    /// The generation before.
    previous: HashMap<u128, u64>,
    previous_started: u64,
}

/// A 128-bit digest of (action, event id); stable across restarts (it is
/// stored), and collisions are out of reach for anyone choosing ids.
pub fn digest(action: &str, event_id: &str) -> u128 {
    crate::digest::sha256_128(&[action.as_bytes(), event_id.as_bytes()])
}

impl Seen {
    /// An empty set.
    pub fn new(limits: Limits) -> Self {
        Self {
            ttl_ms: limits.ttl_ms(),
            per_generation: limits.capacity() / 2,
            ..Self::default()
        }
    }

    /// Whether the pair was claimed within the TTL before `now`.
    pub fn contains(&self, k: u128, now: u64) -> bool {
        self.current
            .get(&k)
            .or_else(|| self.previous.get(&k))
            .is_some_and(|at| now.saturating_sub(*at) < self.ttl_ms)
    }

    /// Records a claim made at `at` (claims arrive in time order).
    pub fn insert(&mut self, k: u128, at: u64) {
        // A generation lasts at most the TTL (so the previous one holds
        // nothing that anything current needs beyond it) or half the capacity.
        if at.saturating_sub(self.current_started) >= self.ttl_ms || self.current.len() >= self.per_generation
        {
            self.previous = std::mem::take(&mut self.current);
            self.previous_started = self.current_started;
            self.current_started = at;
        }
        self.current.insert(k, at);
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.previous.is_empty()
    }

    /// Takes a claim back (its commit failed).
    pub fn remove(&mut self, k: u128) {
        self.current.remove(&k);
        self.previous.remove(&k);
    }

    /// The time before which nothing is remembered any more at `now`:
    /// stored claims older than it can be deleted.
    pub fn forget_before(&self, now: u64) -> u64 {
        let by_age = now.saturating_sub(self.ttl_ms);
        if self.previous.is_empty() {
            by_age
        } else {
            by_age.max(self.previous_started)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ttl_ms: u64, capacity: u64) -> Seen {
        Seen::new(Limits {
            ttl: Duration::from_millis(ttl_ms),
            capacity,
        })
    }

    #[test]
    fn a_pair_is_claimed_once_per_action_until_removed() {
        let mut s = seen(60_000, 100);
        let (a, b) = (digest("a", "e1"), digest("b", "e1"));
        assert_ne!(a, b, "another action is another pair");
        s.insert(a, 1_000);
        assert!(s.contains(a, 1_001));
        assert!(!s.contains(b, 1_001));
        s.remove(a);
        assert!(!s.contains(a, 1_002));
    }

    #[test]
    fn claims_expire() {
        let mut s = seen(50, 100);
        s.insert(digest("a", "e1"), 1_000);
        assert!(s.contains(digest("a", "e1"), 1_049));
        assert!(!s.contains(digest("a", "e1"), 1_050));
    }

    #[test]
    fn a_claim_is_remembered_across_one_rotation() {
        // Two per generation: the third claim starts a new generation.
        let mut s = seen(60_000, 4);
        let d = |i: u32| digest("a", &format!("e{i}"));
        for i in 1..=3 {
            s.insert(d(i), 1_000 + u64::from(i));
        }
        assert!(s.contains(d(1), 1_010), "e1 is in the previous generation");
        s.insert(d(4), 1_011);
        s.insert(d(5), 1_012);
        // e1 and e2 are two generations old now: past the capacity.
        assert!(!s.contains(d(1), 1_013));
        assert!(s.contains(d(5), 1_013));
        assert_eq!(
            s.forget_before(1_013),
            1_003,
            "before the previous generation began"
        );
    }

    #[test]
    fn digests_are_stable() {
        // Stored in the spool: must not change between versions. The first
        // 16 bytes of SHA-256("oncall\0id"), little-endian.
        assert_eq!(
            format!("{:032x}", digest("oncall", "id")),
            "a87807b0affe601bdcce826fc86040b6"
        );
    }
}
