//! The memory webhook bodies may take at once (`--body-memory`).
//!
//! Without it, what the bridge holds for bodies is bounded only by
//! `--max-connections` × `--max-body` (1 GiB by default), so a burst of
//! large payloads could get a sidecar with a memory limit killed, and every
//! event in flight with it. A body reserves what it will cost before it is
//! read; one that does not fit waits, in arrival order, while its bytes stay
//! in the kernel's socket buffer. Reserving the whole size at once (not chunk by
//! chunk) means no two bodies can each hold half of what both need.
//!
//! A body costs more than its bytes while it is in hand: the JSON tree it
//! is parsed into, the translated event and its encoding. Thirty-two
//! webhooks of 495 KB at once took about 60 MiB above the bridge's own
//! (1.9 MB each), so a body reserves [`COST_PER_BYTE`] times its size.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of memory a body in hand takes per byte of it, at its peak.
pub(crate) const COST_PER_BYTE: usize = 4;

/// Bytes of body memory, shared by every request.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes reserved for one body; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reserved(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Waits until what a body of `bytes` costs (at most the whole budget)
    /// is free, and takes it; `waited` runs first if it is not free now.
    pub(crate) async fn reserve(&self, bytes: usize, waited: impl FnOnce()) -> Reserved {
        let cost = bytes.saturating_mul(COST_PER_BYTE);
        let n = u32::try_from(cost.clamp(1, self.total)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.bytes.clone().try_acquire_many_owned(n) {
            return Reserved(Some(permit));
        }
        waited();
        // The semaphore is never closed, so this is always a permit.
        Reserved(self.bytes.clone().acquire_many_owned(n).await.ok())
    }

    /// Bytes free now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Reserved {
    /// Gives back what a body of `bytes` turned out not to need.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.0 {
            let cost = bytes.saturating_mul(COST_PER_BYTE);
            let extra = permit.num_permits().saturating_sub(cost.max(1));
            drop(permit.split(extra));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_body_that_does_not_fit_waits_until_one_is_done() {
        let budget = BodyBudget::new(1000);
        let waits = std::cell::Cell::new(0);
        let first = budget.reserve(150, || waits.set(waits.get() + 1)).await;
        assert_eq!(budget.available(), 1000 - 150 * COST_PER_BYTE);
        assert_eq!(waits.get(), 0);
        let second = tokio::time::timeout(
            Duration::from_millis(50),
            budget.reserve(150, || waits.set(waits.get() + 1)),
        )
        .await;
        assert!(second.is_err(), "two bodies of 150 bytes fit in 1000");
        assert_eq!(waits.get(), 1);
        drop(first);
        let second = tokio::time::timeout(Duration::from_millis(500), budget.reserve(150, || {})).await;
        assert!(second.is_ok());
    }

    #[tokio::test]
    async fn what_a_body_did_not_need_is_given_back_at_once() {
        let budget = BodyBudget::new(1000);
        let mut r = budget.reserve(1000, || {}).await;
        assert_eq!(budget.available(), 0);
        r.shrink_to(100);
        assert_eq!(budget.available(), 1000 - 100 * COST_PER_BYTE);
        drop(r);
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_takes_the_whole_budget() {
        let budget = BodyBudget::new(1000);
        let r = budget.reserve(5000, || {}).await;
        assert_eq!(budget.available(), 0);
        drop(r);
        assert_eq!(budget.available(), 1000);
    }
}
