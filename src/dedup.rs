//! Idempotency on Prefect event ids: a bounded set of recently accepted
//! (action, event id) pairs.
//!
//! `send-notification` resends the same body four times within 0.3 s on any
//! non-2xx (FACTS §9), and Prefect 1 retries on a non-200; the event id is the
//! same each time (a flow-run event's id is its state id), so a repeat is
//! answered `200 {"status":"duplicate"}` and sends nothing.
//!
//! Why not a general cache such as moka: measured in the load benchmark, a
//! moka entry cost about 270 bytes, so the default 100,000 pairs took ~27 MB,
//! most of the memory budget. Here a pair is a 16-byte digest and an 8-byte
//! time in one of two hash maps (generations): about 30 bytes each.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The recently-seen set.
#[derive(Debug)]
pub struct Seen {
    ttl: Duration,
    /// Most pairs per generation: two generations hold at most the capacity.
    per_generation: usize,
    generations: Mutex<Generations>,
}

#[derive(Debug)]
struct Generations {
    /// When `current` was started; ages are milliseconds since then.
    started: Instant,
    current: HashMap<[u64; 2], u64>,
    /// The generation before, started `ttl` or less before `current`.
    previous: HashMap<[u64; 2], u64>,
    previous_started: Instant,
}

/// A 128-bit digest of (action, event id); collisions are out of reach for
/// anyone choosing ids.
fn digest(action: &str, event_id: &str) -> [u64; 2] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(action.as_bytes());
    ctx.update(&[0]);
    ctx.update(event_id.as_bytes());
    let d = ctx.finish();
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_ref()[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    [word(0), word(1)]
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Generations {
    /// When the pair was claimed, if it is remembered.
    fn claimed_at(&self, k: &[u64; 2]) -> Option<Instant> {
        let at = |start: Instant, ms: u64| start.checked_add(Duration::from_millis(ms)).unwrap_or(start);
        self.current
            .get(k)
            .map(|ms| at(self.started, *ms))
            .or_else(|| self.previous.get(k).map(|ms| at(self.previous_started, *ms)))
    }
}

impl Seen {
    /// A set holding up to `capacity` pairs for `ttl` each; past the
    /// capacity the oldest are forgotten first.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let now = Instant::now();
        Self {
            ttl,
            per_generation: usize::try_from(capacity / 2).unwrap_or(usize::MAX).max(1),
            generations: Mutex::new(Generations {
                started: now,
                current: HashMap::new(),
                previous: HashMap::new(),
                previous_started: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps are consistent between statements; poisoning is ignored.
        self.generations.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the pair; returns false when it was claimed within the TTL.
    /// Claiming is atomic, so of two identical concurrent requests one wins.
    pub fn claim(&self, action: &str, event_id: &str) -> bool {
        let k = digest(action, event_id);
        let now = Instant::now();
        let mut g = self.lock();
        // A generation lasts at most the TTL (so the previous one holds
        // nothing that anything current needs beyond it) or half the capacity.
        if now.duration_since(g.started) >= self.ttl || g.current.len() >= self.per_generation {
            g.previous = std::mem::take(&mut g.current);
            g.previous_started = g.started;
            g.started = now;
        }
        if g.claimed_at(&k)
            .is_some_and(|at| now.duration_since(at) < self.ttl)
        {
            return false;
        }
        let ms = millis(now.duration_since(g.started));
        g.current.insert(k, ms);
        true
    }

    /// Gives a claim back (the event could not be accepted after all).
    pub fn release(&self, action: &str, event_id: &str) {
        let k = digest(action, event_id);
        let mut g = self.lock();
        g.current.remove(&k);
        g.previous.remove(&k);
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

    #[test]
    fn a_claim_is_remembered_across_one_rotation() {
        // Two per generation: the third claim starts a new generation.
        let seen = Seen::new(Duration::from_secs(60), 4);
        assert!(seen.claim("a", "e1"));
        assert!(seen.claim("a", "e2"));
        assert!(seen.claim("a", "e3"));
        assert!(!seen.claim("a", "e1"), "e1 is in the previous generation");
        assert!(seen.claim("a", "e4"));
        assert!(seen.claim("a", "e5"));
        // e1 and e2 are two generations old now: past the capacity.
        assert!(seen.claim("a", "e1"));
        assert!(!seen.claim("a", "e5"));
    }

    #[test]
    fn concurrent_claims_of_one_pair_have_one_winner() {
        let seen = std::sync::Arc::new(Seen::new(Duration::from_secs(60), 100_000));
        let wins: usize = (0..8)
            .map(|_| {
                let seen = seen.clone();
                std::thread::spawn(move || (0..1000).filter(|i| seen.claim("a", &format!("e{i}"))).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .sum();
        assert_eq!(wins, 1000);
    }
}
