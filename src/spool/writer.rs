//! The spool's one writer thread: it decides, commits and applies, in that
//! order, so that a decision reaches the in-memory index only when its commit
//! succeeded.
//!
//! Each round takes every job waiting (group commit: concurrent webhooks
//! share one fsync), decides them one after another under the index lock
//! (recording how to undo each), commits them in one transaction, and then
//! either marks them done or undoes them. Delivery may send a new event
//! while its commit runs; its webhook is answered only after. Requests
//! only wait for the answer: a client that hangs up, or a request that
//! times out, changes nothing.
//!
//! After a failed commit redb refuses every write until the file is opened
//! again. The writer closes it, answers `Unavailable` (webhooks get 503,
//! `/readyz` says why), and opens it again every [`REOPEN_EVERY`] or at the
//! next job. Bookkeeping that was not written yet (acks, retry times) is kept
//! and written first once the file is back, so nothing is sent twice because
//! a delete was lost.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{AcceptError, AcceptInput, Accepted, Shared, now_ms};
use crate::store::{Change, Counters, Error, Record};

/// Most jobs decided and committed in one transaction.
const MAX_BATCH: usize = 4096;
/// How often a closed spool file is tried again while nothing else arrives.
const REOPEN_EVERY: Duration = Duration::from_millis(500);
/// How often expired idempotency claims and open alerts are deleted from
/// the file (more often when --open-alert-ttl is very short, as in tests).
const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// Non-durable commits kept in memory until a durable one covers them; past
/// this many, the next commit is made durable.
const MAX_NOT_DURABLE: usize = 1024;
/// Open rows looked at per round for expiry (10,000 every 10 s: a million
/// in under 17 minutes; a decision checks the time itself meanwhile).
const SWEEP_ROWS: usize = 10_000;
/// Least time between two looks at whether the file is worth compacting
/// (the look reads the whole file's page tree).
const COMPACT_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Work for the writer.
#[derive(Debug)]
pub(crate) enum Job {
    /// A webhook's event, decided here in arrival order.
    Accept {
        input: AcceptInput,
        reply: oneshot::Sender<Result<Accepted, AcceptError>>,
    },
    /// A dead letter back into the queue.
    Requeue {
        record: Record,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    /// A change decided elsewhere: durable and answered when `reply` is
    /// given (API writes), else bookkeeping written when it can be.
    Write {
        change: Change,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// Shutdown: make everything durable, close the file and stop.
    Close {
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// A job decided, waiting for its commit.
enum Decided {
    Accept(
        Result<Accepted, AcceptError>,
        oneshot::Sender<Result<Accepted, AcceptError>>,
    ),
    Requeue(Result<u64, Error>, oneshot::Sender<Result<u64, Error>>),
    Write(Option<oneshot::Sender<Result<(), Error>>>),
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(super) fn start(shared: Arc<Shared>) -> Result<mpsc::Sender<Job>, Error> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("spool-writer".to_owned())
        .spawn(move || Writer::new(shared).run(&rx))
        .map_err(|e| Error::Storage(e.to_string()))?;
    Ok(tx)
}

struct Writer {
    shared: Arc<Shared>,
    /// Bookkeeping not yet written because a commit failed.
    pending: Vec<Change>,
    /// Non-durable changes committed since the last durable commit: if the
    /// file has to be opened again, redb may have dropped them.
    not_durable: Vec<Change>,
    /// When expired idempotency claims were last deleted from the file.
    last_expire: Option<Instant>,
    /// How often they (and expired open alerts) are looked for.
    expire_every: Duration,
    /// The file's size when last seen, and the most queued events and open
    /// alerts the spool held while it grew to that: a file that grew for a
    /// backlog (or for many open alerts) is looked at once a quarter of
    /// either is left.
    file_seen: u64,
    held_when_grown: (usize, usize),
    last_compact_check: Option<Instant>,
    /// Where the next look for expired open rows starts (row id).
    sweep_from: u64,
    /// Events delivered while the commit that was to store them ran, and
    /// failed: their deletes, on their way, have nothing to delete.
    never_stored: Vec<u64>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        let ttl = Duration::from_secs(u64::from(shared.lock().open_ttl_s));
        Self {
            expire_every: EXPIRE_EVERY.min((ttl / 4).max(Duration::from_millis(250))),
            shared,
            pending: Vec::new(),
            not_durable: Vec::new(),
            last_expire: None,
            file_seen: 0,
            held_when_grown: (0, 0),
            last_compact_check: None,
            sweep_from: 0,
            never_stored: Vec::new(),
        }
    }

    /// Compacts the file when a backlog it grew for is gone (see
    /// [`crate::store::Store::compact`]). Intake waits while it runs: the
    /// writer does it between two commits, and it moves only live pages.
    fn maybe_compact(&mut self) {
        let size = self.shared.store.size_bytes();
        let held = {
            let idx = self.shared.lock();
            (idx.queued_len(), idx.open_count)
        };
        if size > self.file_seen {
            self.file_seen = size;
            self.held_when_grown = (
                self.held_when_grown.0.max(held.0),
                self.held_when_grown.1.max(held.1),
            );
        }
        let shrank = |now: usize, then: usize| now.saturating_mul(4) < then;
        if !(shrank(held.0, self.held_when_grown.0) || shrank(held.1, self.held_when_grown.1))
            || self
                .last_compact_check
                .is_some_and(|t| t.elapsed() < COMPACT_CHECK_EVERY)
        {
            return;
        }
        self.last_compact_check = Some(Instant::now());
        let started = Instant::now();
        match self.shared.store.compact() {
            Ok(Some((before, after))) => {
                tracing::info!(
                    before_bytes = before,
                    after_bytes = after,
                    queued = held.0,
                    open_alerts = held.1,
                    millis = started.elapsed().as_millis() as u64,
                    "spool file compacted: the backlog it grew for is gone"
                );
                self.file_seen = after;
                self.held_when_grown = held;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "spool file compaction failed; it keeps its size"),
        }
    }

    /// Reads the next queued events of long queues into the index once a
    /// routing key's window has room (see [`super::index::WINDOW`]), at
    /// most [`super::index::REFILL_BYTES`] of rows in all. Between two
    /// commits, so that the store holds every decision made.
    fn refill(&self) {
        let wanted = self.shared.lock().refills();
        let mut budget = super::index::REFILL_BYTES;
        let mut taken = 0;
        for (key, from, room) in wanted {
            if budget == 0 {
                break;
            }
            let page = match self.shared.store.queued_from(&key, from, room, budget) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read queued events into memory; will try again");
                    return;
                }
            };
            if let Err(e) = super::set_aside(&*self.shared.store, &page.damaged) {
                tracing::warn!(error = %e, "cannot quarantine queued events that do not decode; will try again");
                return;
            }
            budget = budget.saturating_sub(page.bytes);
            taken += self
                .shared
                .lock()
                .page_in(&key, &page, tokio::time::Instant::now());
        }
        if taken > 0 {
            self.shared.wake.notify_one();
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Job>) {
        loop {
            let wait = if self.last_expire.is_none() {
                // The first round at once: what expired while the bridge
                // was stopped goes now.
                Duration::ZERO
            } else if self.shared.store.is_open() && self.pending.is_empty() {
                self.expire_every()
            } else {
                REOPEN_EVERY
            };
            let mut batch = match rx.recv_timeout(wait) {
                Ok(job) => vec![job],
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => break,
            };
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if !self.never_stored.is_empty() && !batch.is_empty() {
                batch.retain_mut(|job| match job {
                    Job::Write { change, reply: None } => {
                        forget_never_stored(&mut self.never_stored, change);
                        !change.is_empty()
                    }
                    _ => true,
                });
                if batch.is_empty() {
                    // Nothing left to do: no reason to open a failed file
                    // again before its time.
                    continue;
                }
            }
            let Some(at) = batch.iter().position(|j| matches!(j, Job::Close { .. })) else {
                self.round(batch);
                continue;
            };
            let closing = batch.remove(at);
            let (tx, mut flushed) = oneshot::channel();
            batch.push(Job::Write {
                change: Change::durable(),
                reply: Some(tx),
            });
            self.round(batch);
            // A clean close has redb record where its free pages are; a
            // file left open is rebuilt from every page at the next start
            // (seconds for a file of gigabytes).
            self.shared.store.close();
            if let Job::Close { reply } = closing {
                let _ = reply.send(flushed.try_recv().unwrap_or(Err(Error::Closed)));
            }
            return;
        }
        // Shutdown: one last try at bookkeeping a failure held back.
        if !self.pending.is_empty() {
            self.round(Vec::new());
        }
    }

    /// Tells sends that went out before their commit that it has ended.
    fn ended_round(&self) {
        self.shared.rounds.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How often expired claims and alerts are looked for.
    fn expire_every(&self) -> Duration {
        self.expire_every
    }

    fn set_unready(&self, reason: Option<String>) {
        let mut slot = self
            .shared
            .unready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&*slot, &reason) {
            (Some(_), None) => tracing::info!("the spool can commit again"),
            (None, Some(r)) => {
                tracing::error!(reason = %r, "the spool cannot commit; webhooks get 503 until it can")
            }
            _ => {}
        }
        *slot = reason;
    }

    /// Opens the file again if a failure closed it; on success, what the
    /// failure held back goes first.
    fn ensure_open(&mut self) -> Result<(), Error> {
        let store = &self.shared.store;
        if store.is_open() {
            return Ok(());
        }
        store.reopen()?;
        tracing::info!(spool = %store.location(), "spool file opened again after a failed write");
        // What was committed without fsync may be gone; write it again
        // (every change is idempotent but its counters, which it was not
        // about to lose: they are in the durable totals or in `pending`).
        let mut replay = std::mem::take(&mut self.not_durable);
        for c in &mut replay {
            c.counters = Counters::default();
        }
        replay.append(&mut self.pending);
        self.pending = replay;
        Ok(())
    }

    fn round(&mut self, batch: Vec<Job>) {
        if let Err(e) = self.ensure_open() {
            let reason = e.to_string();
            self.set_unready(Some(reason.clone()));
            for job in batch {
                match job {
                    // Kept, and written once the file is back.
                    Job::Write { change, reply: None } => self.pending.push(change),
                    job => fail(job, &reason),
                }
            }
            return;
        }
        let mut changes = Vec::with_capacity(batch.len());
        let mut decided = Vec::with_capacity(batch.len());
        let mut undos = Vec::with_capacity(batch.len());
        let mut durable = !self.pending.is_empty();
        {
            let mut idx = self.shared.lock();
            for job in batch {
                let mut change = Change::default();
                let mut undo = Vec::new();
                let d = match job {
                    Job::Accept { input, reply } => {
                        let outcome = idx.decide_accept(
                            &*self.shared.store,
                            self.shared.capacity,
                            input,
                            &mut change,
                            &mut undo,
                        );
                        change.durable = !change.is_empty();
                        Decided::Accept(outcome, reply)
                    }
                    Job::Requeue { record, reply } => {
                        let id = idx.decide_requeue(&*self.shared.store, record, &mut change, &mut undo);
                        change.durable = id.is_ok();
                        Decided::Requeue(id, reply)
                    }
                    Job::Write { change: c, reply } => {
                        change = c;
                        change.durable |= reply.is_some();
                        Decided::Write(reply)
                    }
                    // Only a second one gets here (`run` takes the first):
                    // the file closes once, after the first.
                    Job::Close { reply } => {
                        change.durable = true;
                        Decided::Write(Some(reply))
                    }
                };
                durable |= change.durable;
                changes.push(change);
                decided.push(d);
                undos.push(undo);
            }
        }
        if undos
            .iter()
            .flatten()
            .any(|u| matches!(u, super::index::Undo::Inserted(..)))
        {
            // New events may be sent while their commit runs.
            self.shared.wake.notify_one();
        }
        let maintained = self
            .last_expire
            .is_none_or(|t| t.elapsed() >= self.expire_every());
        if maintained {
            // The first round clears what an earlier run left past its
            // time; after that, a bridge that was never asked to remember
            // an event id has nothing to forget and writes nothing.
            let first = self.last_expire.is_none();
            self.last_expire = Some(Instant::now());
            let mut idx = self.shared.lock();
            if first || !idx.seen.is_empty() {
                let before = idx.seen.forget_before(now_u64());
                changes.push(Change {
                    seen_expire_before: Some(before),
                    ..Change::default()
                });
            }
            // Open alerts past --open-alert-ttl: a resolve already finds
            // nothing; their rows go now. Not undone if the commit fails:
            // the rows are written off again at the next start.
            let now = now_ms();
            let mut expired = idx.expire_open(super::index::secs(now));
            // The store's rows, a slice per round: most open alerts are
            // not in memory.
            let deleted: std::collections::HashSet<u64> = changes
                .iter()
                .flat_map(|c| c.open_delete.iter().copied())
                .chain(expired.iter().copied())
                .collect();
            let before_ms = now.saturating_sub(i64::from(idx.open_ttl_s) * 1000);
            match self
                .shared
                .store
                .expired_open(self.sweep_from, SWEEP_ROWS, before_ms, idx.started_ms())
            {
                Ok(found) => {
                    self.sweep_from = found.next.unwrap_or(0);
                    expired.extend(idx.expire_stored(&found.rows, &deleted));
                    if !found.damaged.is_empty() {
                        // Not open any more as far as events go; counted
                        // in the quarantine instead.
                        idx.open_count = idx.open_count.saturating_sub(found.damaged.len());
                        if let Err(e) = super::set_aside(&*self.shared.store, &found.damaged) {
                            tracing::warn!(error = %e, "cannot quarantine open-alert rows that do not decode; will try again");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for open alerts past --open-alert-ttl; will try again")
                }
            }
            if !expired.is_empty() {
                tracing::info!(
                    expired = expired.len(),
                    ttl_secs = idx.open_ttl_s,
                    "open alerts past --open-alert-ttl forgotten; a resolve for them is ignored"
                );
                changes.push(Change {
                    open_delete: expired,
                    ..Change::default()
                });
            }
        }
        durable |= self.not_durable.len() >= MAX_NOT_DURABLE;
        let all: Vec<&Change> = self.pending.iter().chain(changes.iter()).collect();
        if all.iter().all(|c| c.is_empty()) && !durable {
            // Nothing to write (ignored events, duplicates, an idle tick).
            self.ended_round();
            answer(decided, None);
            if maintained {
                self.maybe_compact();
            }
            self.refill();
            return;
        }
        let started = Instant::now();
        let result = self.shared.store.apply(&all, durable);
        self.shared.metrics.commit(started.elapsed());
        match result {
            Ok(()) => {
                self.pending.clear();
                if durable {
                    self.not_durable.clear();
                } else {
                    self.not_durable
                        .extend(changes.iter().filter(|c| !c.is_empty()).cloned());
                }
                {
                    let mut idx = self.shared.lock();
                    for undo in &undos {
                        idx.commit(undo);
                    }
                    idx.trim_open();
                }
                self.ended_round();
                self.set_unready(None);
                answer(decided, None);
                self.shared.wake.notify_one();
                if maintained {
                    self.maybe_compact();
                }
                self.refill();
            }
            Err(e) => {
                self.shared.store.close();
                let reason = e.to_string();
                let mut sent = 0;
                let mut kept_open = Vec::new();
                {
                    let mut idx = self.shared.lock();
                    for (i, undo) in undos.into_iter().enumerate().rev() {
                        if idx.undo(undo, &mut sent, &mut self.never_stored) {
                            kept_open.extend(changes[i].open_put.iter().cloned());
                        }
                    }
                }
                if !kept_open.is_empty() {
                    // Written first once the file is back, like other
                    // bookkeeping the failure held back.
                    self.pending.push(Change {
                        open_put: kept_open,
                        ..Change::durable()
                    });
                }
                self.ended_round();
                if sent > 0 {
                    // Their webhooks get 503 like the rest of the round; what
                    // PagerDuty already has stays, and a new alert whose
                    // trigger went out stays open for its recovery.
                    tracing::warn!(
                        sent,
                        "events sent to PagerDuty while their commit ran are not in the spool: the commit failed"
                    );
                }
                // Bookkeeping nobody waits for is written once the file is back.
                for (change, d) in changes.into_iter().zip(&decided) {
                    if matches!(d, Decided::Write(None)) && !change.is_empty() {
                        self.pending.push(change);
                    }
                }
                self.set_unready(Some(reason.clone()));
                answer(decided, Some(&reason));
            }
        }
    }
}

fn now_u64() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

/// Sends every answer: the decisions, or the commit's failure.
fn answer(decided: Vec<Decided>, failure: Option<&str>) {
    let err = |r: &str| Error::Unavailable(r.to_owned());
    for d in decided {
        match (d, failure) {
            (Decided::Accept(outcome, reply), None) => {
                let _ = reply.send(outcome);
            }
            (Decided::Accept(outcome, reply), Some(r)) => {
                // A refusal stays what it was; anything else was not stored.
                let _ = reply.send(match outcome {
                    Err(AcceptError::Full) => Err(AcceptError::Full),
                    _ => Err(AcceptError::Storage(err(r))),
                });
            }
            (Decided::Requeue(id, reply), None) => {
                let _ = reply.send(id);
            }
            (Decided::Requeue(_, reply), Some(r)) => {
                let _ = reply.send(Err(err(r)));
            }
            (Decided::Write(Some(reply)), f) => {
                let _ = reply.send(f.map_or(Ok(()), |r| Err(err(r))));
            }
            (Decided::Write(None), _) => {}
        }
    }
}

/// Answers a job with `reason` without deciding anything.
fn fail(job: Job, reason: &str) {
    let err = || Error::Unavailable(reason.to_owned());
    match job {
        Job::Accept { reply, .. } => {
            let _ = reply.send(Err(AcceptError::Storage(err())));
        }
        Job::Requeue { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Job::Write {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(Err(err()));
        }
        Job::Write { reply: None, .. } => {}
        Job::Close { reply } => {
            let _ = reply.send(Err(err()));
        }
    }
}

/// Drops from a delivery's change the deletes of events that were never
/// stored, so that it writes nothing for them (a full disk that failed
/// their commit would fail this one too, or worse, pass it and report the
/// spool ready again).
fn forget_never_stored(never_stored: &mut Vec<u64>, change: &mut Change) {
    let before = change.delete.len();
    change.delete.retain(|u| {
        let Some(at) = never_stored.iter().position(|id| *id == u.id) else {
            return true;
        };
        never_stored.swap_remove(at);
        false
    });
    let dropped = (before - change.delete.len()) as u64;
    change.counters.delivered = change.counters.delivered.saturating_sub(dropped);
}
