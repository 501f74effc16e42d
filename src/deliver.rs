//! The in-process delivery queue and the workers that send to PagerDuty.
//!
//! Events are spread over `lanes` by dedup key, one worker per lane, so there
//! are at most `lanes` requests in flight and the events of one dedup key go
//! out in the order accepted: a resolve never overtakes its trigger.
//! Retries and persistence are not here yet: an event that fails is logged.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::pagerduty::Event;
use crate::pagerduty::client::{Client, Outcome};

/// One event waiting to be sent.
#[derive(Debug, Clone)]
pub struct Job {
    /// The action it was accepted on, for logs.
    pub action: String,
    /// The event.
    pub event: Event,
}

/// The queue is full; the intake answers 503 so the sender knows.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the delivery queue is full")]
pub struct QueueFull;

/// Where events go: PagerDuty, or the log in a dry run.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Send to PagerDuty.
    PagerDuty(Client),
    /// Log the event instead.
    DryRun,
}

/// The sending side of the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    lanes: Arc<Vec<mpsc::Sender<Job>>>,
    depth: Arc<AtomicUsize>,
}

/// Starts `lanes` workers; returns the queue and the workers, which finish
/// once every clone of the queue is dropped and the queue is drained.
pub fn start(sink: Sink, lanes: usize, capacity: usize) -> (Queue, JoinSet<()>) {
    let lanes = lanes.max(1);
    let per_lane = capacity.div_ceil(lanes).max(1);
    let depth = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel(per_lane);
        senders.push(tx);
        workers.spawn(work(rx, sink.clone(), depth.clone()));
    }
    (
        Queue {
            lanes: Arc::new(senders),
            depth,
        },
        workers,
    )
}

impl Queue {
    /// Queues a job on the lane of its dedup key.
    ///
    /// # Errors
    /// When that lane is full.
    pub fn enqueue(&self, job: Job) -> Result<(), QueueFull> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        job.event.dedup_key.hash(&mut h);
        let lane = (h.finish() % self.lanes.len() as u64) as usize;
        self.lanes[lane].try_send(job).map_err(|_| QueueFull)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Events accepted but not yet sent.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

async fn work(mut rx: mpsc::Receiver<Job>, sink: Sink, depth: Arc<AtomicUsize>) {
    while let Some(job) = rx.recv().await {
        deliver(&sink, &job).await;
        depth.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn deliver(sink: &Sink, job: &Job) {
    let e = &job.event;
    let dedup_key = e.dedup_key.as_deref().unwrap_or_default();
    let client = match sink {
        Sink::DryRun => {
            tracing::info!(
                action = %job.action, dedup_key, event_action = %e.event_action,
                event = %e.to_redacted_json(), "dry run: would send to PagerDuty"
            );
            return;
        }
        Sink::PagerDuty(client) => client,
    };
    let outcome = client.send(e).await;
    let status = outcome.status();
    let routing_key = e.routing_key.redacted();
    match &outcome {
        Outcome::Accepted { .. } => tracing::info!(
            action = %job.action, routing_key, dedup_key, event_action = %e.event_action, status,
            "delivered to PagerDuty"
        ),
        Outcome::Rejected { errors, .. } => tracing::error!(
            action = %job.action, routing_key, dedup_key, event_action = %e.event_action, status,
            errors = %errors.join("; "), "PagerDuty rejected the event"
        ),
        Outcome::RateLimited { retry_after } => tracing::warn!(
            action = %job.action, routing_key, dedup_key, event_action = %e.event_action, status,
            retry_after_secs = retry_after.map(|d| d.as_secs()), "PagerDuty rate-limited the event"
        ),
        Outcome::ServerError { detail, .. } => tracing::warn!(
            action = %job.action, routing_key, dedup_key, event_action = %e.event_action, status,
            detail, "PagerDuty answered with a server error"
        ),
        Outcome::Unreachable { reason } => tracing::warn!(
            action = %job.action, routing_key, dedup_key, event_action = %e.event_action,
            reason, "PagerDuty could not be reached"
        ),
    }
}
