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
//! Every decision is made on the one writer thread ([`writer`]), in arrival
//! order, and is applied to the in-memory index only once its commit
//! succeeds: a failed commit is undone, whatever became of the request that
//! asked for it. [`dispatch`] sends what is due, in accept order per dedup key.

pub mod dispatch;
pub mod store;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::dedup::Seen;
use crate::pagerduty::EventAction;
use crate::translate::{AlertClass, Disposition, Translation};
use store::{Change, OpenRow, Store};
pub use store::{Counters, Error, Quarantined, Record};

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
    /// The same (action, Prefect event id) was accepted within `--dedup-ttl`.
    Duplicate,
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
    /// Superseded by a decision whose commit is under way: never sent.
    held: bool,
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
    /// Per routing key: 429 pauses, outage probing and adaptive pace.
    keys: HashMap<Arc<str>, dispatch::KeyState>,
    next_id: u64,
    counters: Counters,
    in_flight: usize,
    /// The key of [`AlertId`] digests.
    digest_key: std::hash::RandomState,
    /// Routing keys and action names, shared by every entry that has them.
    names: std::collections::HashSet<Arc<str>>,
    /// Bytes of `wire` held by queued entries.
    wire_bytes: usize,
    /// Idempotency claims.
    seen: Seen,
}

/// How to take back one step of a decision whose commit failed.
#[derive(Debug)]
enum Undo {
    /// A new queued entry: remove it (on success: mark it committed).
    Inserted(u64),
    /// A superseded entry held back: release it (on success: remove it).
    Held(u64),
    /// An open alert as it was, and whether its trigger was in flight then
    /// (it may have been delivered meanwhile).
    Open(AlertId, Option<Open>, bool),
    /// The id counter as it was.
    NextId(u64),
    /// Superseded events counted.
    Superseded(u64),
    /// An idempotency claim made.
    Claim(u128),
}

/// One webhook's event, as the writer needs it to decide.
#[derive(Debug)]
pub(crate) struct AcceptInput {
    action: String,
    routing_key: String,
    dedup: Arc<str>,
    event_action: EventAction,
    disposition: Disposition,
    encoded: Box<serde_json::value::RawValue>,
    /// The same bytes, made by the request (not the writer) for the send cache.
    wire: bytes::Bytes,
    claim: Option<u128>,
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
                            .is_some_and(|e| e.action == EventAction::Trigger && !e.in_flight && !e.held)
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

    /// Sets an alert's open state, remembering how it was.
    fn set_open(&mut self, k: AlertId, open: Option<Open>, undo: &mut Vec<Undo>) {
        let in_flight = self.trigger_in_flight(&k);
        let before = match open {
            Some(o) => self.open.insert(k, o),
            None => self.open.remove(&k),
        };
        undo.push(Undo::Open(k, before, in_flight));
    }

    /// Holds back the queued triggers of an alert: superseded, never sent.
    fn hold_queued_triggers(&mut self, k: &AlertId, change: &mut Change, undo: &mut Vec<Undo>) -> u64 {
        let ids = self.queued_triggers(k);
        for id in &ids {
            if let Some(e) = self.queued.get_mut(id) {
                e.held = true;
            }
            change.delete.push(*id);
            undo.push(Undo::Held(*id));
        }
        ids.len() as u64
    }

    /// Decides what one webhook's event means given what is open and
    /// queued, applies that to the index (recording how to undo it) and
    /// adds what must be written to `change`.
    fn decide_accept(
        &mut self,
        settings: &Settings,
        input: AcceptInput,
        change: &mut Change,
        undo: &mut Vec<Undo>,
    ) -> Result<Accepted, AcceptError> {
        let now = now_ms();
        let now_u = u64::try_from(now).unwrap_or(0);
        if let Some(claim) = input.claim
            && self.seen.contains(claim, now_u)
        {
            return Ok(Accepted::Duplicate);
        }
        let key = self.intern(&input.routing_key);
        let k = self.alert_id(&key, &input.dedup);
        let full = self.queued.len() >= settings.capacity;
        let mut superseded = 0;
        let send = match input.disposition {
            Disposition::Trigger(class) => {
                if full {
                    return Err(AcceptError::Full);
                }
                // The id this trigger gets below: its row's id.
                let row = self.next_id;
                let changed = match self.open.get(&k).copied() {
                    Some(open) => {
                        // A failure outranks lateness: RUNNING must not resolve a failed run.
                        let class = if open.class == AlertClass::Lateness || class != AlertClass::Lateness {
                            class
                        } else {
                            open.class
                        };
                        // A repeated trigger of an open alert leaves its row alone.
                        (class != open.class || open.row_dead).then(|| {
                            change.open_delete.push(open.row);
                            Open {
                                class,
                                row,
                                row_dead: false,
                                ..open
                            }
                        })
                    }
                    None => Some(Open {
                        class,
                        delivered: false,
                        row,
                        row_dead: false,
                    }),
                };
                if let Some(open) = changed {
                    self.set_open(k, Some(open), undo);
                    change.open_put.push(open_row(&key, &input.dedup, open));
                }
                superseded += self.hold_queued_triggers(&k, change, undo);
                true
            }
            Disposition::Resolve(scope) => match self.open.get(&k).copied() {
                Some(open) if scope.closes(open.class) => {
                    let sent_before = open.delivered || self.trigger_in_flight(&k);
                    if full && sent_before {
                        return Err(AcceptError::Full);
                    }
                    self.set_open(k, None, undo);
                    change.open_delete.push(open.row);
                    superseded += self.hold_queued_triggers(&k, change, undo);
                    if !sent_before {
                        // PagerDuty never saw a trigger for it: nothing to resolve.
                        superseded += 1;
                    }
                    sent_before
                }
                _ => {
                    return Ok(Accepted::Ignored {
                        reason: "no open alert for this dedup key through this action's routing key",
                    });
                }
            },
            Disposition::Acknowledge => {
                if !self.open.contains_key(&k) {
                    return Ok(Accepted::Ignored {
                        reason: "no open alert to acknowledge",
                    });
                }
                if full {
                    return Err(AcceptError::Full);
                }
                true
            }
        };
        if superseded > 0 {
            change.counters.superseded += superseded;
            self.counters.superseded += superseded;
            undo.push(Undo::Superseded(superseded));
            tracing::info!(dedup_key = %crate::logging::escape(&input.dedup), superseded,
                "queued trigger made moot before it was sent");
        }
        if let Some(claim) = input.claim {
            self.seen.insert(claim, now_u);
            change.seen_put.push((now_u, claim));
            undo.push(Undo::Claim(claim));
        }
        if !send {
            return Ok(Accepted::Superseded);
        }
        let id = self.next_id;
        undo.push(Undo::NextId(id));
        self.next_id += 1;
        let wire = (self.wire_bytes + input.wire.len() <= WIRE_CACHE_BYTES).then_some(input.wire);
        let class = match input.disposition {
            Disposition::Trigger(c) => Some(c),
            _ => None,
        };
        let action_name = self.intern(&input.action);
        self.insert(
            id,
            Entry {
                alert: k,
                key,
                dedup_key: input.dedup,
                action: input.event_action,
                action_name,
                wire,
                committed: false,
                held: false,
                in_flight: false,
                due: Instant::now(),
            },
        );
        undo.push(Undo::Inserted(id));
        change.put.push(Record {
            id,
            action: input.action,
            event: input.encoded,
            class,
            accepted_ms: now,
            attempts: 0,
            next_attempt_ms: now,
            last_status: None,
            last_error: None,
            dead_ms: None,
        });
        Ok(Accepted::Queued { id })
    }

    /// Decides how a dead letter goes back in the queue, as a new event
    /// sent now; `None` when its stored event has no dedup key.
    fn decide_requeue(
        &mut self,
        mut record: Record,
        change: &mut Change,
        undo: &mut Vec<Undo>,
    ) -> Option<u64> {
        let head = record.head().ok()?;
        let dedup: Arc<str> = Arc::from(head.dedup_key?.as_str());
        let new_id = self.next_id;
        undo.push(Undo::NextId(new_id));
        self.next_id += 1;
        let key = self.intern(head.routing_key.expose());
        let k = self.alert_id(&key, &dedup);
        if let (EventAction::Trigger, Some(class)) = (head.event_action, record.class) {
            let open = Open {
                class,
                delivered: false,
                row: new_id,
                row_dead: false,
            };
            if let Some(old) = self.open.get(&k) {
                change.open_delete.push(old.row);
            }
            self.set_open(k, Some(open), undo);
            change.open_put.push(open_row(&key, &dedup, open));
        }
        let action_name = self.intern(&record.action);
        self.insert(
            new_id,
            Entry {
                alert: k,
                key,
                dedup_key: dedup,
                action: head.event_action,
                action_name,
                wire: None,
                committed: false,
                held: false,
                in_flight: false,
                due: Instant::now(),
            },
        );
        undo.push(Undo::Inserted(new_id));
        change.dead_delete.push(record.id);
        record.requeue(new_id);
        change.put.push(record);
        Some(new_id)
    }

    /// The commit of a decision succeeded: its new entries may be sent,
    /// what it superseded is gone.
    fn commit(&mut self, undo: &[Undo]) {
        for step in undo {
            match step {
                Undo::Inserted(id) => {
                    if let Some(e) = self.queued.get_mut(id) {
                        e.committed = true;
                    }
                }
                Undo::Held(id) => {
                    self.remove(*id);
                }
                _ => {}
            }
        }
    }

    /// The commit of a decision failed: put the index back as it was.
    fn undo(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Inserted(id) => {
                    self.remove(id);
                }
                Undo::Held(id) => {
                    if let Some(e) = self.queued.get_mut(&id) {
                        e.held = false;
                    }
                }
                Undo::Open(k, before, was_in_flight) => match before {
                    Some(mut open) => {
                        // A trigger that was in flight may have reached
                        // PagerDuty since: count it as seen (an extra
                        // resolve is harmless, a missing one is not).
                        open.delivered |= was_in_flight || self.open.get(&k).is_some_and(|o| o.delivered);
                        self.open.insert(k, open);
                    }
                    None => {
                        self.open.remove(&k);
                    }
                },
                Undo::NextId(id) => self.next_id = id,
                Undo::Superseded(n) => self.counters.superseded -= n,
                Undo::Claim(c) => self.seen.remove(c),
            }
        }
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

/// What the writer thread and the request side share.
#[derive(Debug)]
struct Shared {
    store: Store,
    index: Mutex<Index>,
    wake: Notify,
    settings: Settings,
    /// Why the spool cannot commit right now; `None` when it can.
    unready: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::Sender<writer::Job>,
}

impl std::ops::Deref for Inner {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every critical section leaves the index consistent before it can
        // panic (no user code runs under the lock), so poisoning is ignored.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    /// Opens the spool file, rebuilds the in-memory index from it and
    /// starts its writer thread. Rows that no longer decode are moved to the
    /// quarantine and logged, once.
    ///
    /// # Errors
    /// When the file is in use by another bridge, or cannot be read.
    pub fn open(path: &Path, settings: Settings) -> Result<Self, Error> {
        Self::open_with(path, settings, crate::dedup::Limits::default())
    }

    /// As [`Spool::open`], remembering Prefect event ids within `seen`.
    ///
    /// # Errors
    /// As [`Spool::open`].
    pub fn open_with(path: &Path, settings: Settings, seen: crate::dedup::Limits) -> Result<Self, Error> {
        let store = Store::open(path)?;
        let snap = store.snapshot()?;
        if !snap.damaged.is_empty() {
            for d in &snap.damaged {
                tracing::error!(table = %d.table, key = %crate::logging::escape(&d.key),
                    error = %crate::logging::escape(&d.error), spool = %path.display(),
                    "a spool row does not decode; it is kept in the quarantine (see `spool check`, `spool drop`)");
            }
            store.quarantine(&snap.damaged)?;
        }
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
        let mut index = Index {
            next_id: snap.next_id,
            counters: snap.counters,
            seen: Seen::new(seen),
            ..Index::default()
        };
        for (at, claim) in claims {
            index.seen.insert(claim, at);
        }
        let now = Instant::now();
        let wall = now_ms();
        for r in snap.events {
            let wait = Duration::from_millis(u64::try_from(r.next_attempt_ms - wall).unwrap_or(0));
            // `snapshot` returns only records whose head decodes.
            let Ok(head) = r.head() else { continue };
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
                    held: false,
                    in_flight: false,
                    due: now.checked_add(wait).unwrap_or(now),
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
                ..Change::durable()
            })?;
        }
        if !index.queued.is_empty() {
            tracing::info!(
                queued = index.queued.len(),
                open_alerts = index.open.len(),
                "resuming undelivered events from the spool"
            );
        }
        let shared = Arc::new(Shared {
            store,
            index: Mutex::new(index),
            wake: Notify::new(),
            settings,
            unready: Mutex::new(None),
        });
        let writer = writer::start(shared.clone())?;
        Ok(Self {
            inner: Arc::new(Inner { shared, writer }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.inner.lock()
    }

    /// Hands a job to the writer thread and waits for its answer. The job's
    /// outcome is applied by the writer whether or not anyone still waits.
    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> writer::Job) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner.writer.send(job(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Queues a change without waiting for it (delivery bookkeeping: a
    /// crash before it is on disk only causes a resend).
    fn submit(&self, change: Change) {
        let _ = self.inner.writer.send(writer::Job::Write { change, reply: None });
    }

    /// Why the spool cannot take events now; `None` when it can.
    pub fn unready(&self) -> Option<String> {
        if let Some(reason) = self
            .inner
            .unready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(reason);
        }
        (self.lock().queued.len() >= self.inner.settings.capacity).then(|| AcceptError::Full.to_string())
    }

    /// Records the decision for one translated event and commits it to disk.
    /// `event_id` is the Prefect event id: a repeat of it within
    /// `--dedup-ttl` is a [`Accepted::Duplicate`], answered only once the
    /// original is on disk.
    ///
    /// # Errors
    /// When the spool is full or the commit fails; the webhook then gets 503
    /// and Prefect's log shows the failure.
    pub async fn accept(
        &self,
        action: &str,
        t: &Translation,
        event_id: Option<&str>,
    ) -> Result<Accepted, AcceptError> {
        // Encoded once, here: stored and sent as these bytes.
        let encoded = Record::encode_event(&t.event)?;
        let wire = bytes::Bytes::copy_from_slice(encoded.get().as_bytes());
        let input = AcceptInput {
            wire,
            action: action.to_owned(),
            routing_key: t.event.routing_key.expose().to_owned(),
            dedup: Arc::from(t.dedup_key.as_str()),
            event_action: t.event.event_action,
            disposition: t.disposition,
            encoded,
            claim: event_id.map(|id| crate::dedup::digest(action, id)),
        };
        self.ask(|reply| writer::Job::Accept { input, reply }).await?
    }

    /// Current figures.
    pub fn stats(&self) -> Stats {
        let store = &self.inner.store;
        let dead = store.dead_count().unwrap_or(0);
        let quarantined = store.quarantined_count().unwrap_or(0);
        let unavailable = self
            .inner
            .unready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let idx = self.lock();
        let now = Instant::now();
        Stats {
            queued: idx.queued.len(),
            in_flight: idx.in_flight,
            open_alerts: idx.open.len(),
            dead_letters: dead,
            paused_keys: idx.keys.values().filter(|k| k.is_paused(now)).count(),
            quarantined,
            unavailable,
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
        let Some(record) = self.inner.store.dead_letter(id)? else {
            return Ok(None);
        };
        self.ask(|reply| writer::Job::Requeue { record, reply }).await?
    }

    /// Actions created over the API, from the spool file.
    ///
    /// # Errors
    /// Storage errors.
    pub fn stored_actions(&self) -> Result<Vec<store::StoredAction>, Error> {
        self.inner.store.actions()
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
    pub async fn flush(&self) -> Result<(), Error> {
        self.write(Change::durable()).await
    }

    /// Stores (`Some`) or forgets (`None`) an API-created action.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn save_action(&self, name: &str, action: Option<store::StoredAction>) -> Result<(), Error> {
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
    pub async fn purge_dead_letter(&self, id: u64) -> Result<bool, Error> {
        if self.inner.store.dead_letter(id)?.is_none() {
            return Ok(false);
        }
        self.write(Change {
            dead_delete: vec![id],
            ..Change::durable()
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

/// What `spool check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Nothing undecodable and nothing quarantined.
    pub ok: bool,
    /// Rows still in their tables that do not decode (a running bridge
    /// moves them to the quarantine at its next start).
    pub undecodable: Vec<Quarantined>,
    /// Rows in the quarantine; `spool drop quarantine:ID` deletes one.
    pub quarantined: Vec<Quarantined>,
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

    /// What `spool check` reports: rows that do not decode (still in their
    /// tables, or already quarantined). Reads only.
    ///
    /// # Errors
    /// Storage errors.
    pub fn check(store: &Store) -> Result<Check, Error> {
        let snap = store.snapshot()?;
        Ok(Check {
            ok: snap.damaged.is_empty() && store.quarantined_count()? == 0,
            undecodable: snap
                .damaged
                .into_iter()
                .map(|d| store::Quarantined {
                    id: 0,
                    bytes: d.raw.len(),
                    table: d.table,
                    key: d.key,
                    error: d.error,
                })
                .collect(),
            quarantined: store.quarantined()?,
        })
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
            quarantined: store.quarantined_count()? + snap.damaged.len(),
            unavailable: None,
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
        store.commit_here(change)?;
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
            store.commit_here(Change {
                dead_delete: ids,
                ..Change::durable()
            })?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
