//! The spool's memory: the first queued events in id order (the window),
//! how many more the store holds (the rest), open alerts, and the
//! idempotency claims. Decisions are made here under the spool's lock by the
//! writer thread ([`super::writer`]): [`crate::alerts`] says what an event
//! means, this module applies that, recording each step so that a failed
//! commit can be undone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;

use super::{AcceptError, AcceptInput, Accepted, now_ms};
use crate::alerts::{self, Decision, Open, OpenChange, Situation};
use crate::dedup::Seen;
use crate::pagerduty::EventAction;
use crate::store::{BodyKind, Change, Counters, OpenRow, Queued, Record, Store, Unqueue};

/// Most bytes of queued events kept encoded in memory, so that sending them
/// needs no store read. A byte budget, not a count: events may be up to
/// 512 KB each.
const WIRE_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Most queued events of one routing key held in memory: the first of its
/// queue by id. The rest stay in the store only and are read in, in id
/// order, as these are sent, so a long outage costs memory only up to this
/// (about 300 bytes each) per routing key with a backlog. A window that is
/// a prefix of its key's queue keeps the send order (an event in memory is
/// older than any of the rest of its alert), and one per key keeps a
/// backlog on one key from holding back the others.
pub(super) const WINDOW: usize = if cfg!(test) { 32 } else { 8_192 };

/// The window is read into once it has room for this many.
const REFILL: usize = WINDOW / 4;

/// Most bytes of stored rows one read into the windows takes (events may be
/// 512 KB each, and the writer, so intake, waits while it reads).
pub(super) const REFILL_BYTES: usize = 4 * 1024 * 1024;

/// An alert, (routing key, dedup key), as its 128-bit digest
/// ([`crate::store::alert_digest`]): 16 bytes instead of both strings, and
/// the key by which the store finds its open row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AlertId(u128);

impl AlertId {
    /// The digest, as the store keys it.
    pub(crate) fn digest(self) -> u128 {
        self.0
    }
}

/// Most open alerts kept in memory (about 40 bytes each) beyond those with
/// an event queued; the others are read from the store when an event needs
/// them.
const OPEN_CACHE: usize = if cfg!(test) { 64 } else { 50_000 };

/// An open alert and the row that stores it.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenEntry {
    pub(super) alert: Open,
    /// Its row id in the store's open-alert table.
    pub(super) row: u64,
    /// When its last trigger was accepted, unix seconds (4 bytes: there
    /// may be very many of these).
    pub(super) opened_s: u32,
}

/// An undelivered event, as delivery sees it. The event itself stays in the
/// store until it is sent, so a long outage costs little memory.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) alert: AlertId,
    pub(super) key: Arc<str>,
    pub(super) dedup_key: Arc<str>,
    pub(super) action: EventAction,
    pub(super) action_name: Arc<str>,
    /// What the body is (which sink sends it).
    pub(super) kind: BodyKind,
    /// The body as sent, kept while the queue holds under
    /// [`WIRE_CACHE_BYTES`] of them; `None` after a restart or in a long backlog.
    pub(super) wire: Option<bytes::Bytes>,
    pub(super) committed: bool,
    /// Superseded by a decision whose commit is under way: never sent.
    pub(super) held: bool,
    pub(super) in_flight: bool,
    pub(super) due: Instant,
    /// Unix ms when accepted (for the delivery latency and the oldest age).
    pub(super) accepted_ms: i64,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    /// The windows: the first queued events of each routing key, up to
    /// [`WINDOW`] each, in id order.
    pub(super) queued: BTreeMap<u64, Entry>,
    /// Routing keys with queued events in the store only (the rest), and
    /// the id their rest starts at.
    rest: HashMap<Arc<str>, u64>,
    /// How many queued events are in the store only.
    rest_len: usize,
    /// Events of the rest decided but not committed yet (the store does not
    /// have them): by alert, (id, whether it is a trigger).
    rest_new: HashMap<AlertId, Vec<(u64, bool)>>,
    /// Events of the rest superseded by a decision not committed yet.
    rest_held: HashSet<u64>,
    /// Queued ids per alert, oldest first: only the first may be sent.
    by_alert: HashMap<AlertId, Vec<u64>>,
    /// Queued events per routing key.
    pub(super) per_key: HashMap<Arc<str>, usize>,
    /// Open alerts in memory: every one with an event queued, and recently
    /// used others up to [`OPEN_CACHE`].
    pub(super) open: HashMap<AlertId, OpenEntry>,
    /// How many alerts are open, in memory or not.
    pub(super) open_count: usize,
    /// Whether `open` holds every open alert (nothing to look up).
    open_complete: bool,
    /// When this process started, unix seconds: rows without an open time
    /// count from it.
    started_s: u32,
    pub(super) next_id: u64,
    pub(super) counters: Counters,
    pub(super) in_flight: usize,
    /// Routing keys and action names, shared by every entry that has them.
    names: HashSet<Arc<str>>,
    /// Bytes of `wire` held by queued entries.
    pub(super) wire_bytes: usize,
    /// Idempotency claims.
    pub(super) seen: Seen,
    /// How long an alert stays open after its last trigger, seconds;
    /// after that it is gone (a resolve finds nothing to resolve).
    pub(super) open_ttl_s: u32,
}

/// An alert whose queued events a decision drops.
#[derive(Debug, Clone, Copy)]
struct Unqueued<'a> {
    alert: AlertId,
    key: &'a Arc<str>,
}

impl Unqueued<'_> {
    /// What the store drops for event `id` of it.
    fn of(self, id: u64) -> Unqueue {
        Unqueue {
            id,
            alert: self.alert.0,
            routing_key: self.key.clone(),
        }
    }
}

/// How to take back one step of a decision whose commit failed.
#[derive(Debug)]
pub(super) enum Undo {
    /// A new queued entry, and whether it is a trigger: remove it (on
    /// success: mark it committed).
    Inserted(u64, bool),
    /// A superseded entry held back: release it (on success: remove it).
    Held(u64),
    /// An open alert as it was, and whether its trigger was in flight then
    /// (it may have been delivered meanwhile).
    Open(AlertId, Option<OpenEntry>, bool),
    /// A new event of the rest, its alert and routing key, and where the
    /// key's rest started before (`None`: it had none).
    Rest(u64, AlertId, Arc<str>, Option<u64>),
    /// An event of the rest held back.
    RestHeld(u64),
    /// Superseded events counted.
    Superseded(u64),
    /// An idempotency claim made.
    Claim(u128),
}

pub(super) fn open_row(key: &str, dedup: &str, open: OpenEntry) -> (u64, OpenRow) {
    let row = OpenRow {
        routing_key: key.to_owned(),
        dedup_key: dedup.to_owned(),
        class: open.alert.class,
        dead: open.alert.dead,
        opened_ms: Some(i64::from(open.opened_s) * 1000),
    };
    (open.row, row)
}

/// Unix seconds of unix ms, as the index keeps them.
pub(super) fn secs(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

impl Index {
    pub(super) fn new(
        next_id: u64,
        counters: Counters,
        seen: Seen,
        open_ttl: std::time::Duration,
        open_count: usize,
    ) -> Self {
        Self {
            next_id,
            counters,
            seen,
            open_ttl_s: u32::try_from(open_ttl.as_secs()).unwrap_or(u32::MAX),
            open_count,
            open_complete: open_count == 0,
            started_s: secs(now_ms()),
            ..Self::default()
        }
    }

    /// An alert's open state: from memory, else from the store (kept in
    /// memory from then on, until [`Index::trim_open`]).
    fn open_of(&mut self, store: &dyn Store, k: AlertId) -> Result<Option<OpenEntry>, crate::store::Error> {
        if let Some(o) = self.open.get(&k) {
            return Ok(Some(*o));
        }
        if self.open_complete {
            return Ok(None);
        }
        Ok(store.open_alert(k.0)?.map(|(row, o)| {
            let entry = OpenEntry {
                alert: Open::restored(o.class, o.dead),
                row,
                opened_s: o.opened_ms.map_or(self.started_s, secs),
            };
            self.open.insert(k, entry);
            entry
        }))
    }

    /// Forgets open alerts beyond [`OPEN_CACHE`] that have nothing queued
    /// (the store keeps them). Called between commits, never while a
    /// decision waits for one.
    pub(super) fn trim_open(&mut self) {
        if self.open.len() <= OPEN_CACHE {
            return;
        }
        let mut excess = self.open.len() - OPEN_CACHE * 3 / 4;
        let by_alert = &self.by_alert;
        self.open.retain(|k, _| {
            if excess > 0 && !by_alert.contains_key(k) {
                excess -= 1;
                false
            } else {
                true
            }
        });
        self.open_complete = false;
    }

    /// Open rows the store found past their time (see
    /// [`crate::store::Store::expired_open`]), less those `deleted` already
    /// in this round: forgets them; returns the rows to delete.
    pub(super) fn expire_stored(&mut self, found: &[(u64, u128)], deleted: &HashSet<u64>) -> Vec<u64> {
        let mut rows = Vec::new();
        for &(row, digest) in found {
            if deleted.contains(&row) {
                continue;
            }
            let k = AlertId(digest);
            match self.open.get(&k) {
                Some(o) if o.row != row => continue,
                Some(_) => {
                    self.open.remove(&k);
                }
                None => {}
            }
            self.open_count = self.open_count.saturating_sub(1);
            rows.push(row);
        }
        rows
    }

    /// When rows without an open time count from, unix ms.
    pub(super) fn started_ms(&self) -> i64 {
        i64::from(self.started_s) * 1000
    }

    /// Whether an open alert's time is up.
    fn expired(&self, o: &OpenEntry, now_s: u32) -> bool {
        now_s.saturating_sub(o.opened_s) >= self.open_ttl_s
    }

    /// Forgets the open alerts whose time is up; returns their rows, to be
    /// deleted from the store.
    pub(super) fn expire_open(&mut self, now_s: u32) -> Vec<u64> {
        let ttl = self.open_ttl_s;
        let mut rows = Vec::new();
        self.open.retain(|_, o| {
            let keep = now_s.saturating_sub(o.opened_s) < ttl;
            if !keep {
                rows.push(o.row);
            }
            keep
        });
        self.open_count = self.open_count.saturating_sub(rows.len());
        rows
    }

    pub(super) fn alert_id(&self, routing_key: &str, dedup_key: &str) -> AlertId {
        AlertId(crate::store::alert_digest(routing_key, dedup_key))
    }

    /// Queued events, in memory or not.
    pub(super) fn queued_len(&self) -> usize {
        self.queued.len() + self.rest_len
    }

    /// Routing keys whose window has room for a read of their rest, with
    /// where it starts and how many rows fit; none while anything of the
    /// rest waits for a commit.
    pub(super) fn refills(&self) -> Vec<(Arc<str>, u64, usize)> {
        if !self.rest_new.is_empty() || !self.rest_held.is_empty() {
            return Vec::new();
        }
        self.rest
            .iter()
            .filter_map(|(key, &from)| {
                let room = WINDOW.saturating_sub(self.per_key.get(key).copied().unwrap_or(0));
                (room >= REFILL).then(|| (key.clone(), from, room))
            })
            .collect()
    }

    /// Takes a slice of a routing key's rest (see [`Index::refills`]) into
    /// its window; returns how many events it took.
    pub(super) fn page_in(&mut self, key: &Arc<str>, page: &crate::store::Page, now: Instant) -> usize {
        for r in &page.events {
            self.restore(r, now);
        }
        self.rest_len = self
            .rest_len
            .saturating_sub(page.events.len() + page.damaged.len());
        match page.next {
            Some(next) => {
                self.rest.insert(key.clone(), next);
            }
            None => {
                self.rest.remove(key);
            }
        }
        if self.rest.is_empty() {
            self.rest_len = 0;
        }
        page.events.len()
    }

    /// Sets what the store holds beyond the windows at start.
    pub(super) fn set_rest(&mut self, rest: &[(String, u64)], len: usize) {
        for (key, from) in rest {
            let key = self.intern(key);
            self.rest.insert(key, *from);
        }
        self.rest_len = if self.rest.is_empty() { 0 } else { len };
    }

    /// Queued (not superseded) triggers of an alert of `key` among the rest.
    fn rest_triggers(
        &self,
        store: &dyn Store,
        key: &str,
        k: AlertId,
    ) -> Result<Vec<u64>, crate::store::Error> {
        let Some(&from) = self.rest.get(key) else {
            return Ok(Vec::new());
        };
        let stored = store.queued_of(k.0, from)?;
        let new = self.rest_new.get(&k).into_iter().flatten();
        Ok(stored
            .iter()
            .chain(new)
            .filter(|(id, trigger)| *trigger && !self.rest_held.contains(id))
            .map(|(id, _)| *id)
            .collect())
    }

    /// Queues a new event: in its routing key's window while that has room
    /// and nothing of the key is in the store only, else in the rest (the
    /// store only), where it is filed by its alert in `change` too, since
    /// only there is it looked up by alert ([`Index::rest_triggers`]).
    fn enqueue(&mut self, id: u64, entry: Entry, change: &mut Change, undo: &mut Vec<Undo>) {
        let in_memory = self.per_key.get(&entry.key).copied().unwrap_or(0);
        if !self.rest.contains_key(&entry.key) && in_memory < WINDOW {
            let trigger = entry.action == EventAction::Trigger;
            self.insert(id, entry);
            undo.push(Undo::Inserted(id, trigger));
            return;
        }
        change.by_alert.push(id);
        let before = *self.rest.entry(entry.key.clone()).or_insert(id);
        self.rest_len += 1;
        self.rest_new
            .entry(entry.alert)
            .or_default()
            .push((id, entry.action == EventAction::Trigger));
        undo.push(Undo::Rest(
            id,
            entry.alert,
            entry.key,
            (before != id).then_some(before),
        ));
    }

    /// Forgets a new event of the rest from the not-yet-committed list.
    fn rest_settled(&mut self, id: u64, k: AlertId) {
        if let Some(ids) = self.rest_new.get_mut(&k) {
            ids.retain(|(i, _)| *i != id);
            if ids.is_empty() {
                self.rest_new.remove(&k);
            }
        }
    }

    /// The shared copy of a routing key or action name.
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(shared.clone());
        shared
    }

    /// Queues an entry read back from the store (at start, or from the
    /// rest), `due` now. It was never tried in this run (an event leaves
    /// memory only once settled), so a back-off it stored was learned by an
    /// earlier run about a PagerDuty that may have recovered since; this
    /// run's pacing and outage probe keep a still-failing PagerDuty from
    /// being flooded, one send per routing key until one succeeds.
    pub(super) fn restore(&mut self, r: &Queued, due: Instant) {
        let key = self.intern(&r.routing_key);
        let action_name = self.intern(&r.action);
        let alert = self.alert_id(&key, &r.dedup_key);
        self.insert(
            r.id,
            Entry {
                alert,
                key,
                dedup_key: Arc::from(r.dedup_key.as_str()),
                action: r.event_action,
                action_name,
                kind: r.body_kind,
                wire: None,
                committed: true,
                held: false,
                in_flight: false,
                due,
                accepted_ms: r.accepted_ms,
            },
        );
    }

    fn insert(&mut self, id: u64, entry: Entry) {
        self.by_alert.entry(entry.alert).or_default().push(id);
        *self.per_key.entry(entry.key.clone()).or_default() += 1;
        self.wire_bytes += entry.wire.as_ref().map_or(0, bytes::Bytes::len);
        self.queued.insert(id, entry);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Entry> {
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

    /// Whether `id` is the oldest queued event of its alert.
    pub(super) fn is_first_of_alert(&self, id: u64, e: &Entry) -> bool {
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
    fn set_open(&mut self, k: AlertId, open: Option<OpenEntry>, undo: &mut Vec<Undo>) {
        let in_flight = self.trigger_in_flight(&k);
        let before = match open {
            Some(o) => self.open.insert(k, o),
            None => self.open.remove(&k),
        };
        self.open_count =
            (self.open_count + usize::from(open.is_some())).saturating_sub(usize::from(before.is_some()));
        undo.push(Undo::Open(k, before, in_flight));
    }

    /// Holds back queued triggers (`ids`, from [`Index::queued_triggers`]):
    /// superseded, never sent.
    fn hold(&mut self, alert: Unqueued<'_>, ids: Vec<u64>, change: &mut Change, undo: &mut Vec<Undo>) {
        for id in ids {
            if let Some(e) = self.queued.get_mut(&id) {
                e.held = true;
            }
            change.delete.push(alert.of(id));
            undo.push(Undo::Held(id));
        }
    }

    /// Holds back triggers of the rest ([`Index::rest_triggers`]).
    fn hold_rest(&mut self, alert: Unqueued<'_>, ids: Vec<u64>, change: &mut Change, undo: &mut Vec<Undo>) {
        for id in ids {
            self.rest_held.insert(id);
            self.rest_len = self.rest_len.saturating_sub(1);
            change.delete.push(alert.of(id));
            undo.push(Undo::RestHeld(id));
        }
    }

    /// Decides what one webhook's event means given what is open and
    /// queued ([`alerts::decide`]), applies that to the index (recording how
    /// to undo it) and adds what must be written to `change`.
    pub(super) fn decide_accept(
        &mut self,
        store: &dyn Store,
        capacity: usize,
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
        let key = self.intern(&input.record.routing_key);
        let k = self.alert_id(&key, &input.record.dedup_key);
        let now_s = secs(now);
        // An alert past --open-alert-ttl is not open any more, though its
        // row may not be pruned yet.
        let stored = self.open_of(store, k)?;
        let current = stored.filter(|o| !self.expired(o, now_s));
        let queued = self.queued_triggers(&k);
        let rest = self.rest_triggers(store, &key, k)?;
        let situation = Situation {
            open: current.map(|o| o.alert),
            queued_triggers: (queued.len() + rest.len()) as u64,
            trigger_in_flight: self.trigger_in_flight(&k),
            full: self.queued_len() >= capacity,
        };
        let plan = match alerts::decide(input.disposition, &situation) {
            Decision::Apply(plan) => plan,
            Decision::Ignore(reason) => return Ok(Accepted::Ignored { reason }),
            Decision::Full => return Err(AcceptError::Full),
        };
        // A new open row takes the id this event gets (or would get).
        let row = self.next_id;
        let mut open_change = plan.open;
        // A repeated trigger keeps its row, but the TTL counts from the
        // last trigger: once half of it has passed, the row is written
        // again with the new time (at most one write per half TTL).
        if let (OpenChange::Keep, Some(o), crate::translate::Disposition::Trigger(_)) =
            (open_change, current, input.disposition)
            && now_s.saturating_sub(o.opened_s) >= self.open_ttl_s / 2
        {
            open_change = OpenChange::Set(o.alert);
        }
        match open_change {
            OpenChange::Keep => {}
            OpenChange::Set(alert) => {
                if let Some(old) = stored {
                    change.open_delete.push(old.row);
                }
                let entry = OpenEntry {
                    alert,
                    row,
                    opened_s: now_s,
                };
                self.set_open(k, Some(entry), undo);
                change
                    .open_put
                    .push(open_row(&key, &input.record.dedup_key, entry));
            }
            OpenChange::Close => {
                if let Some(old) = stored {
                    change.open_delete.push(old.row);
                }
                self.set_open(k, None, undo);
            }
        }
        if plan.supersede_queued {
            let alert = Unqueued { alert: k, key: &key };
            self.hold(alert, queued, change, undo);
            self.hold_rest(alert, rest, change, undo);
        }
        if plan.superseded > 0 {
            change.counters.superseded += plan.superseded;
            self.counters.superseded += plan.superseded;
            undo.push(Undo::Superseded(plan.superseded));
            tracing::info!(dedup_key = %crate::logging::escape(&input.record.dedup_key),
                superseded = plan.superseded, "queued trigger made moot before it was sent");
        }
        if let Some(claim) = input.claim {
            self.seen.insert(claim, now_u);
            change.seen_put.push((now_u, claim));
            undo.push(Undo::Claim(claim));
        }
        if !plan.send {
            return Ok(Accepted::Superseded);
        }
        // Not taken back if the commit fails: the event may be in flight
        // under this id already (see `Spool::take_due`), and its settlement
        // must not meet a later event under the same id.
        let id = self.next_id;
        self.next_id += 1;
        let wire = (self.wire_bytes + input.wire.len() <= WIRE_CACHE_BYTES).then_some(input.wire);
        let action_name = self.intern(&input.record.action);
        let mut record = input.record;
        record.id = id;
        record.accepted_ms = now;
        record.next_attempt_ms = now;
        self.enqueue(
            id,
            Entry {
                alert: k,
                key,
                dedup_key: input.dedup,
                action: record.event_action,
                action_name,
                kind: record.body_kind,
                wire,
                committed: false,
                held: false,
                in_flight: false,
                due: Instant::now(),
                accepted_ms: now,
            },
            change,
            undo,
        );
        change.put.push(record);
        Ok(Accepted::Queued { id })
    }

    /// Decides how a dead letter goes back in the queue, as a new event
    /// sent now: a trigger opens its alert again.
    pub(super) fn decide_requeue(
        &mut self,
        store: &dyn Store,
        mut record: Record,
        change: &mut Change,
        undo: &mut Vec<Undo>,
    ) -> Result<u64, crate::store::Error> {
        let key = self.intern(&record.routing_key);
        let k = self.alert_id(&key, &record.dedup_key);
        // Read before anything changes: a failed read leaves nothing to undo.
        let stored = self.open_of(store, k)?;
        let new_id = self.next_id;
        self.next_id += 1;
        if let (EventAction::Trigger, Some(class)) = (record.event_action, record.class) {
            let entry = OpenEntry {
                alert: Open::new(class),
                row: new_id,
                opened_s: secs(now_ms()),
            };
            if let Some(old) = stored {
                change.open_delete.push(old.row);
            }
            self.set_open(k, Some(entry), undo);
            change.open_put.push(open_row(&key, &record.dedup_key, entry));
        }
        let action_name = self.intern(&record.action);
        self.enqueue(
            new_id,
            Entry {
                alert: k,
                key,
                dedup_key: Arc::from(record.dedup_key.as_str()),
                action: record.event_action,
                action_name,
                kind: record.body_kind,
                wire: None,
                committed: false,
                held: false,
                in_flight: false,
                due: Instant::now(),
                accepted_ms: now_ms(),
            },
            change,
            undo,
        );
        change.dead_delete.push(record.id);
        record.requeue(new_id, now_ms());
        change.put.push(record);
        Ok(new_id)
    }

    /// The commit of a decision succeeded: its new entries may be sent,
    /// what it superseded is gone.
    pub(super) fn commit(&mut self, undo: &[Undo]) {
        for step in undo {
            match step {
                Undo::Inserted(id, _) => {
                    if let Some(e) = self.queued.get_mut(id) {
                        e.committed = true;
                    }
                }
                Undo::Held(id) => {
                    self.remove(*id);
                }
                Undo::Rest(id, k, _, _) => self.rest_settled(*id, *k),
                Undo::RestHeld(id) => {
                    self.rest_held.remove(id);
                }
                _ => {}
            }
        }
    }

    /// The commit of a decision failed: put the index back as it was.
    /// Adds to `sent` its new events that were sent, or being sent, while
    /// the commit ran (PagerDuty may have them), and to `settled` those of
    /// them already delivered.
    ///
    /// A new alert whose trigger was sent stays open, counted as seen by
    /// PagerDuty (the send may still be under way, and its entry is gone),
    /// so that its recovery still resolves what PagerDuty may have opened;
    /// returns whether that happened, and the decision's open row must then
    /// be written once the file takes writes again.
    #[must_use]
    pub(super) fn undo(&mut self, undo: Vec<Undo>, sent: &mut usize, settled: &mut Vec<u64>) -> bool {
        let mut trigger_sent = false;
        let mut kept_open = false;
        // In reverse: a decision opens its alert before it queues the
        // trigger, so the trigger's step, which tells whether it was sent,
        // comes before the alert's.
        for step in undo.into_iter().rev() {
            match step {
                Undo::Inserted(id, trigger) => {
                    let was_sent = match self.remove(id) {
                        None => {
                            settled.push(id);
                            true
                        }
                        Some(e) => e.in_flight,
                    };
                    if was_sent {
                        *sent += 1;
                        trigger_sent |= trigger;
                    }
                }
                Undo::Open(k, None, _) if trigger_sent => {
                    if let Some(open) = self.open.get_mut(&k) {
                        open.alert = open.alert.delivered();
                    }
                    kept_open = true;
                }
                Undo::Held(id) => {
                    if let Some(e) = self.queued.get_mut(&id) {
                        e.held = false;
                    }
                }
                Undo::Open(k, before, was_in_flight) => {
                    let now_open = usize::from(self.open.contains_key(&k));
                    self.open_count =
                        (self.open_count + usize::from(before.is_some())).saturating_sub(now_open);
                    match before {
                        Some(mut open) => {
                            // A trigger that was in flight may have reached
                            // PagerDuty since: count it as seen (an extra
                            // resolve is harmless, a missing one is not).
                            if was_in_flight || self.open.get(&k).is_some_and(|o| o.alert.delivered) {
                                open.alert = open.alert.delivered();
                            }
                            self.open.insert(k, open);
                        }
                        None => {
                            self.open.remove(&k);
                        }
                    }
                }
                Undo::Rest(id, k, key, before) => {
                    self.rest_settled(id, k);
                    self.rest_len = self.rest_len.saturating_sub(1);
                    match before {
                        Some(from) => {
                            self.rest.insert(key, from);
                        }
                        None => {
                            self.rest.remove(&key);
                        }
                    }
                }
                Undo::RestHeld(id) => {
                    self.rest_held.remove(&id);
                    self.rest_len += 1;
                }
                Undo::Superseded(n) => self.counters.superseded -= n,
                Undo::Claim(c) => self.seen.remove(c),
            }
        }
        kept_open
    }

    /// A routing key's sends succeed again: every event of it waiting is due
    /// now. Returns how many wait.
    pub(super) fn make_due(&mut self, key: &str, now: Instant) -> usize {
        let mut n = 0;
        for e in self
            .queued
            .values_mut()
            .filter(|e| &*e.key == key && !e.in_flight)
        {
            if e.due > now {
                e.due = now;
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_alert_costs_sixteen_bytes_plus_its_digest() {
        // There may be a million of these: the open time sits in padding.
        assert_eq!(std::mem::size_of::<OpenEntry>(), 16);
        assert_eq!(std::mem::size_of::<AlertId>(), 16);
    }

    #[test]
    fn expiry_counts_whole_seconds_from_the_last_trigger() {
        let mut idx = Index::new(
            1,
            Counters::default(),
            Seen::default(),
            std::time::Duration::from_secs(10),
            2,
        );
        let entry = |row, opened_s| OpenEntry {
            alert: Open::new(crate::translate::AlertClass::Failure),
            row,
            opened_s,
        };
        idx.open.insert(AlertId(1), entry(7, 100));
        idx.open.insert(AlertId(2), entry(8, 105));
        assert!(idx.expire_open(109).is_empty());
        assert_eq!(idx.expire_open(110), vec![7]);
        assert_eq!(idx.open.len(), 1);
        assert_eq!(idx.open_count, 1);
        assert!(!idx.expired(&entry(8, 105), 114));
        assert!(idx.expired(&entry(8, 105), 115));
    }
}
