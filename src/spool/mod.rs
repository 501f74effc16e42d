//! The durable outbox between the intake and PagerDuty.
//!
//! [`Spool::accept`] decides, under one lock, what a translated event means
//! for the alerts already open or queued, commits that decision to disk
//! ([`store`]) and only then lets the webhook be answered. The rules:
//! - a resolve goes out only for an alert open through the same routing key;
//! - a trigger still queued when its resolve arrives is never sent, and
//!   neither is the resolve when PagerDuty never saw a trigger (both are
//!   counted as superseded);
//! - consecutive queued triggers of one dedup key collapse into the newest.
//!
//! [`dispatch`] sends what is due, in accept order per dedup key.

pub mod dispatch;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::pagerduty::EventAction;
use crate::translate::{AlertClass, Disposition, Translation};
use store::{Change, OpenRow, Store};
pub use store::{Counters, Error, Record};

/// Most bytes of queued events kept encoded in memory, so that sending them
/// needs no spool read. A byte budget, not a count: events may be up to
/// 512 KB each.
const WIRE_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// What became of an accepted webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
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
}

/// Open alert state, per (routing key, dedup key).
#[derive(Debug, Clone, Copy)]
struct Open {
    class: AlertClass,
    /// Whether PagerDuty has taken a trigger for it (in memory only).
    delivered: bool,
    /// Its row in the open-alert table.
    row: u64,
    /// Whether that row says its trigger was dead-lettered.
    row_dead: bool,
}

/// An undelivered event, as the dispatcher sees it. The event itself stays
/// on disk until it is sent, so a long outage costs little memory.
#[derive(Debug)]
struct Entry {
    alert: AlertId,
    key: Arc<str>,
    dedup_key: Arc<str>,
    action: EventAction,
    action_name: Arc<str>,
    /// The event as sent, kept while the queue holds under
    /// [`WIRE_CACHE_BYTES`] of them so a send needs no spool read; `None`
    /// after a restart or in a long backlog.
    wire: Option<bytes::Bytes>,
    committed: bool,
    in_flight: bool,
    due: Instant,
}

/// An alert, (routing key, dedup key), as a keyed 128-bit digest: the
/// in-memory index holds one per open alert, and there may be very many, so
/// it keeps 16 bytes instead of both strings (the spool file has those).
/// The key is random per process, so no one can choose colliding alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AlertId([u64; 2]);

#[derive(Debug, Default)]
struct Index {
    queued: BTreeMap<u64, Entry>,
    /// Queued ids per alert, oldest first: only the first may be sent.
    by_alert: HashMap<AlertId, Vec<u64>>,
    /// Queued events per routing key.
    per_key: HashMap<Arc<str>, usize>,
    open: HashMap<AlertId, Open>,
    paused: HashMap<Arc<str>, Instant>,
    next_id: u64,
    counters: Counters,
    in_flight: usize,
    /// The key of [`AlertId`] digests.
    digest_key: std::hash::RandomState,
    /// Routing keys and action names, shared by every entry that has them.
    names: std::collections::HashSet<Arc<str>>,
    /// Bytes of `wire` held by queued entries.
    wire_bytes: usize,
}

impl Index {
    fn alert_id(&self, routing_key: &str, dedup_key: &str) -> AlertId {
        use std::hash::BuildHasher;
        let half = |domain: u8| self.digest_key.hash_one((domain, routing_key, dedup_key));
        AlertId([half(1), half(2)])
    }

    /// The shared copy of a routing key or action name.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(shared.clone());
        shared
    }

    fn insert(&mut self, id: u64, entry: Entry) {
        self.by_alert.entry(entry.alert).or_default().push(id);
        *self.per_key.entry(entry.key.clone()).or_default() += 1;
        self.wire_bytes += entry.wire.as_ref().map_or(0, bytes::Bytes::len);
        self.queued.insert(id, entry);
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.queued.remove(&id)?;
        self.wire_bytes -= entry.wire.as_ref().map_or(0, bytes::Bytes::len);
        if let Some(ids) = self.by_alert.get_mut(&entry.alert) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_alert.remove(&entry.alert);
            }
        }
        if let Some(n) = self.per_key.get_mut(&entry.key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&entry.key);
            }
        }
        Some(entry)
    }

    /// Whether `id` is the oldest queued event of its dedup key.
    fn is_first_of_dedup(&self, id: u64, e: &Entry) -> bool {
        self.by_alert.get(&e.alert).and_then(|ids| ids.first()) == Some(&id)
    }

    /// Queued (not in flight) triggers of an alert.
    fn queued_triggers(&self, k: &AlertId) -> Vec<u64> {
        self.by_alert
            .get(k)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        self.queued
                            .get(id)
                            .is_some_and(|e| e.action == EventAction::Trigger && !e.in_flight)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn trigger_in_flight(&self, k: &AlertId) -> bool {
        self.by_alert.get(k).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.queued
                    .get(id)
                    .is_some_and(|e| e.action == EventAction::Trigger && e.in_flight)
            })
        })
    }
}

/// How the dispatcher paces and retries.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most sends in flight.
    pub max_in_flight: usize,
    /// Most undelivered events held; beyond it the intake answers 503.
    pub capacity: usize,
    /// Per routing key: at most `rate.0` events per `rate.1`.
    pub rate: (u32, Duration),
    /// Events allowed at once per routing key (within `rate`).
    pub burst: u32,
    /// Optional cap over all keys (account limit).
    pub global_rate: Option<(u32, Duration)>,
    /// Least pause of a routing key after a 429.
    pub rate_limit_pause: Duration,
    /// First retry delay after a 5xx or network error.
    pub retry_initial: Duration,
    /// Cap on the retry delay.
    pub retry_max: Duration,
    /// Give up (dead letter) on events older than this.
    pub max_event_age: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            capacity: 1_000_000,
            rate: (120, Duration::from_secs(60)),
            burst: 10,
            global_rate: None,
            rate_limit_pause: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_event_age: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug)]
struct Inner {
    store: Store,
    index: Mutex<Index>,
    wake: Notify,
    settings: Settings,
}

/// The spool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
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
    /// Routing keys paused after a 429.
    pub paused_keys: usize,
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
    /// trigger / resolve / acknowledge (`None`: the stored event is unreadable).
    pub event_action: Option<EventAction>,
    /// Dedup key.
    pub dedup_key: Option<String>,
    /// The alert summary, for triggers.
    pub summary: Option<String>,
    /// Sends tried.
    pub attempts: u32,
    /// Status of the last attempt (0: no answer).
    pub last_status: Option<u16>,
    /// PagerDuty's error text (or the network error).
    pub error: Option<String>,
    /// When accepted and when given up, RFC 3339.
    pub accepted_at: String,
    /// When it became a dead letter, RFC 3339.
    pub dead_at: Option<String>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl DeadLetter {
    /// The outside view of a dead record.
    pub fn from_record(r: &Record) -> Self {
        let head = r.head().ok();
        Self {
            id: r.id,
            action: r.action.clone(),
            routing_key: head
                .as_ref()
                .map(|h| h.routing_key.redacted())
                .unwrap_or_default(),
            event_action: head.as_ref().map(|h| h.event_action),
            dedup_key: head.as_ref().and_then(|h| h.dedup_key.clone()),
            summary: head.and_then(|h| h.payload).map(|p| p.summary),
            attempts: r.attempts,
            last_status: r.last_status,
            error: r.last_error.clone(),
            accepted_at: rfc3339(r.accepted_ms),
            dead_at: r.dead_ms.map(rfc3339),
        }
    }
}

fn open_row(key: &str, dedup: &str, open: Open) -> (u64, OpenRow) {
    let row = OpenRow {
        routing_key: key.to_owned(),
        dedup_key: dedup.to_owned(),
        class: open.class,
        dead: open.row_dead,
    };
    (open.row, row)
}

// === impl Spool ===

impl Spool {
    /// Opens the spool file and rebuilds the in-memory index from it.
    ///
    /// # Errors
    /// When the file is in use by another bridge, or cannot be read.
    pub fn open(path: &Path, settings: Settings) -> Result<Self, Error> {
        let store = Store::open(path)?;
        let snap = store.snapshot()?;
        let mut index = Index {
            next_id: snap.next_id,
            counters: snap.counters,
            ..Index::default()
        };
        let now = Instant::now();
        let wall = now_ms();
        for r in snap.events {
            let wait = Duration::from_millis(u64::try_from(r.next_attempt_ms - wall).unwrap_or(0));
            let head = r.head()?;
            let Some(dedup) = head.dedup_key else {
                continue;
            };
            let key = index.intern(head.routing_key.expose());
            let action_name = index.intern(&r.action);
            index.insert(
                r.id,
                Entry {
                    alert: index.alert_id(&key, &dedup),
                    key,
                    dedup_key: Arc::from(dedup.as_str()),
                    action: head.event_action,
                    action_name,
                    wire: None,
                    committed: true,
                    in_flight: false,
                    due: now + wait,
                },
            );
        }
        // In id order, so a later row of an alert wins. There is one row per
        // alert unless a commit failed half-way through the bookkeeping; an
        // older row left behind would reopen a resolved alert at a later
        // start, so it is dropped now.
        let mut stale = Vec::new();
        for (row, o) in snap.open {
            let replaced = index.open.insert(
                index.alert_id(&o.routing_key, &o.dedup_key),
                // Deliveries are not recorded durably. Assume PagerDuty has
                // the alert unless its trigger was dead-lettered: an extra
                // resolve is dropped harmlessly, a missing one strands an
                // incident.
                Open {
                    class: o.class,
                    delivered: !o.dead,
                    row,
                    row_dead: o.dead,
                },
            );
            stale.extend(replaced.map(|old| old.row));
        }
        if !stale.is_empty() {
            store.commit_here(Change {
                open_delete: stale,
                durable: true,
                ..Change::default()
            })?;
        }
        if !index.queued.is_empty() {
            tracing::info!(
                queued = index.queued.len(),
                open_alerts = index.open.len(),
                "resuming undelivered events from the spool"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                index: Mutex::new(index),
                wake: Notify::new(),
                settings,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every critical section leaves the index consistent before it can
        // panic (no user code runs under the lock), so poisoning is ignored.
        self.inner.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the decision for one translated event and commits it to disk.
    ///
    /// # Errors
    /// When the spool is full or the commit fails; the webhook then gets 503
    /// and Prefect's log shows the failure.
    pub async fn accept(&self, action: &str, t: &Translation) -> Result<Accepted, AcceptError> {
        let dedup: Arc<str> = Arc::from(t.dedup_key.as_str());
        // Encoded once, outside the lock: stored and sent as these bytes.
        let encoded = Record::encode_event(&t.event)?;
        let mut change = Change {
            durable: true,
            ..Change::default()
        };
        let outcome;
        let mut new_id = None;
        {
            let mut idx = self.lock();
            let key = idx.intern(t.event.routing_key.expose());
            let k = idx.alert_id(&key, &dedup);
            let full = idx.queued.len() >= self.inner.settings.capacity;
            let send = match t.disposition {
                Disposition::Trigger(class) => {
                    if full {
                        return Err(AcceptError::Full);
                    }
                    // The id this trigger gets below (same lock): its row's id.
                    let row = idx.next_id;
                    let changed = match idx.open.get_mut(&k) {
                        Some(open) => {
                            // A failure outranks lateness: RUNNING must not resolve a failed run.
                            let class = if open.class == AlertClass::Lateness || class != AlertClass::Lateness
                            {
                                class
                            } else {
                                open.class
                            };
                            // A repeated trigger of an open alert leaves its row alone.
                            (class != open.class || open.row_dead).then(|| {
                                change.open_delete.push(open.row);
                                *open = Open {
                                    class,
                                    row,
                                    row_dead: false,
                                    ..*open
                                };
                                *open
                            })
                        }
                        None => {
                            let open = Open {
                                class,
                                delivered: false,
                                row,
                                row_dead: false,
                            };
                            idx.open.insert(k, open);
                            Some(open)
                        }
                    };
                    if let Some(open) = changed {
                        change.open_put.push(open_row(&key, &dedup, open));
                    }
                    for id in idx.queued_triggers(&k) {
                        idx.remove(id);
                        change.delete.push(id);
                        change.counters.superseded += 1;
                    }
                    true
                }
                Disposition::Resolve(scope) => match idx.open.get(&k).copied() {
                    Some(open) if scope.closes(open.class) => {
                        if full && (open.delivered || idx.trigger_in_flight(&k)) {
                            return Err(AcceptError::Full);
                        }
                        idx.open.remove(&k);
                        change.open_delete.push(open.row);
                        for id in idx.queued_triggers(&k) {
                            idx.remove(id);
                            change.delete.push(id);
                            change.counters.superseded += 1;
                        }
                        if open.delivered || idx.trigger_in_flight(&k) {
                            true
                        } else {
                            // PagerDuty never saw a trigger for it: nothing to resolve.
                            change.counters.superseded += 1;
                            false
                        }
                    }
                    _ => {
                        return Ok(Accepted::Ignored {
                            reason: "no open alert for this dedup key through this action's routing key",
                        });
                    }
                },
                Disposition::Acknowledge => {
                    if !idx.open.contains_key(&k) {
                        return Ok(Accepted::Ignored {
                            reason: "no open alert to acknowledge",
                        });
                    }
                    true
                }
            };
            if send {
                if full {
                    return Err(AcceptError::Full);
                }
                let id = idx.next_id;
                idx.next_id += 1;
                let accepted_ms = now_ms();
                let len = encoded.get().len();
                let wire = (idx.wire_bytes + len <= WIRE_CACHE_BYTES)
                    .then(|| bytes::Bytes::copy_from_slice(encoded.get().as_bytes()));
                let class = match t.disposition {
                    Disposition::Trigger(c) => Some(c),
                    _ => None,
                };
                let action_name = idx.intern(action);
                idx.insert(
                    id,
                    Entry {
                        alert: k,
                        key: key.clone(),
                        dedup_key: dedup.clone(),
                        action: t.event.event_action,
                        action_name,
                        wire,
                        committed: false,
                        in_flight: false,
                        due: Instant::now(),
                    },
                );
                change.put.push(Record {
                    id,
                    action: action.to_owned(),
                    event: encoded,
                    class,
                    accepted_ms,
                    attempts: 0,
                    next_attempt_ms: accepted_ms,
                    last_status: None,
                    last_error: None,
                    dead_ms: None,
                });
                new_id = Some(id);
                outcome = Accepted::Queued { id };
            } else {
                outcome = Accepted::Superseded;
            }
            idx.counters.superseded += change.counters.superseded;
        }
        if change.counters.superseded > 0 {
            tracing::info!(dedup_key = %dedup, superseded = change.counters.superseded,
                "queued trigger made moot before it was sent");
        }
        match self.inner.store.commit(change).await {
            Ok(()) => {
                if let Some(id) = new_id {
                    let mut idx = self.lock();
                    if let Some(e) = idx.queued.get_mut(&id) {
                        e.committed = true;
                    }
                    // With every send slot taken there is nothing to start:
                    // the dispatcher looks again as each send finishes.
                    let idle = idx.in_flight < self.inner.settings.max_in_flight;
                    drop(idx);
                    if idle {
                        self.inner.wake.notify_one();
                    }
                }
                Ok(outcome)
            }
            Err(e) => {
                if let Some(id) = new_id {
                    self.lock().remove(id);
                }
                Err(AcceptError::Storage(e))
            }
        }
    }

    /// Current figures.
    pub fn stats(&self) -> Stats {
        let dead = self.inner.store.dead_count().unwrap_or(0);
        let idx = self.lock();
        let now = Instant::now();
        Stats {
            queued: idx.queued.len(),
            in_flight: idx.in_flight,
            open_alerts: idx.open.len(),
            dead_letters: dead,
            paused_keys: idx.paused.values().filter(|t| **t > now).count(),
            counters: idx.counters,
        }
    }

    /// Every dead letter.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, Error> {
        Ok(self
            .inner
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
    pub async fn retry_dead_letter(&self, id: u64) -> Result<Option<u64>, Error> {
        let Some(mut record) = self.inner.store.dead_letter(id)? else {
            return Ok(None);
        };
        let head = record.head()?;
        let mut change = Change {
            durable: true,
            ..Change::default()
        };
        let new_id;
        {
            let mut idx = self.lock();
            new_id = idx.next_id;
            idx.next_id += 1;
            let Some(dedup) = head.dedup_key.clone() else {
                return Ok(None);
            };
            let key = idx.intern(head.routing_key.expose());
            let dedup: Arc<str> = Arc::from(dedup.as_str());
            let k = idx.alert_id(&key, &dedup);
            if let (EventAction::Trigger, Some(class)) = (head.event_action, record.class) {
                let open = Open {
                    class,
                    delivered: false,
                    row: new_id,
                    row_dead: false,
                };
                if let Some(old) = idx.open.insert(k, open) {
                    change.open_delete.push(old.row);
                }
                change.open_put.push(open_row(&key, &dedup, open));
            }
            let action_name = idx.intern(&record.action);
            idx.insert(
                new_id,
                Entry {
                    alert: k,
                    key,
                    dedup_key: dedup,
                    action: head.event_action,
                    action_name,
                    wire: None,
                    committed: false,
                    in_flight: false,
                    due: Instant::now(),
                },
            );
        }
        change.dead_delete.push(id);
        record.requeue(new_id);
        change.put.push(record);
        match self.inner.store.commit(change).await {
            Ok(()) => {
                if let Some(e) = self.lock().queued.get_mut(&new_id) {
                    e.committed = true;
                }
                self.inner.wake.notify_one();
                Ok(Some(new_id))
            }
            Err(e) => {
                self.lock().remove(new_id);
                Err(e)
            }
        }
    }

    /// Actions created over the API, from the spool file.
    ///
    /// # Errors
    /// Storage errors.
    pub fn stored_actions(&self) -> Result<Vec<store::StoredAction>, Error> {
        self.inner.store.actions()
    }

    /// Stores (`Some`) or forgets (`None`) an API-created action.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn save_action(&self, name: &str, action: Option<store::StoredAction>) -> Result<(), Error> {
        let mut change = Change {
            durable: true,
            ..Change::default()
        };
        match action {
            Some(a) => change.action_put.push(a),
            None => change.action_delete.push(name.to_owned()),
        }
        self.inner.store.commit(change).await
    }

    /// Deletes one dead letter; returns whether it existed.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn purge_dead_letter(&self, id: u64) -> Result<bool, Error> {
        if self.inner.store.dead_letter(id)?.is_none() {
            return Ok(false);
        }
        self.inner
            .store
            .commit(Change {
                dead_delete: vec![id],
                durable: true,
                ..Change::default()
            })
            .await?;
        Ok(true)
    }
}

/// Why an event could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Too many undelivered events.
    #[error("the spool holds the maximum number of undelivered events (--queue-capacity)")]
    Full,
    /// The commit failed.
    #[error(transparent)]
    Storage(#[from] Error),
}

/// Offline access to a spool file for the `spool` subcommand (the bridge
/// must not be running on it: the file lock says so).
pub mod offline {
    use super::*;

    /// Opens the file without starting a dispatcher.
    ///
    /// # Errors
    /// When in use or unreadable.
    pub fn open(path: &Path) -> Result<Store, Error> {
        if !path.exists() {
            return Err(Error::Storage(format!("no spool file at {}", path.display())));
        }
        Store::open(path)
    }

    /// Figures from the file.
    ///
    /// # Errors
    /// Storage errors.
    pub fn stats(store: &Store) -> Result<Stats, Error> {
        let snap = store.snapshot()?;
        Ok(Stats {
            queued: snap.events.len(),
            in_flight: 0,
            open_alerts: snap.open.len(),
            dead_letters: store.dead_count()?,
            paused_keys: 0,
            counters: snap.counters,
        })
    }

    /// Moves a dead letter back to the queue; the next start sends it.
    ///
    /// # Errors
    /// Storage errors.
    pub fn retry(store: &Store, id: u64) -> Result<Option<u64>, Error> {
        let Some(mut record) = store.dead_letter(id)? else {
            return Ok(None);
        };
        let snap = store.snapshot()?;
        let mut change = Change {
            durable: true,
            dead_delete: vec![id],
            ..Change::default()
        };
        let head = record.head()?;
        if let (EventAction::Trigger, Some(class), Some(dedup)) =
            (head.event_action, record.class, head.dedup_key)
        {
            let routing_key = head.routing_key.expose();
            change.open_delete.extend(
                snap.open
                    .iter()
                    .filter(|(_, o)| o.routing_key == routing_key && o.dedup_key == dedup)
                    .map(|(row, _)| *row),
            );
            let row = OpenRow {
                routing_key: routing_key.to_owned(),
                dedup_key: dedup,
                class,
                dead: false,
            };
            change.open_put.push((snap.next_id, row));
        }
        let new_id = snap.next_id;
        record.requeue(new_id);
        change.put.push(record);
        store.commit_blocking(change)?;
        Ok(Some(new_id))
    }

    /// Deletes one dead letter, or all of them; returns how many.
    ///
    /// # Errors
    /// Storage errors.
    pub fn purge(store: &Store, id: Option<u64>) -> Result<usize, Error> {
        let ids: Vec<u64> = match id {
            Some(id) => store.dead_letter(id)?.map(|r| vec![r.id]).unwrap_or_default(),
            None => store.dead_letters()?.iter().map(|r| r.id).collect(),
        };
        let n = ids.len();
        if n > 0 {
            store.commit_blocking(Change {
                dead_delete: ids,
                durable: true,
                ..Change::default()
            })?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
