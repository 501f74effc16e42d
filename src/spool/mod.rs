//! The durable outbox between the intake and delivery.
//!
//! [`Spool::accept`] hands a translated event to the one writer thread
//! ([`writer`]), which decides what it means for the alerts already open or
//! queued ([`crate::alerts`], applied by [`index`]), commits that decision
//! to the [`Store`] and only then lets the webhook be answered. A failed
//! commit is undone, whatever became of the request that asked for it.
//!
//! Delivery ([`crate::deliver`]) talks to the spool only through
//! [`Spool::take_due`] (what may be sent now, in accept order per alert)
//! and the settlements [`Spool::delivered`], [`Spool::retry_later`],
//! [`Spool::dead_letter`] and [`Spool::release`].

mod index;
pub(crate) mod offline;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::dedup::Seen;
use crate::metrics::Metrics;
use crate::pagerduty::EventAction;
use crate::store::redb::RedbStore;
use crate::store::{BodyKind, Change, Record, Store, StoredAction};
pub use crate::store::{Counters, Error};
use crate::translate::{Disposition, Translation};
pub(crate) use index::AlertId;
use index::{Index, open_row};

/// What became of an accepted webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Committed to the spool; it will be sent.
    Queued {
        /// Spool id.
        id: u64,
    },
    /// Nothing to send (a recovery with no open alert).
    Ignored {
        /// Why.
        reason: &'static str,
    },
    /// A resolve that cancelled its still-queued trigger: neither is sent.
    Superseded,
    /// The same (action, Prefect event id) was accepted within `--dedup-ttl`.
    Duplicate,
}

/// Why an event could not be accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    /// Too many undelivered events.
    #[error("the spool holds the maximum number of undelivered events (--queue-capacity)")]
    Full,
    /// The commit failed.
    #[error(transparent)]
    Storage(#[from] Error),
}

/// One webhook's event, as the writer needs it to decide.
#[derive(Debug)]
pub(crate) struct AcceptInput {
    /// The record to store (its id and times are set when it is decided).
    record: Record,
    disposition: Disposition,
    /// The body, made by the request (not the writer) for the send cache.
    wire: bytes::Bytes,
    /// The dedup key, shared with the index (made here too).
    dedup: Arc<str>,
    claim: Option<u128>,
}

/// What the writer thread and the request side share.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    index: Mutex<Index>,
    wake: Notify,
    /// Counts the writer's finished rounds (committed or undone), for a send
    /// that went out before its event's commit and must learn how it ended.
    rounds: tokio::sync::watch::Sender<u64>,
    /// Most undelivered events held; beyond it the intake answers 503.
    capacity: usize,
    /// Why the spool cannot commit right now; `None` when it can.
    unready: Mutex<Option<String>>,
    /// Where commit times are counted.
    metrics: Arc<Metrics>,
    /// Reconciliation's checkpoint (unix ms), as last committed.
    checkpoint: Mutex<Option<i64>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every critical section leaves the index consistent before it can
        // panic (no user code runs under the lock), so poisoning is ignored.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::Sender<writer::Job>,
}

/// The spool; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    inner: Arc<Inner>,
}

/// Spool figures for `/v1/spool` and `spool stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Undelivered events.
    pub queued: usize,
    /// Sends in flight.
    pub in_flight: usize,
    /// Alerts with an open trigger.
    pub open_alerts: usize,
    /// Dead letters.
    pub dead_letters: usize,
    /// Routing keys paused after a 429 (delivery fills it in).
    pub paused_keys: usize,
    /// Rows that no longer decoded, kept aside (see `spool check`).
    pub quarantined: usize,
    /// Why the spool cannot commit now (`null` while it can).
    pub unavailable: Option<String>,
    /// Lifetime counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// A dead letter as shown outside: routing key redacted.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Spool id (use it to retry or purge).
    pub id: u64,
    /// Action name.
    pub action: String,
    /// Last four characters of the routing key.
    pub routing_key: String,
    /// trigger / resolve / acknowledge.
    pub event_action: EventAction,
    /// Dedup key.
    pub dedup_key: String,
    /// The alert summary, for triggers.
    pub summary: Option<String>,
    /// Sends tried.
    pub attempts: u32,
    /// Status of the last attempt (0: no answer).
    pub last_status: Option<u16>,
    /// PagerDuty's error text (or the network error).
    pub error: Option<String>,
    /// When accepted, RFC 3339.
    pub accepted_at: String,
    /// When it became a dead letter, RFC 3339.
    pub dead_at: Option<String>,
}

/// `delay` from now; a delay too long for an `Instant` is a day.
fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// How long the spool remembers: Prefect event ids (idempotency), and open
/// alerts after their last trigger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Idempotency claims.
    pub(crate) seen: crate::dedup::Limits,
    /// `--open-alert-ttl`.
    pub(crate) open_alert_ttl: Duration,
}

/// The default of `--open-alert-ttl`.
pub(crate) const DEFAULT_OPEN_ALERT_TTL: Duration = Duration::from_secs(30 * 86_400);

impl Default for Retention {
    fn default() -> Self {
        Self {
            seen: crate::dedup::Limits::default(),
            open_alert_ttl: DEFAULT_OPEN_ALERT_TTL,
        }
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl DeadLetter {
    /// The outside view of a dead record.
    pub(crate) fn from_record(r: &Record) -> Self {
        Self {
            id: r.id,
            action: r.action.clone(),
            routing_key: crate::secret::redact(&r.routing_key),
            event_action: r.event_action,
            dedup_key: r.dedup_key.clone(),
            summary: r.summary(),
            attempts: r.attempts,
            last_status: r.last_status,
            error: r.last_error.clone(),
            accepted_at: rfc3339(r.accepted_ms),
            dead_at: r.dead_ms.map(rfc3339),
        }
    }
}

/// An event handed to delivery.
#[derive(Debug)]
pub(crate) struct Due {
    /// Spool id.
    pub(crate) id: u64,
    alert: AlertId,
    /// Routing key.
    pub(crate) key: Arc<str>,
    /// Dedup key.
    pub(crate) dedup_key: Arc<str>,
    /// trigger / acknowledge / resolve.
    pub(crate) action: EventAction,
    /// The action it came in on.
    pub(crate) action_name: Arc<str>,
    /// What the body is.
    pub(crate) kind: BodyKind,
    /// The body, when still in memory.
    pub(crate) wire: Option<bytes::Bytes>,
    /// Unix ms when accepted.
    pub(crate) accepted_ms: i64,
}

/// Whether delivery lets an event of a routing key go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send it.
    Go,
    /// Send it, and nothing else of its routing key this pass (a probe).
    GoAlone,
    /// Not this routing key until then; others may go.
    Wait(Instant),
    /// Nothing more at all until then.
    Stop(Instant),
}

/// Moves rows that no longer decode to the quarantine, logging each once.
fn set_aside(store: &dyn Store, damaged: &[crate::store::Damaged]) -> Result<(), Error> {
    if damaged.is_empty() {
        return Ok(());
    }
    for d in damaged {
        tracing::error!(table = %d.table, key = %crate::logging::escape(&d.key),
            error = %crate::logging::escape(&d.error), spool = %store.location(),
            "a spool row does not decode; it is kept in the quarantine (see `spool check`, `spool drop`)");
    }
    store.quarantine(damaged)
}

// === impl Spool ===

impl Spool {
    /// Opens the spool file (redb), rebuilds the index from it and starts its
    /// writer thread.
    ///
    /// # Errors
    /// When the file is in use by another bridge, or cannot be read.
    #[cfg(test)]
    pub(crate) fn open(path: &Path, capacity: usize) -> Result<Self, Error> {
        Self::open_file(path, capacity, Retention::default(), Metrics::shared())
    }

    /// As [`Spool::open`], remembering Prefect event ids within `seen`.
    ///
    /// # Errors
    /// As [`Spool::open`].
    pub(crate) fn open_file(
        path: &Path,
        capacity: usize,
        retention: Retention,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        Self::open_store(Arc::new(RedbStore::open(path)?), capacity, retention, metrics)
    }

    /// Opens the spool on `store`. Rows that no longer decode are moved to
    /// the quarantine and logged, once.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn open_store(
        store: Arc<dyn Store>,
        capacity: usize,
        retention: Retention,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let seen = retention.seen;
        let snap = store.resume(index::WINDOW, index::REFILL_BYTES)?;
        set_aside(&*store, &snap.damaged)?;
        let quarantined = store.quarantined_count()?;
        if quarantined > 0 && snap.damaged.is_empty() {
            tracing::warn!(
                quarantined,
                "the spool holds quarantined rows from an earlier start (see `spool check`)"
            );
        }
        let now_u = u64::try_from(now_ms()).unwrap_or(0);
        let mut claims = store.claims(now_u.saturating_sub(seen.ttl_ms()), seen.capacity())?;
        claims.reverse();
        let mut index = Index::new(
            snap.next_id,
            snap.counters,
            Seen::new(seen),
            retention.open_alert_ttl,
            snap.open_count,
        );
        for (at, claim) in claims {
            index.seen.insert(claim, at);
        }
        let now = Instant::now();
        for r in &snap.events {
            index.restore(r, now);
        }
        let damaged_queued = snap.damaged.iter().filter(|d| d.table == "events").count();
        index.set_rest(
            &snap.rest,
            snap.queued_count
                .saturating_sub(snap.events.len() + damaged_queued),
        );
        // Open alerts stay in the store until an event needs one; those past
        // --open-alert-ttl go in the writer's first round.
        if index.queued_len() > 0 {
            tracing::info!(
                queued = index.queued_len(),
                in_memory = index.queued.len(),
                open_alerts = index.open_count,
                "resuming undelivered events from the spool"
            );
        }
        let shared = Arc::new(Shared {
            store,
            index: Mutex::new(index),
            wake: Notify::new(),
            rounds: tokio::sync::watch::Sender::new(0),
            capacity,
            unready: Mutex::new(None),
            metrics,
            checkpoint: Mutex::new(snap.checkpoint),
        });
        let writer = writer::start(shared.clone())?;
        Ok(Self {
            inner: Arc::new(Inner { shared, writer }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.shared().lock()
    }

    /// Hands a job to the writer thread and waits for its answer. The job's
    /// outcome is applied by the writer whether or not anyone still waits.
    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> writer::Job) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner.writer.send(job(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Queues a change without waiting for it (delivery bookkeeping: a
    /// crash before it is durable only causes a resend).
    fn submit(&self, change: Change) {
        let _ = self.inner.writer.send(writer::Job::Write { change, reply: None });
    }

    /// Why the spool cannot take events now; `None` when it can.
    pub(crate) fn unready(&self) -> Option<String> {
        if let Some(reason) = self
            .shared()
            .unready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(reason);
        }
        (self.lock().queued_len() >= self.shared().capacity).then(|| AcceptError::Full.to_string())
    }

    /// Records the decision for one translated event and commits it.
    /// `event_id` is the Prefect event id: a repeat of it within
    /// `--dedup-ttl` is a [`Accepted::Duplicate`], answered only once the
    /// original is committed.
    ///
    /// # Errors
    /// When the spool is full or the commit fails; the webhook then gets 503
    /// and Prefect's log shows the failure.
    pub(crate) async fn accept(
        &self,
        action: &str,
        t: &Translation,
        event_id: Option<&str>,
    ) -> Result<Accepted, AcceptError> {
        // Encoded once, here: stored and sent as these bytes.
        let body = serde_json::value::to_raw_value(&t.event).map_err(crate::store::storage)?;
        let wire = bytes::Bytes::copy_from_slice(body.get().as_bytes());
        let record = Record {
            id: 0,
            action: action.to_owned(),
            routing_key: t.event.routing_key.expose().to_owned(),
            dedup_key: t.dedup_key.clone(),
            event_action: t.event.event_action,
            class: match t.disposition {
                Disposition::Trigger(c) => Some(c),
                _ => None,
            },
            accepted_ms: 0,
            attempts: 0,
            next_attempt_ms: 0,
            last_status: None,
            last_error: None,
            dead_ms: None,
            body_kind: BodyKind::PagerDutyEventsV2,
            body,
        };
        let input = AcceptInput {
            record,
            disposition: t.disposition,
            wire,
            dedup: Arc::from(t.dedup_key.as_str()),
            claim: event_id.map(|id| crate::dedup::digest(action, id)),
        };
        self.ask(|reply| writer::Job::Accept { input, reply }).await?
    }

    /// Current figures (`paused_keys` is delivery's to fill in).
    pub(crate) fn stats(&self) -> Stats {
        let store = &self.shared().store;
        let dead = store.dead_count().unwrap_or(0);
        let quarantined = store.quarantined_count().unwrap_or(0);
        let unavailable = self
            .shared()
            .unready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let idx = self.lock();
        Stats {
            queued: idx.queued_len(),
            in_flight: idx.in_flight,
            open_alerts: idx.open_count,
            dead_letters: dead,
            paused_keys: 0,
            quarantined,
            unavailable,
            counters: idx.counters,
        }
    }

    /// The gauges of `/metrics` the spool knows (`paused_keys` is delivery's).
    pub(crate) fn gauges(&self) -> crate::metrics::Snapshot {
        let store = &self.shared().store;
        let dead = store.dead_count().unwrap_or(0);
        let bytes = store.size_bytes();
        let ready = self.unready().is_none();
        let idx = self.lock();
        let oldest = idx.queued.values().next().map(|e| e.accepted_ms);
        let age_ms = oldest.map_or(0, |at| (now_ms() - at).max(0));
        crate::metrics::Snapshot {
            queued: idx.queued_len() as u64,
            oldest_queued_age: age_ms as f64 / 1000.0,
            open_alerts: idx.open_count as u64,
            dead_letters: dead as u64,
            paused_keys: 0,
            spool_bytes: bytes,
            ready,
        }
    }

    /// Every dead letter.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>, Error> {
        Ok(self
            .shared()
            .store
            .dead_letters()?
            .iter()
            .map(DeadLetter::from_record)
            .collect())
    }

    /// Puts a dead letter back in the queue, as a new event sent now.
    /// Returns its new id, or `None` when there is no such dead letter.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn retry_dead_letter(&self, id: u64) -> Result<Option<u64>, Error> {
        let Some(record) = self.shared().store.dead_letter(id)? else {
            return Ok(None);
        };
        self.ask(|reply| writer::Job::Requeue { record, reply })
            .await?
            .map(Some)
    }

    /// Actions created over the API.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) fn stored_actions(&self) -> Result<Vec<StoredAction>, Error> {
        self.shared().store.actions()
    }

    /// Commits `change` durably through the writer.
    async fn write(&self, change: Change) -> Result<(), Error> {
        self.ask(|reply| writer::Job::Write {
            change,
            reply: Some(reply),
        })
        .await?
    }

    /// Makes every commit so far durable (at shutdown).
    ///
    /// # Errors
    /// Storage errors.
    #[cfg(test)]
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        self.write(Change::durable()).await
    }

    /// Makes every commit so far durable and closes the file, at shutdown;
    /// the spool takes nothing after it.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        self.ask(|reply| writer::Job::Close { reply }).await?
    }

    /// Stores (`Some`) or forgets (`None`) an API-created action.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn save_action(&self, name: &str, action: Option<StoredAction>) -> Result<(), Error> {
        let mut change = Change::durable();
        match action {
            Some(a) => change.action_put.push(a),
            None => change.action_delete.push(name.to_owned()),
        }
        self.write(change).await
    }

    /// Deletes one dead letter; returns whether it existed.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn purge_dead_letter(&self, id: u64) -> Result<bool, Error> {
        if self.shared().store.dead_letter(id)?.is_none() {
            return Ok(false);
        }
        self.write(Change {
            dead_delete: vec![id],
            ..Change::durable()
        })
        .await?;
        Ok(true)
    }

    /// Reconciliation's checkpoint: everything before it was read (unix ms).
    pub(crate) fn checkpoint(&self) -> Option<i64> {
        *self
            .shared()
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves reconciliation's checkpoint, durably.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn save_checkpoint(&self, at_ms: i64) -> Result<(), Error> {
        self.write(Change {
            checkpoint: Some(at_ms),
            ..Change::durable()
        })
        .await?;
        *self
            .shared()
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(at_ms);
        Ok(())
    }

    /// Deletes every dead letter; returns how many.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn purge_dead_letters(&self) -> Result<usize, Error> {
        let ids: Vec<u64> = self.shared().store.dead_letters()?.iter().map(|r| r.id).collect();
        let n = ids.len();
        if n > 0 {
            self.write(Change {
                dead_delete: ids,
                ..Change::durable()
            })
            .await?;
        }
        Ok(n)
    }

    // --- delivery's side ---

    /// Resolves when something may have become due (a commit, a settlement).
    pub(crate) async fn changed(&self) {
        self.shared().wake.notified().await;
    }

    /// Picks what to send now, marking it in flight; returns it and when to
    /// look again.
    ///
    /// One pass in id order. An event may go when it is the oldest queued one
    /// of its alert (so a trigger is never overtaken by its resolve), due,
    /// and `admit` lets its routing key go. It need not be committed yet:
    /// the writer decides a round of events and then commits them, and a
    /// send overlapping that fsync takes the disk's latency out of the
    /// time to a page. Its webhook still gets 202 only once it is durable.
    /// The pass stops early once every routing key with queued events is
    /// blocked, so a long backlog held back by a rate limit costs little
    /// per pass.
    pub(crate) fn take_due(
        &self,
        max_in_flight: usize,
        mut admit: impl FnMut(&Arc<str>) -> Admit,
    ) -> (Vec<Due>, Option<Instant>) {
        let now = Instant::now();
        let mut idx = self.lock();
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
            // In flight: it stays first of its alert, so later events of
            // that alert wait too.
            if e.in_flight || e.held || is_blocked(&blocked, &e.key) || !idx.is_first_of_alert(*id, e) {
                continue;
            }
            if e.due > now {
                soon(e.due, &mut next);
                continue;
            }
            match admit(&e.key) {
                Admit::Go => ids.push(*id),
                Admit::GoAlone => {
                    ids.push(*id);
                    blocked.push(e.key.clone());
                }
                Admit::Wait(until) => {
                    soon(until, &mut next);
                    blocked.push(e.key.clone());
                }
                Admit::Stop(until) => {
                    soon(until, &mut next);
                    break;
                }
            }
        }
        idx.in_flight += ids.len();
        let mut work = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(e) = idx.queued.get_mut(&id) else {
                continue;
            };
            e.in_flight = true;
            work.push(Due {
                id,
                alert: e.alert,
                key: e.key.clone(),
                dedup_key: e.dedup_key.clone(),
                action: e.action,
                action_name: e.action_name.clone(),
                kind: e.kind,
                wire: e.wire.clone(),
                accepted_ms: e.accepted_ms,
            });
        }
        (work, next)
    }

    /// The stored record of an event in flight, once the commit that
    /// stores it has ended; `None` when that commit failed (the webhook got
    /// 503) or the event is gone.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn record(&self, due: &Due) -> Result<Option<Record>, Error> {
        if !self.committed(due.id).await {
            return Ok(None);
        }
        self.shared().store.event(due.id)
    }

    /// Waits until event `id` is not waiting for its commit any more;
    /// returns whether it is still queued (not undone, not settled).
    async fn committed(&self, id: u64) -> bool {
        let mut rounds = self.shared().rounds.subscribe();
        loop {
            match self.lock().queued.get(&id).map(|e| e.committed) {
                Some(true) => return true,
                None => return false,
                Some(false) => {}
            }
            if rounds.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Gives back an event's send slot without sending it: `None` when its
    /// record is gone (superseded or purged meanwhile), else try again after
    /// the delay.
    pub(crate) fn release(&self, due: &Due, again_in: Option<Duration>) {
        let mut idx = self.lock();
        idx.in_flight = idx.in_flight.saturating_sub(1);
        match again_in {
            None => {
                idx.remove(due.id);
            }
            Some(delay) => {
                if let Some(entry) = idx.queued.get_mut(&due.id) {
                    entry.in_flight = false;
                    entry.due = after(delay);
                }
            }
        }
    }

    /// The sink took an event: it is gone, and its alert is known to the sink.
    pub(crate) fn delivered(&self, due: &Due) {
        let mut idx = self.lock();
        idx.in_flight = idx.in_flight.saturating_sub(1);
        idx.counters.delivered += 1;
        // In memory only: on restart every open alert that is not
        // dead-lettered counts as delivered (see `Open::restored`), so the
        // row need not change.
        if due.action == EventAction::Trigger
            && let Some(open) = idx.open.get_mut(&due.alert)
        {
            open.alert = open.alert.delivered();
        }
        // Gone when it was sent while the commit that was to store it ran,
        // and that commit failed: the store has nothing of it to delete.
        let stored = idx.remove(due.id).is_some();
        drop(idx);
        if stored {
            let mut change = Change::default();
            change.delete.push(crate::store::Unqueue {
                id: due.id,
                alert: due.alert.digest(),
                routing_key: due.key.clone(),
            });
            change.counters.delivered += 1;
            self.submit(change);
        }
        self.shared().wake.notify_one();
    }

    /// A send failed in a way that may pass: try again after `delay`.
    /// `record` carries the attempt (count, status, error).
    pub(crate) fn retry_later(&self, due: &Due, mut record: Record, delay: Duration) {
        {
            let mut idx = self.lock();
            idx.in_flight = idx.in_flight.saturating_sub(1);
            if let Some(entry) = idx.queued.get_mut(&due.id) {
                entry.in_flight = false;
                entry.due = after(delay);
            }
        }
        record.next_attempt_ms =
            now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        self.submit(Change {
            put: vec![record],
            ..Change::default()
        });
        self.shared().wake.notify_one();
    }

    /// Gives up on an event: it becomes a dead letter (durably), and an
    /// alert whose trigger never reached the sink is marked so.
    pub(crate) fn dead_letter(&self, due: &Due, mut record: Record) {
        let mut change = Change::durable();
        {
            let mut idx = self.lock();
            idx.in_flight = idx.in_flight.saturating_sub(1);
            idx.remove(record.id);
            record.dead_ms = Some(now_ms());
            change.counters.dead_lettered += 1;
            idx.counters.dead_lettered += 1;
            if due.action == EventAction::Trigger
                && let Some(open) = idx.open.get_mut(&due.alert)
                && let Some(died) = open.alert.trigger_died()
            {
                open.alert = died;
                let open = *open;
                change.open_put.push(open_row(&due.key, &due.dedup_key, open));
            }
        }
        change.dead_put.push(record);
        self.submit(change);
        self.shared().wake.notify_one();
    }

    /// A routing key's sends succeed again: every event of it waiting is due
    /// now. Returns how many wait.
    pub(crate) fn make_due(&self, key: &str) -> usize {
        let n = self.lock().make_due(key, Instant::now());
        self.shared().wake.notify_one();
        n
    }
}

#[cfg(test)]
mod tests;
